package train

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// ExecKind is the model kind of the external-process trainer ([Exec]).
const ExecKind = "exec"

// Factory builds trainers from configs, one per distinct config, shared by
// every site and by the coordinator of the process: the site agent asks it
// for each task's trainer, the coordinator for a job's initial weights and
// evaluation. Its zero value builds every kind with the process's working
// directory. A Factory is safe for concurrent use; [Factory.Close]
// releases what its trainers hold.
type Factory struct {
	// Dir is the working directory of exec trainers, against which their
	// command's relative paths resolve (the job file's folder); empty
	// means the process's.
	Dir string
	// Logger receives exec trainers' process output; nil discards it.
	Logger *slog.Logger
	// ExecRefused, when not empty, refuses exec models (commands a job
	// asks to run) with this reason: a deployed site runs them only when
	// its config allows, a deployed coordinator never.
	ExecRefused string

	mu    sync.Mutex
	cache map[string]Trainer
}

// Trainer returns the trainer for cfg, built on the first call and shared
// by later ones with an equal config. An exec config gets the factory's
// Dir and Logger.
func (f *Factory) Trainer(cfg Config) (Trainer, error) {
	if cfg.Kind == ExecKind {
		if f.ExecRefused != "" {
			return nil, fmt.Errorf("the job's model runs the command %q: %s", cfg.Command, f.ExecRefused)
		}
		cfg.Dir, cfg.Logger = f.Dir, f.Logger
	}
	key := fmt.Sprint(cfg)
	f.mu.Lock()
	defer f.mu.Unlock()
	if tr, ok := f.cache[key]; ok {
		return tr, nil
	}
	tr, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if f.cache == nil {
		f.cache = make(map[string]Trainer)
	}
	f.cache[key] = tr
	return tr, nil
}

// Close removes what the trainers left behind (exec trainers' workers and
// scratch files). No trainer may be in use.
func (f *Factory) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, tr := range f.cache {
		if c, ok := tr.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
