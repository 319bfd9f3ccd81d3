package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// Deps are the parts the coordinator is handed rather than builds: where it
// logs runs, and what it needs to know about a job's model.
type Deps struct {
	// Tracker receives the job's runs, params and metrics, for every job
	// whose tracking.uri OpenTracker does not take.
	Tracker Tracker
	// OpenTracker, if set, opens the tracking backend a job's tracking.uri
	// names (an MLflow server, another SQLite file) for the length of the
	// job; close flushes and releases it. It returns (nil, nil, nil) to
	// leave the job to Tracker.
	OpenTracker func(ctx context.Context, uri string) (t Tracker, close func(context.Context) error, err error)
	// Models prepares each job's model: initial weights, the spec sites build,
	// and the coordinator-side evaluation.
	Models ModelProvider
	// Meter, if set, meters the coordinator's own aggregation and its
	// evaluation of global models.
	Meter Meter
	// Idle, if set, measures the idle power of the devices the sites train
	// on, for [IdleWindow] before each job: `cohort run`'s sites share the
	// coordinator's machine. Arms then log energy_joules_above_idle. A
	// deployed coordinator leaves it nil: its own devices are not the
	// sites'.
	Idle IdleMeter
	// Weights, if set, keeps the initial weights admins upload with their
	// jobs (UploadWeights); nil refuses uploads.
	Weights WeightsStore
	// Replica, if set, holds the jobs, their tracking run ids and each
	// arm's committed rounds with their global models (server/ha's Node):
	// the coordinator then serves only while its node leads, and the
	// leader resumes running jobs at the round after their last committed
	// one. nil runs the coordinator on a one-voter cluster in memory that
	// records models by digest only (`cohort run`): New makes it, Close
	// closes it.
	Replica Replica
}

func (d Deps) validate() error {
	var errs []error
	if d.Tracker == nil && d.OpenTracker == nil {
		errs = append(errs, errors.New("coordinator: no tracking store configured"))
	}
	if d.Models == nil {
		errs = append(errs, errors.New("coordinator: no model provider configured"))
	}
	return errors.Join(errs...)
}

// WeightsStore keeps uploaded initial weights, addressed by the hex
// SHA-256 of their safetensors bytes.
type WeightsStore interface {
	// Create starts storing an upload, written to it as it arrives.
	Create() (WeightsUpload, error)
}

// WeightsUpload is an upload being stored ([WeightsStore.Create]): the
// coordinator writes its bytes as they are checked, then keeps them
// (Commit) or drops them (Abort).
type WeightsUpload interface {
	io.Writer
	// Commit keeps the bytes written as the weights whose SHA-256 is
	// digest.
	Commit(digest string) error
	// Abort drops what was written; after Commit it does nothing.
	Abort()
}

// Tracker is the part of a tracking store the coordinator logs into;
// *tracking.SQLiteStore is one.
type Tracker interface {
	EnsureExperiment(ctx context.Context, name string) (string, error)
	CreateRun(ctx context.Context, req tracking.CreateRun) (tracking.Run, error)
	UpdateRun(ctx context.Context, runID string, status tracking.RunStatus, end time.Time, name string) error
	LogBatch(ctx context.Context, runID string, metrics []tracking.Metric, params []tracking.Param, tags []tracking.Tag) error
	LogArtifact(ctx context.Context, runID, relPath string, r io.Reader) error
	// The job run ends with the comparison of its arms, read back.
	tracking.RunReader
}

// BatchLogger is implemented by a [Tracker] that logs several runs'
// batches in one call (*tracking.SQLiteStore: one transaction). The
// recorder flushes a round's per-site writes through it; with a tracker
// that lacks it, it calls LogBatch once a run.
type BatchLogger interface {
	// LogBatches logs each batch to its run, all or nothing where the
	// tracker can; an error names the batch that failed.
	LogBatches(ctx context.Context, batches []tracking.RunBatch) error
}

// RunsCreator is implemented by a [Tracker] that creates several runs in
// one call (*tracking.SQLiteStore: one transaction). The recorder creates
// the site runs of the updates it has queued through it; with a tracker
// that lacks it, it calls CreateRun once a site.
type RunsCreator interface {
	// CreateRuns creates a run a request, returned in the requests'
	// order, all or nothing where the tracker can.
	CreateRuns(ctx context.Context, reqs []tracking.CreateRun) ([]tracking.Run, error)
}

// RunsEnder is implemented by a [Tracker] that ends several runs in one
// call (*tracking.SQLiteStore: one transaction). The recorder ends an
// arm's site runs through it; with a tracker that lacks it, or where it
// fails, it calls UpdateRun once a site.
type RunsEnder interface {
	// EndRuns sets the runs' status and end time, all or nothing where
	// the tracker can.
	EndRuns(ctx context.Context, runIDs []string, status tracking.RunStatus, end time.Time) error
}

// ModelProvider prepares a job's model.
type ModelProvider interface {
	// Prepare returns the initial global model of a job, the spec the sites
	// build their trainer from, and the coordinator's evaluator.
	Prepare(ctx context.Context, spec *job.Spec) (*Prepared, error)
}

// SpecChecker is implemented by a ModelProvider that refuses some jobs as
// they are submitted, before they queue (a deployed coordinator refuses
// simulated sites and an exec model without model.init). Both
// [Coordinator.Submit] and the SubmitJob RPC call it.
type SpecChecker interface {
	// CheckSpec returns nil for a job the provider can run, else an error
	// that names the job's key (or the coordinator's setting) and the fix.
	// It may read the coordinator's disk; ctx bounds it.
	CheckSpec(ctx context.Context, spec *job.Spec) error
}

// Prepared is a job's model, ready to run.
type Prepared struct {
	// Spec is what the sites build (kind, layer sizes, input shape, classes).
	Spec *pb.ModelSpec
	// Initial is the global model before round 1; nil when an init task on
	// InitSite makes it.
	Initial *model.Weights
	// InitSite, when Initial is nil, names the site whose trainer makes
	// the initial model (an init task, run by the coordinator before the
	// first arm needs it).
	InitSite string
	// Evaluator evaluates global models on the coordinator's test set; nil
	// when the coordinator holds none.
	Evaluator Evaluator
	// EvalSite, when Evaluator is nil, names the site that evaluates the
	// global models on its test set (evaluate tasks). With neither, the
	// sites' federated evaluation is the only one.
	EvalSite string
}

// Values of the arm runs' tag [TagEvalMethod].
const (
	// EvalCoordinator: test_accuracy is the coordinator's own test set's.
	EvalCoordinator = "coordinator"
	// EvalFederated: no test_accuracy; federated_accuracy, the sites'
	// evaluation of the model they received on their local test splits,
	// is the only one.
	EvalFederated = "federated"
	// EvalSitePrefix, followed by the site's name: test_accuracy is that
	// site's test set's (eval.site).
	EvalSitePrefix = "site:"
)

// TagEvalMethod tags each arm run with where its test_accuracy comes from:
// [EvalCoordinator], [EvalFederated] or [EvalSitePrefix]+site.
const TagEvalMethod = "cohort.eval_method"

// evalMethod returns the TagEvalMethod value of p.
func (p *Prepared) evalMethod() string {
	switch {
	case p.EvalSite != "":
		return EvalSitePrefix + p.EvalSite
	case p.Evaluator != nil:
		return EvalCoordinator
	default:
		return EvalFederated
	}
}

// Evaluator evaluates a model on a held-out test set.
type Evaluator interface {
	Evaluate(ctx context.Context, w *model.Weights) (Evaluation, error)
}

// Evaluation is the result of evaluating a model.
type Evaluation struct {
	Loss       float64
	Accuracy   float64
	NumSamples int64
	// EnergyJoules is what the evaluation cost where a site metered it
	// (eval.site), with EnergyMethod "measured" or "estimated"; "" when
	// not metered. It counts in the arm's energy_joules and, apart, in
	// its eval_energy_joules.
	EnergyJoules float64
	EnergyMethod string
}

// IdleWindow is how long [IdleMeter] measures before a job.
const IdleWindow = 2 * time.Second

// IdleMeter measures the devices' power while nothing of the job runs.
type IdleMeter interface {
	// IdleWatts returns the devices' mean power over d, in watts.
	IdleWatts(ctx context.Context, d time.Duration) (float64, error)
}

// Meter measures the energy of the coordinator's own work.
type Meter interface {
	// Measure starts a measurement; the returned function stops it and
	// returns the joules measured and the method ("measured", "estimated").
	Measure(ctx context.Context) (stop func() (joules float64, method string))
}

// openTracker returns the tracker of a job and the function that ends its
// use.
func (c *Coordinator) openTracker(ctx context.Context, spec *job.Spec) (Tracker, func(), error) {
	noop := func() {}
	if c.deps.OpenTracker != nil {
		t, closeFn, err := c.deps.OpenTracker(ctx, spec.Tracking.URI)
		if err != nil {
			return nil, noop, fmt.Errorf("tracking: opening %s: %w", spec.Tracking.URI, err)
		}
		if t != nil {
			return t, func() {
				if closeFn == nil {
					return
				}
				cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := closeFn(cctx); err != nil {
					c.log.Warn("tracking_close_failed", "uri", spec.Tracking.URI, "err", err)
				}
			}, nil
		}
	}
	if c.deps.Tracker == nil {
		return nil, noop, fmt.Errorf("tracking: this coordinator has no tracking store for %q", spec.Tracking.URI)
	}
	return c.deps.Tracker, noop, nil
}
