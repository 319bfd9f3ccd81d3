package mlflowclient

import (
	"context"
	"errors"

	"github.com/cohortfl/cohort/tracking"
)

func init() {
	tracking.RegisterScheme("http", open)
	tracking.RegisterScheme("https", open)
}

// open opens a remote MLflow server as a tracking backend for
// [tracking.Open]: the client buffers what the server cannot take yet and
// flushes it in the background; closing it flushes what is left.
func open(ctx context.Context, uri string, opts tracking.OpenOptions) (tracking.Backend, func(context.Context) error, error) {
	c, err := New(Config{URI: uri, Logger: opts.Logger.With("component", "mlflow")})
	if err != nil {
		return nil, nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	return c, func(ctx context.Context) error {
		ferr := c.Flush(ctx)
		cancel()
		rerr := <-done
		return errors.Join(ferr, rerr, c.Close())
	}, nil
}
