package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os/user"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// An arm's final global model, when the job has register:, is logged on the
// arm run as an MLflow model — the folder model/ holding MLmodel and
// model.safetensors — and registered as a version of the job's registered
// model, tagged with what it was trained on and how it did.

// ModelArtifactPath is the folder of an arm run's artifacts that holds its
// logged model.
const ModelArtifactPath = "model"

// Files of a logged model.
const (
	MLmodelFile      = "MLmodel"
	ModelWeightsFile = "model.safetensors"
)

// Tags of registered model versions (and, TagModelVersion, of arm runs).
const (
	// TagModelVersion, on an arm run, is "name/version" of the version its
	// final model was registered as; a resumed arm registers nothing twice.
	TagModelVersion      = "cohort.model_version"
	TagVersionArm        = "cohort.arm"
	TagVersionStrategy   = "cohort.strategy"
	TagVersionAccuracy   = "cohort.final_accuracy"
	TagVersionEnergy     = "cohort.energy_joules"
	TagVersionAccPerKJ   = "cohort.accuracy_per_kj"
	TagVersionJobDigest  = "cohort.job_digest"
	TagVersionCohort     = "cohort.version"
	TagVersionJobID      = "cohort.job_id"
	TagVersionJobRun     = "cohort.job_run_id"
	TagVersionDatasetPfx = "cohort.dataset_digest."
	// TagLogModelHistory is MLflow's tag listing the models logged on a run;
	// MLflow's UI shows them from it.
	TagLogModelHistory = "mlflow.log-model.history"
	// TagAliasBest, on the job run, says which version alias_best moved to.
	TagAliasBest = "cohort.alias_best"
)

// mlModel is MLflow's MLmodel file, with a cohort flavor: the weights as
// safetensors and the spec the built-in trainers build the network from.
type mlModel struct {
	ArtifactPath   string                    `yaml:"artifact_path" json:"artifact_path"`
	Flavors        map[string]map[string]any `yaml:"flavors" json:"flavors"`
	ModelUUID      string                    `yaml:"model_uuid" json:"model_uuid"`
	RunID          string                    `yaml:"run_id" json:"run_id"`
	UTCTimeCreated string                    `yaml:"utc_time_created" json:"utc_time_created"`
	Signature      *mlSignature              `yaml:"signature,omitempty" json:"signature,omitempty"`
	ModelSizeBytes int64                     `yaml:"model_size_bytes" json:"model_size_bytes"`
}

// mlSignature is MLflow's ModelSignature: inputs and outputs as JSON
// strings of tensor specs.
type mlSignature struct {
	Inputs  string `yaml:"inputs" json:"inputs"`
	Outputs string `yaml:"outputs" json:"outputs"`
}

// tensorSpec is one entry of a signature: a float32 tensor whose first
// dimension (-1) is the batch.
func tensorSpec(name string, shape []int64) string {
	b, _ := json.Marshal([]map[string]any{{
		"type": "tensor", "name": name,
		"tensor-spec": map[string]any{"dtype": "float32", "shape": shape},
	}})
	return string(b)
}

// newMLmodel describes weights trained with spec, logged on run runID.
func newMLmodel(runID string, spec *pb.ModelSpec, size int64, cohortVersion string, now time.Time) mlModel {
	modelSpec := map[string]any{
		"kind": spec.GetKind(), "hidden": spec.GetHidden(), "conv": spec.GetConv(),
		"input_shape": spec.GetInputShape(), "classes": spec.GetClasses(),
	}
	if cmd := spec.GetCommand(); len(cmd) > 0 {
		modelSpec["command"] = cmd
	}
	flavor := map[string]any{
		"data":           ModelWeightsFile,
		"format":         "safetensors",
		"cohort_version": cohortVersion,
		"model_spec":     modelSpec,
	}
	var uuid [16]byte
	_, _ = rand.Read(uuid[:])
	m := mlModel{
		ArtifactPath:   ModelArtifactPath,
		Flavors:        map[string]map[string]any{"cohort": flavor},
		ModelUUID:      hex.EncodeToString(uuid[:]),
		RunID:          runID,
		UTCTimeCreated: now.UTC().Format("2006-01-02 15:04:05.000000"),
		ModelSizeBytes: size,
	}
	if in := spec.GetInputShape(); len(in) > 0 && spec.GetClasses() > 0 {
		shape := []int64{-1}
		for _, d := range in {
			shape = append(shape, int64(d))
		}
		m.Signature = &mlSignature{
			Inputs:  tensorSpec("input", shape),
			Outputs: tensorSpec("logits", []int64{-1, int64(spec.GetClasses())}),
		}
	}
	return m
}

// modelCard is what registering an arm's model needs.
type modelCard struct {
	Name          string // the registered model
	RunID         string // the arm run
	ArtifactURI   string // the arm run's artifact URI
	Spec          *pb.ModelSpec
	Weights       *model.Weights
	CohortVersion string
	Tags          map[string]string
	Description   string
}

// registerModel logs card's weights as an MLflow model on its run and
// registers them as a new version of card.Name (created if missing).
func registerModel(ctx context.Context, tr Tracker, reg tracking.ModelRegistrar, card modelCard) (tracking.ModelVersion, error) {
	var none tracking.ModelVersion
	if card.Weights == nil {
		return none, errors.New("registering the model: the arm has no final model")
	}
	// The weights stream into the artifact: no copy of the model is made.
	pr, pw := io.Pipe()
	var size int64
	go func() {
		cw := &countingWriter{w: pw}
		err := model.EncodeSafetensors(cw, card.Weights, map[string]string{"format": "pt"})
		size = cw.n
		pw.CloseWithError(err)
	}()
	err := tr.LogArtifact(ctx, card.RunID, ModelArtifactPath+"/"+ModelWeightsFile, pr)
	pr.CloseWithError(err) // ends the encoder if the store stopped reading
	if err != nil {
		return none, fmt.Errorf("registering the model: logging the weights: %w", err)
	}
	mm := newMLmodel(card.RunID, card.Spec, size, card.CohortVersion, time.Now())
	var desc bytes.Buffer
	enc := yaml.NewEncoder(&desc)
	enc.SetIndent(2) // as MLflow writes MLmodel
	if err := errors.Join(enc.Encode(mm), enc.Close()); err != nil {
		return none, fmt.Errorf("registering the model: writing MLmodel: %w", err)
	}
	if err := tr.LogArtifact(ctx, card.RunID, ModelArtifactPath+"/"+MLmodelFile, &desc); err != nil {
		return none, fmt.Errorf("registering the model: logging MLmodel: %w", err)
	}
	hist, _ := json.Marshal([]mlModel{mm})
	if len(hist) <= tracking.MaxTagValueLength {
		if err := tr.LogBatch(ctx, card.RunID, nil, nil, []tracking.Tag{{Key: TagLogModelHistory, Value: string(hist)}}); err != nil {
			return none, fmt.Errorf("registering the model: tagging the run: %w", err)
		}
	}
	if err := reg.EnsureRegisteredModel(ctx, card.Name); err != nil {
		return none, fmt.Errorf("registering the model: registered model %q: %w", card.Name, err)
	}
	mv, err := reg.CreateModelVersion(ctx, tracking.CreateModelVersion{
		Name: card.Name, Source: card.ArtifactURI + "/" + ModelArtifactPath, RunID: card.RunID,
		Description: card.Description, Tags: card.Tags,
	})
	if err != nil {
		return none, fmt.Errorf("registering the model: a version of %q: %w", card.Name, err)
	}
	return mv, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// formatFloat writes a tag's figure; NaN (no figure) is "".
func formatFloat(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return ""
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

// registerArm registers the final model of an arm that finished, once: an
// arm run already tagged with its version (a resumed arm) is left alone.
// Registration failing is logged and reported as a job event; it does not
// fail the arm, whose runs already hold everything else.
func (r *recorder) registerArm(a *armRecord, ev ArmFinished) {
	ctx, j, c := r.ctx, r.j, r.c
	reg := j.spec.Register
	if reg == nil || ev.Final == nil {
		return
	}
	fail := func(err error) {
		r.log.Warn("model_registration_failed", "arm", a.name, "model", reg.Name, "err", err)
		j.emit(&pb.JobEvent{Kind: "model_registration_failed", Arm: a.name, Message: err.Error()}, nil)
	}
	registrar, ok := r.tr.(tracking.ModelRegistrar)
	if !ok {
		fail(fmt.Errorf("the tracking store %s has no model registry", j.spec.Tracking.URI))
		return
	}
	run, err := r.tr.GetRun(ctx, a.runID)
	if err != nil {
		fail(fmt.Errorf("reading the arm run: %w", err))
		return
	}
	if v, ok := run.Data.Tag(TagModelVersion); ok {
		r.log.Info("model_already_registered", "arm", a.name, "version", v)
		return
	}
	tags := map[string]string{
		TagVersionArm: a.name, TagVersionJobID: j.id, TagVersionJobRun: r.jobRunID,
		TagVersionCohort: c.cfg.Version, TagVersionJobDigest: jobDigest(j.src), TagVersionStrategy: ev.Strategy,
	}
	if sum, err := tracking.SummarizeArm(ctx, r.tr, run); err == nil {
		for k, v := range map[string]float64{TagVersionAccuracy: sum.FinalAccuracy, TagVersionEnergy: sum.EnergyJoules, TagVersionAccPerKJ: sum.AccuracyPerKJ()} {
			if f := formatFloat(v); f != "" {
				tags[k] = f
			}
		}
	}
	for site, d := range a.digests {
		tags[TagVersionDatasetPfx+site] = d
	}
	mv, err := registerModel(ctx, r.tr, registrar, modelCard{
		Name: reg.Name, RunID: a.runID, ArtifactURI: run.Info.ArtifactURI, Spec: ev.Spec, Weights: ev.Final,
		CohortVersion: c.cfg.Version, Tags: tags,
		Description: fmt.Sprintf("Arm %s of job %s (%s), trained by Cohort %s.", a.name, j.spec.Name, j.id, c.cfg.Version),
	})
	if err != nil {
		fail(err)
		return
	}
	ref := mv.Name + "/" + mv.Version
	r.logBatch(a.runID, nil, nil, []tracking.Tag{{Key: TagModelVersion, Value: ref}})
	r.log.Info("model_registered", "arm", a.name, "model", mv.Name, "version", mv.Version)
	j.emit(&pb.JobEvent{Kind: "model_registered", Arm: a.name, Message: "models:/" + ref}, nil)
}

// jobDigest is the hex SHA-256 of the job file as submitted.
func jobDigest(src []byte) string {
	sum := sha256.Sum256(src)
	return hex.EncodeToString(sum[:])
}

// moveAliasBest points register.alias_best at the version of the arm that
// is best by register.best_metric, among the arms whose model was
// registered.
func (r *recorder) moveAliasBest() {
	ctx, j := r.ctx, r.j
	reg := j.spec.Register
	if reg == nil || reg.AliasBest == "" {
		return
	}
	fail := func(err error) {
		r.log.Warn("model_alias_failed", "alias", reg.AliasBest, "err", err)
		j.emit(&pb.JobEvent{Kind: "model_registration_failed", Message: "alias " + reg.AliasBest + ": " + err.Error()}, nil)
	}
	registrar, ok := r.tr.(tracking.ModelRegistrar)
	if !ok {
		return // registerArm said so
	}
	cmp, err := tracking.Compare(ctx, r.tr, r.jobRunID)
	if err != nil {
		fail(err)
		return
	}
	arm, version, ok := bestArm(ctx, r.tr, cmp, reg.BestMetric)
	if !ok {
		fail(fmt.Errorf("no arm has a registered model with a %s figure", reg.BestMetric))
		return
	}
	if err := registrar.SetRegisteredModelAlias(ctx, reg.Name, reg.AliasBest, version); err != nil {
		fail(err)
		return
	}
	msg := fmt.Sprintf("%s → models:/%s/%s (arm %s, best by %s)", reg.AliasBest, reg.Name, version, arm, reg.BestMetric)
	r.logBatch(r.jobRunID, nil, nil, []tracking.Tag{{Key: TagAliasBest, Value: msg}})
	r.log.Info("model_alias_moved", "model", reg.Name, "alias", reg.AliasBest, "version", version, "arm", arm)
	j.emit(&pb.JobEvent{Kind: "model_alias", Arm: arm, Message: msg}, nil)
}

// armFigure is an arm's figure by a register.best_metric name.
func armFigure(s tracking.ArmSummary, metric string) float64 {
	switch metric {
	case job.BestAccuracyPerKJ:
		return s.AccuracyPerKJ()
	case job.BestEnergyJoules:
		return s.EnergyJoules
	case job.BestWallSeconds:
		return s.WallSeconds
	}
	return s.FinalAccuracy
}

// bestArm returns the best arm by metric among those whose run is tagged
// with a registered version, and that version's number.
func bestArm(ctx context.Context, rr tracking.RunReader, cmp tracking.Comparison, metric string) (arm, version string, ok bool) {
	best := math.NaN()
	for _, s := range cmp.Arms {
		v := armFigure(s, metric)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		run, err := rr.GetRun(ctx, s.RunID)
		if err != nil {
			continue
		}
		ref, tagged := run.Data.Tag(TagModelVersion)
		if !tagged {
			continue
		}
		better := math.IsNaN(best) || (job.HigherIsBetter(metric) && v > best) || (!job.HigherIsBetter(metric) && v < best)
		if better {
			best, arm = v, s.Name
			version = ref[strings.LastIndexByte(ref, '/')+1:]
		}
	}
	return arm, version, arm != ""
}

// submitter is who submits a job: the CN of the caller's certificate, or
// without TLS the coordinator process's user (`cohort run`).
func submitter(ctx context.Context) string {
	if cn := peerCommonName(ctx); cn != "" {
		return cn
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

// sourceTags adds to tags MLflow's source tags, as MLflow's own client
// sets them on every run: the program (cohort, and the job), its type
// (JOB) and, where the binary was built from a git checkout, its commit.
func (c *Coordinator) sourceTags(j *jobRun, tags map[string]string) map[string]string {
	tags[tracking.TagSourceName] = "cohort job " + j.spec.Name
	tags[tracking.TagSourceType] = "JOB"
	if rev := vcsRevision(); rev != "" {
		tags[tracking.TagSourceGitCommit] = rev
	}
	return tags
}

// vcsRevision is the git commit this binary was built from, when the build
// recorded it.
var vcsRevision = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
})
