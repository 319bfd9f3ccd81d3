package train

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
)

// Errors returned by the trainers.
var (
	// ErrConfig is returned by [New] for a model configuration it cannot build.
	ErrConfig = errors.New("invalid model config")
	// ErrCommandNotFound is returned by the exec trainer when its program
	// does not exist or cannot be executed.
	ErrCommandNotFound = errors.New("trainer command not found")
	// ErrTrainerFailed is returned by the exec trainer when its process
	// exits with a non-zero code or is killed by a signal.
	ErrTrainerFailed = errors.New("trainer process failed")
	// ErrTrainerOutput is returned by the exec trainer when its process
	// exits cleanly but its weights or metrics are missing or invalid.
	ErrTrainerOutput = errors.New("invalid trainer output")
)

// Config describes a model.
type Config struct {
	// Kind is logreg, mlp, cnn or exec.
	Kind string
	// Hidden are an mlp's hidden layer widths.
	Hidden []int
	// Conv are a cnn's convolution channels (default [32 64]).
	Conv []int
	// InputShape is one sample's shape, e.g. [1 28 28].
	InputShape []int
	// Classes is the number of classes.
	Classes int

	// Command is an exec trainer's argv, run once per Init, Train and
	// Evaluate call, or once per worker in persistent mode (see [Exec] and
	// docs/trainer-protocol.md).
	Command []string
	// ExecMode is the exec trainer's mode: [ExecPerTask] (or "") or
	// [ExecPersistent].
	ExecMode string
	// Env adds variables to the exec trainer's environment, over the
	// site's own.
	Env map[string]string
	// Dir is the exec trainer's working directory: relative paths in
	// Command resolve against it. Empty means the site's working directory.
	Dir string
	// WorkDir is the exec trainer's scratch folder for the files it
	// exchanges with the process; empty means a new temporary folder,
	// removed by [Exec.Close].
	WorkDir string
	// Logger receives the exec trainer's process output, line by line;
	// nil discards it.
	Logger *slog.Logger
}

// TrainConfig is one local training task.
type TrainConfig struct {
	Epochs      int
	BatchSize   int
	LR          float64
	Momentum    float64
	WeightDecay float64
	// Mu adds μ/2·‖w − w_anchor‖² to the loss (FedProx); the anchor is the
	// weights passed to Train.
	Mu float64
	// Seed seeds the shuffling: the same seed and inputs give the same result.
	Seed int64
	// Progress, if set, is called after every batch; an exec trainer calls
	// it for each progress line its process prints, from another goroutine
	// but never concurrently with itself, and before Train returns.
	Progress func(epoch, batch, batches int, loss float64)
}

// TrainResult summarises a training task.
type TrainResult struct {
	NumSamples int64
	Loss       float64 // mean training loss of the last epoch
	Epochs     int
	Seconds    float64
	Steps      int
	// CPUSeconds is the CPU time (user + system) of the external process
	// that trained, for trainers that run one (exec); 0 for in-process
	// trainers, whose CPU time is the site's own.
	CPUSeconds float64
	// Metrics holds any further metrics the trainer reported (an exec
	// trainer's extra metrics keys); nil when none.
	Metrics map[string]float64
}

// EvalResult is a model's loss and accuracy on a dataset.
type EvalResult struct {
	NumSamples int64
	Loss       float64
	Accuracy   float64
	// Seconds is the wall time of an external process's evaluation (exec
	// trainers); 0 for in-process trainers.
	Seconds float64
	// CPUSeconds is the CPU time of the external process that evaluated,
	// as in [TrainResult].
	CPUSeconds float64
	// Metrics holds any further metrics the trainer reported (an exec
	// trainer's extra metrics keys, trainer_seconds among them); nil when
	// none.
	Metrics map[string]float64
}

// Trainer trains and evaluates one model architecture. Implementations are
// safe for concurrent use: several simulated sites share one.
type Trainer interface {
	// Init returns fresh initial weights, the same for the same seed.
	Init(seed int64) (*model.Weights, error)
	// Train returns w trained on ds; w is not modified. It stops between
	// batches when ctx is done.
	Train(ctx context.Context, w *model.Weights, ds *data.Dataset, cfg TrainConfig) (*model.Weights, TrainResult, error)
	// Evaluate returns w's loss and accuracy on ds.
	Evaluate(ctx context.Context, w *model.Weights, ds *data.Dataset) (EvalResult, error)
}

// New returns the trainer cfg describes.
func New(cfg Config) (Trainer, error) {
	in := 1
	for _, d := range cfg.InputShape {
		if d <= 0 {
			return nil, fmt.Errorf("%w: input shape %v", ErrConfig, cfg.InputShape)
		}
		in *= d
	}
	if len(cfg.InputShape) == 0 {
		return nil, fmt.Errorf("%w: no input shape", ErrConfig)
	}
	if cfg.Classes < 2 {
		return nil, fmt.Errorf("%w: %d classes; need at least 2", ErrConfig, cfg.Classes)
	}
	switch cfg.Kind {
	case "logreg":
		return newDense(in, nil, cfg.Classes)
	case "mlp":
		if len(cfg.Hidden) == 0 {
			return nil, fmt.Errorf("%w: an mlp needs hidden layer widths", ErrConfig)
		}
		return newDense(in, cfg.Hidden, cfg.Classes)
	case "cnn":
		return newCNN(cfg)
	case TransferKind: // the coordinator makes its initial weights
		return NewTransfer(0)
	case "exec":
		e, err := NewExec(cfg)
		if err != nil { // not a typed nil in the interface
			return nil, err
		}
		return e, nil
	}
	return nil, fmt.Errorf("%w: model kind %q; use logreg, mlp or cnn (or exec for an external trainer)", ErrConfig, cfg.Kind)
}
