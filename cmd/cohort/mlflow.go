package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/tracking"
	_ "github.com/cohortfl/cohort/tracking/mlflowclient" // registers http and https with tracking.Open
)

// openTracker opens the tracking backend uri names ([tracking.Open]:
// sqlite:FILE, a plain path, or an http(s) MLflow server, whose client
// buffers what the server cannot take yet and flushes it on close) as the
// coordinator's Tracker.
func openTracker(ctx context.Context, uri string, log *slog.Logger) (server.Tracker, func(context.Context) error, error) {
	b, closeFn, err := tracking.Open(ctx, uri, tracking.OpenOptions{Logger: log})
	if err != nil {
		return nil, nil, err
	}
	t, ok := b.(server.Tracker)
	if !ok {
		_ = closeFn(ctx)
		return nil, nil, fmt.Errorf("tracking URI %q: its backend (%T) cannot record a job", uri, b)
	}
	return t, closeFn, nil
}
