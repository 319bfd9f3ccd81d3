package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/tracking/mlflowclient"
)

// openMLflow opens a remote MLflow server as a job's tracking backend: the
// client buffers what the server cannot take yet and flushes it in the
// background; closing it flushes what is left.
func openMLflow(ctx context.Context, uri string, log *slog.Logger) (server.Tracker, func(context.Context) error, error) {
	c, err := mlflowclient.New(mlflowclient.Config{URI: uri, Logger: log.With("component", "mlflow")})
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
