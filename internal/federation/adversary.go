package federation

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

// Attacker is what a simulated adversarial site does (the job's
// sites.adversaries): it trains like an honest site, on labels flipped for
// label_flip, and then attacks the update it sends. `cohort run` wraps such
// a site's data source with [Attacker.Data] and its trainers with
// [Attacker.Trainers]; a deployment never does, as its sites are real.
//
// The attacks on a trained update are applied in the order the job lists
// them, each to the result of the one before:
//   - scale (factor k): global + k·(update − global);
//   - sign_flip: scale by −1;
//   - noise (factor s): global + N(0, s²) on every parameter, from a
//     generator seeded by the job's seed, the site's name and the task's
//     training seed, so that a rerun sends the same noise;
//   - claim_samples (samples n): the update reports n samples, whatever
//     its partition holds.
//
// An Attacker is safe for concurrent use.
type Attacker struct {
	site    string
	seed    int64
	attacks []job.Attack

	mu      sync.Mutex
	flipped map[*data.Dataset]*data.Dataset // label_flip's copies, by original
}

// NewAttacker returns the attacker adv describes, for a job seeded seed.
func NewAttacker(seed int64, adv job.Adversary) *Attacker {
	return &Attacker{site: adv.Site, seed: seed, attacks: adv.Attacks}
}

// Attackers returns the attackers of spec's simulated adversaries, by site
// name; none for a job without adversaries.
func Attackers(spec *job.Spec) map[string]*Attacker {
	out := make(map[string]*Attacker, len(spec.Sites.Adversaries))
	for _, adv := range spec.Sites.Adversaries {
		out[adv.Site] = NewAttacker(spec.Seed, adv)
	}
	return out
}

// Site returns the attacking site's name.
func (a *Attacker) Site() string { return a.site }

// String lists the attacks as the job wrote them, e.g.
// "claim_samples 1099511627776, scale -1".
func (a *Attacker) String() string {
	parts := make([]string, len(a.attacks))
	for i, at := range a.attacks {
		switch at.Kind {
		case job.AttackScale, job.AttackNoise:
			parts[i] = at.Kind + " " + strconv.FormatFloat(at.Factor, 'g', -1, 64)
		case job.AttackClaimSamples:
			parts[i] = at.Kind + " " + strconv.FormatInt(at.Samples, 10)
		default:
			parts[i] = at.Kind
		}
	}
	return strings.Join(parts, ", ")
}

func (a *Attacker) has(kind string) bool {
	for _, at := range a.attacks {
		if at.Kind == kind {
			return true
		}
	}
	return false
}

// Data wraps src so that, with label_flip, a federated training task gets a
// copy of the site's training set with every label y mapped to
// classes − 1 − y; the test split, and every other task's data, are the
// site's own. Without label_flip it returns src.
func (a *Attacker) Data(src client.DataSource) client.DataSource {
	if !a.has(job.AttackLabelFlip) {
		return src
	}
	return flipSource{src: src, a: a}
}

type flipSource struct {
	src client.DataSource
	a   *Attacker
}

func (f flipSource) Load(ctx context.Context, dataset string, kind pb.TaskKind) (*data.Dataset, *data.Dataset, error) {
	trainSet, testSet, err := f.src.Load(ctx, dataset, kind)
	if err != nil || kind != pb.TaskKind_TASK_KIND_TRAIN || trainSet == nil {
		return trainSet, testSet, err
	}
	return f.a.flip(trainSet), testSet, nil
}

// flip returns d with its labels flipped, made once per dataset (the agent
// hashes each dataset it trains on once, by pointer).
func (a *Attacker) flip(d *data.Dataset) *data.Dataset {
	a.mu.Lock()
	defer a.mu.Unlock()
	if f, ok := a.flipped[d]; ok {
		return f
	}
	f := FlipLabels(d)
	if a.flipped == nil {
		a.flipped = make(map[*data.Dataset]*data.Dataset)
	}
	a.flipped[d] = f
	return f
}

// FlipLabels returns a copy of d with every label y replaced by
// Classes − 1 − y; the features are shared with d, which is not modified.
func FlipLabels(d *data.Dataset) *data.Dataset {
	f := *d
	f.Y = make([]uint8, len(d.Y))
	for i, y := range d.Y {
		f.Y[i] = uint8(d.Classes - 1 - int(y))
	}
	return &f
}

// Trainers wraps tf so that every trainer it returns attacks what it
// trains. Without an attack on the update it returns tf.
func (a *Attacker) Trainers(tf client.TrainerFactory) client.TrainerFactory {
	for _, at := range a.attacks {
		if at.Kind != job.AttackLabelFlip {
			return attackFactory{tf: tf, a: a}
		}
	}
	return tf
}

type attackFactory struct {
	tf client.TrainerFactory
	a  *Attacker
}

func (f attackFactory) Trainer(cfg train.Config) (train.Trainer, error) {
	tr, err := f.tf.Trainer(cfg)
	if err != nil {
		return nil, err
	}
	return attackTrainer{Trainer: tr, a: f.a}, nil
}

// attackTrainer is a trainer whose Train attacks its result. It passes
// the optional methods the site agent looks for (InitContext, StopWorker)
// through to the trainer it wraps.
type attackTrainer struct {
	train.Trainer
	a *Attacker
}

var _ train.Trainer = attackTrainer{}

func (t attackTrainer) Train(ctx context.Context, w *model.Weights, ds *data.Dataset, cfg train.TrainConfig) (*model.Weights, train.TrainResult, error) {
	updated, res, err := t.Trainer.Train(ctx, w, ds, cfg)
	if err != nil {
		return updated, res, err
	}
	return t.a.Attack(w, updated, res, cfg.Seed)
}

func (t attackTrainer) InitContext(ctx context.Context, seed int64) (*model.Weights, error) {
	if ic, ok := t.Trainer.(interface {
		InitContext(context.Context, int64) (*model.Weights, error)
	}); ok {
		return ic.InitContext(ctx, seed)
	}
	return t.Trainer.Init(seed)
}

func (t attackTrainer) StopWorker(key string) {
	if s, ok := t.Trainer.(interface{ StopWorker(key string) }); ok {
		s.StopWorker(key)
	}
}

// Attack applies the attacker's attacks to updated, trained from global
// with training seed seed, and to its result; neither global nor updated is
// modified. A factor so large that the update overflows float32 leaves
// non-finite weights, which the site refuses to send.
func (a *Attacker) Attack(global, updated *model.Weights, res train.TrainResult, seed int64) (*model.Weights, train.TrainResult, error) {
	if err := global.Compatible(updated); err != nil {
		return nil, res, fmt.Errorf("attacking the update of %s: %w", a.site, err)
	}
	out := updated.Clone()
	for _, at := range a.attacks {
		switch at.Kind {
		case job.AttackScale:
			out.Scale(float32(at.Factor))
		case job.AttackSignFlip:
			scale(global, out, -1)
		case job.AttackNoise:
			rng := rand.New(rand.NewPCG(uint64(a.seed), a.noiseStream(seed)))
			for i := range out.Tensors {
				g, o := global.Tensors[i].Data, out.Tensors[i].Data
				for j := range o {
					o[j] = float32(float64(g[j]) + at.Factor*rng.NormFloat64())
				}
			}
		case job.AttackClaimSamples:
			res.NumSamples = at.Samples
		}
	}
	return out, res, nil
}

// noiseStream is the noise generator's stream for a task: the site's name
// and the task's training seed, so that sites and rounds draw apart.
func (a *Attacker) noiseStream(seed int64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(a.site))
	return h.Sum64() ^ uint64(seed)*0x9e3779b97f4a7c15
}

// scale sets w to global + k·(w − global).
func scale(global, w *model.Weights, k float64) {
	for i := range w.Tensors {
		g, o := global.Tensors[i].Data, w.Tensors[i].Data
		for j := range o {
			o[j] = float32(float64(g[j]) + k*(float64(o[j])-float64(g[j])))
		}
	}
}
