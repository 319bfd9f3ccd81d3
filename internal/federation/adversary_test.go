package federation

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

func weights(vs ...float32) *model.Weights {
	return &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{len(vs)}, Data: vs}}}
}

// TestAttack checks each attack on a hand-computed update: the global
// model is [1, 2, 3], honest training moved it to [2, 4, 0] (delta
// [1, 2, −3]) on 100 samples.
func TestAttack(t *testing.T) {
	tests := []struct {
		name    string
		attacks []job.Attack
		want    []float32
		samples int64
	}{
		{"scale", []job.Attack{{Kind: job.AttackScale, Factor: 3}}, []float32{6, 12, 0}, 100},
		{"scale -1", []job.Attack{{Kind: job.AttackScale, Factor: -1}}, []float32{-2, -4, 0}, 100},
		{"sign_flip", []job.Attack{{Kind: job.AttackSignFlip}}, []float32{0, 0, 6}, 100},
		{"claim_samples", []job.Attack{{Kind: job.AttackClaimSamples, Samples: 1 << 40}}, []float32{2, 4, 0}, 1 << 40},
		{"claim and negate", []job.Attack{{Kind: job.AttackClaimSamples, Samples: 1 << 40}, {Kind: job.AttackScale, Factor: -1}}, []float32{-2, -4, 0}, 1 << 40},
		{"scale twice over", []job.Attack{{Kind: job.AttackSignFlip}, {Kind: job.AttackScale, Factor: 0.5}}, []float32{0, 0, 3}, 100},
		{"label_flip only", []job.Attack{{Kind: job.AttackLabelFlip}}, []float32{2, 4, 0}, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAttacker(7, job.Adversary{Site: "site-4", Attacks: tt.attacks})
			global, updated := weights(1, 2, 3), weights(2, 4, 0)
			got, res, err := a.Attack(global, updated, train.TrainResult{NumSamples: 100, Loss: 0.5}, 1)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.Tensors[0].Data); diff != "" {
				t.Errorf("Attack() weights (-want +got):\n%s", diff)
			}
			if res.NumSamples != tt.samples || res.Loss != 0.5 {
				t.Errorf("Attack() result = %+v, want %d samples and the loss kept", res, tt.samples)
			}
			if diff := cmp.Diff([]float32{2, 4, 0}, updated.Tensors[0].Data); diff != "" {
				t.Errorf("Attack() modified the trained update (-want +got):\n%s", diff)
			}
		})
	}
	a := NewAttacker(7, job.Adversary{Site: "site-4", Attacks: []job.Attack{{Kind: job.AttackSignFlip}}})
	if _, _, err := a.Attack(weights(1, 2), weights(1, 2, 3), train.TrainResult{}, 1); err == nil {
		t.Error("Attack(incompatible weights) = nil error, want one")
	}
}

// TestAttackNoise checks that noise replaces the update by global plus
// Gaussian noise of the factor's deviation, drawn the same for the same
// job, site and task and apart otherwise.
func TestAttackNoise(t *testing.T) {
	const n, sd = 20000, 0.5
	global, updated := model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{n}, Data: make([]float32, n)}}}, (*model.Weights)(nil)
	for i := range global.Tensors[0].Data {
		global.Tensors[0].Data[i] = 3
	}
	updated = global.Clone()
	updated.Tensors[0].Data[0] = 1000 // honest training is thrown away
	noise := func(seed int64, site string, taskSeed int64) []float32 {
		a := NewAttacker(seed, job.Adversary{Site: site, Attacks: []job.Attack{{Kind: job.AttackNoise, Factor: sd}}})
		w, _, err := a.Attack(&global, updated, train.TrainResult{}, taskSeed)
		if err != nil {
			t.Fatal(err)
		}
		return w.Tensors[0].Data
	}
	got := noise(1, "site-4", 10)
	var sum, sq float64
	for _, v := range got {
		d := float64(v) - 3
		sum += d
		sq += d * d
	}
	mean, std := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n))
	if math.Abs(mean) > 0.02 || math.Abs(std-sd) > 0.02 {
		t.Errorf("noise around the global model: mean %.4f, sd %.4f; want about 0 and %g", mean, std, sd)
	}
	if !slicesEqual(got, noise(1, "site-4", 10)) {
		t.Error("noise differs between two runs of the same job, site and task")
	}
	for _, other := range [][]float32{noise(2, "site-4", 10), noise(1, "site-3", 10), noise(1, "site-4", 11)} {
		if slicesEqual(got, other) {
			t.Error("noise is the same for another job seed, site or task")
		}
	}
}

func slicesEqual(a, b []float32) bool { return cmp.Equal(a, b) }

// fakeTrainer trains by adding 1 to every weight and counting the labels.
type fakeTrainer struct {
	train.Trainer
	seen *data.Dataset
}

func (f *fakeTrainer) Train(_ context.Context, w *model.Weights, ds *data.Dataset, _ train.TrainConfig) (*model.Weights, train.TrainResult, error) {
	f.seen = ds
	out := w.Clone()
	for i := range out.Tensors[0].Data {
		out.Tensors[0].Data[i]++
	}
	return out, train.TrainResult{NumSamples: int64(ds.N)}, nil
}

type fakeFactory struct{ tr *fakeTrainer }

func (f fakeFactory) Trainer(train.Config) (train.Trainer, error) { return f.tr, nil }

// TestAttackerWraps checks the wrappers a simulated adversary's agent gets:
// label_flip flips the training labels of federated training tasks only,
// and the trainer's update comes back attacked.
func TestAttackerWraps(t *testing.T) {
	trainSet := &data.Dataset{Name: "p", N: 4, Features: 1, X: []float32{0, 1, 2, 3}, Y: []uint8{0, 1, 2, 9}, Classes: 10}
	testSet := &data.Dataset{Name: "t", N: 1, Features: 1, X: []float32{0}, Y: []uint8{3}, Classes: 10}
	a := NewAttacker(1, job.Adversary{Site: "site-4", Attacks: []job.Attack{
		{Kind: job.AttackLabelFlip}, {Kind: job.AttackClaimSamples, Samples: 1 << 40}, {Kind: job.AttackScale, Factor: -2},
	}})
	if got, want := a.String(), "label_flip, claim_samples 1099511627776, scale -2"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	src := a.Data(siteSource{train: trainSet, test: testSet})
	ctx := context.Background()
	tr, te, err := src.Load(ctx, "fashion-mnist", pb.TaskKind_TASK_KIND_TRAIN)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint8{9, 8, 7, 0}, tr.Y); diff != "" {
		t.Errorf("training labels (-want +got):\n%s", diff)
	}
	if te != testSet || trainSet.Y[3] != 9 {
		t.Error("label_flip changed the test split or the site's own dataset")
	}
	if again, _, _ := src.Load(ctx, "fashion-mnist", pb.TaskKind_TASK_KIND_TRAIN); again != tr {
		t.Error("label_flip copied the dataset again for the next task; want it made once")
	}
	if ev, _, _ := src.Load(ctx, "fashion-mnist", pb.TaskKind_TASK_KIND_EVALUATE); ev != trainSet {
		t.Error("label_flip changed an evaluate task's data")
	}

	fake := &fakeTrainer{}
	trainer, err := a.Trainers(fakeFactory{fake}).Trainer(train.Config{})
	if err != nil {
		t.Fatal(err)
	}
	w, res, err := trainer.Train(ctx, weights(1, 2), tr, train.TrainConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// Honest: [2, 3]; scaled by −2: [−4, −6].
	if diff := cmp.Diff([]float32{-4, -6}, w.Tensors[0].Data); diff != "" || res.NumSamples != 1<<40 || fake.seen != tr {
		t.Errorf("Train() = %v, %d samples (-want +got weights:\n%s); want the attacked update on the flipped data", w.Tensors[0].Data, res.NumSamples, diff)
	}
	if _, ok := trainer.(interface{ StopWorker(string) }); !ok {
		t.Error("the attacking trainer hides StopWorker from the agent")
	}

	honest := NewAttacker(1, job.Adversary{Site: "site-4", Attacks: []job.Attack{{Kind: job.AttackLabelFlip}}})
	if f := (fakeFactory{fake}); honest.Trainers(f) != f {
		t.Error("Trainers() wrapped the factory of a label_flip-only adversary; want it as is")
	}
}

// adversaryJob is a one-round job on the shipped subset with site-4
// claiming 2^40 samples and sending its delta flipped, and no defences,
// so that what the coordinator receives is the attack as sent.
const adversaryJob = `
name: adversary
seed: 3
tracking: {experiment: adversary}
data: {dataset: fashion-mnist, path: %q, partition: {kind: iid}}
model: {kind: logreg}
sites:
  count: 4
  adversaries:
    - {site: site-4, attacks: [{kind: claim_samples, samples: 1099511627776}, {kind: scale, factor: -1}]}
    - {site: site-3, attacks: [label_flip]}
rounds: 1
train: {epochs: 1, batch_size: 64, lr: 0.05}
arms:
  - {name: fedavg, strategy: {name: fedavg, max_weight_fraction: 1, clip: off}}
deadline: {round: 2m}
`

// TestRunAdversary runs a job with simulated adversaries through `cohort
// run`: the coordinator records site-4's claimed sample count, and the
// site says at start that it is an adversary.
func TestRunAdversary(t *testing.T) {
	db := filepath.Join(t.TempDir(), "cohort.db")
	var progress, logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src := []byte(strings.Replace(adversaryJob, "%q", `"`+subset+`"`, 1))
	res, err := Run(ctx, src, Options{DBPath: db, Progress: &progress, Logger: log, Version: "test"})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, want := range []string{
		`msg=simulated_adversary component=site site=site-4 attacks="claim_samples 1099511627776, scale -1"`,
		`msg=simulated_adversary component=site site=site-3 attacks=label_flip`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q; got:\n%.2000s", want, logs.String())
		}
	}

	store, err := tracking.OpenSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	arms, err := store.ChildRuns(ctx, res.Job.GetTrackingRunId())
	if err != nil || len(arms) != 1 {
		t.Fatalf("ChildRuns(job) = %d runs, %v; want the fedavg arm", len(arms), err)
	}
	sites, err := store.ChildRuns(ctx, arms[0].Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string]float64{}
	for _, s := range sites {
		name, _ := s.Data.Tag(tracking.TagSite)
		if m, ok := s.Data.Metric(tracking.MetricNumSamples); ok {
			samples[name] = m.Value
		}
	}
	if got, want := samples["site-4"], float64(1<<40); got != want {
		t.Errorf("site-4 num_samples = %v, want the claimed %v", got, want)
	}
	for _, name := range []string{"site-1", "site-2", "site-3"} {
		// The subset's 6,000 training images, less 10% held out, in 4.
		if got := samples[name]; got < 1000 || got > 2000 {
			t.Errorf("%s num_samples = %v, want its partition's size", name, got)
		}
	}
}
