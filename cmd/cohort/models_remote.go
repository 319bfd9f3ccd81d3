package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowclient"
)

// remoteModels is the registry of an MLflow server (or `cohort ui`). It
// writes nothing through the spool, so its spool is a temporary folder of
// its own and never the coordinator's.
type remoteModels struct {
	*mlflowclient.Client
	spool string
}

func openRemoteModels(_ context.Context, uri string) (modelStore, error) {
	dir, err := os.MkdirTemp("", "cohort-models-")
	if err != nil {
		return nil, err
	}
	c, err := mlflowclient.New(mlflowclient.Config{URI: uri, SpoolDir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return remoteModels{Client: c, spool: dir}, nil
}

func (r remoteModels) download(ctx context.Context, mv tracking.ModelVersion, dir string) error {
	uri, err := r.GetModelVersionDownloadURI(ctx, mv.Name, mv.Version)
	if err != nil {
		return fmt.Errorf("asking where its files are: %w", err)
	}
	return r.DownloadArtifacts(ctx, uri, dir)
}

func (r remoteModels) Close() error {
	return errors.Join(r.Client.Close(), os.RemoveAll(r.spool))
}
