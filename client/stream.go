package client

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

// streamTrainer is a trainer whose update is a function of the model
// applied value by value (train.Transfer): the site turns the global
// model into the update as it arrives, holding a chunk of either, never
// a model. It evaluates no model: its Evaluate gets nil weights.
type streamTrainer interface {
	train.Trainer
	// TrainStream returns the function that turns a run of the model's
	// values (tensor t's from index off) into the update's in place, bit
	// for bit what Train returns, and what Train reports but its seconds.
	TrainStream(ctx context.Context, ds *data.Dataset, cfg train.TrainConfig) (func(t, off int, vals []float32) error, train.TrainResult, error)
}

var _ streamTrainer = (*train.Transfer)(nil)

// streamTask trains task t with a stream trainer: the global model's
// chunks become the update's as they arrive, written to a temporary file
// (in os.TempDir: TMPDIR), which is then uploaded. The site's memory
// stays at a few chunks whatever the model's size; the bytes sent are
// those the in-memory path sends. The measurement covers the download,
// during which the update is made. metrics, evalReport and
// trainerSeconds are the global model's evaluation's, sent along.
func (a *Agent) streamTask(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, st streamTrainer, trainSet *data.Dataset, cfg train.TrainConfig, arrived time.Time,
	metrics map[string]float64, evalReport *pb.EnergyReport, trainerSeconds float64, spent *taskEnergy, log *slog.Logger) error {
	m := a.startMeter(ctx, t, log)
	defer m.stop()
	f, err := os.CreateTemp("", "cohort-update-*.safetensors")
	if err != nil {
		return fmt.Errorf("creating the update's file (the site writes a transfer model's update there as the model arrives; point TMPDIR at a writable folder): %w", err)
	}
	defer func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}()
	start := time.Now()
	perturb, res, err := st.TrainStream(a.trainerContext(ctx, t, m), trainSet, cfg)
	if err != nil {
		spent.report = m.stop()
		return fmt.Errorf("training: %w", err)
	}
	sum, size, err := fetchTransformed(ctx, cli, t, f, perturb)
	res.Seconds = time.Since(start).Seconds()
	report := m.stop()
	if report != nil {
		spent.report = report
	}
	if err != nil {
		return err
	}
	addTrainMetrics(metrics, res)
	metrics[metricTrainerSeconds] = trainerSeconds + res.Seconds
	metrics[metricTaskSeconds] = time.Since(arrived).Seconds()
	log.Debug("task_trained", "loss", res.Loss, "seconds", res.Seconds)
	ds := &pb.DatasetInfo{Name: t.GetDataset() + "/" + trainSet.Name, Sha256: a.digest(trainSet), NumSamples: int64(trainSet.N)}
	return sendUpdate(ctx, cli, updateHeader(t, res.NumSamples, sum, size, metrics, report, evalReport, ds), sendFile(f, size))
}

// fetchTransformed downloads task t's global model and writes to w, as it
// arrives, the update f makes of it (checked finite), encoded as
// [pushUpdate] encodes updates; it returns the update's SHA-256 and size
// once the download's own SHA-256 is checked.
func fetchTransformed(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, w io.Writer, f func(t, off int, vals []float32) error) (sum [sha256.Size]byte, size int64, err error) {
	r, total, want, err := openModel(ctx, cli, t)
	if err != nil {
		return sum, 0, err
	}
	h := sha256.New()
	var trainErr error // f's, or non-finite values: the training's fault
	size, err = model.TransformSafetensors(io.MultiWriter(w, h), r, total, nil, func(i, off int, vals []float32) error {
		if err := f(i, off, vals); err != nil {
			trainErr = fmt.Errorf("training: %w", err)
			return trainErr
		}
		if _, finite := model.FiniteNorm(vals); !finite {
			trainErr = fmt.Errorf("training produced non-finite weights (lower the learning rate): %w: tensor %d, from value %d", model.ErrNotFinite, i, off)
			return trainErr
		}
		return nil
	})
	if trainErr != nil {
		return sum, 0, trainErr
	}
	if err != nil {
		return sum, 0, fmt.Errorf("fetching the global model and writing the update: %w", err)
	}
	if err := r.Finish(want); err != nil {
		return sum, 0, fmt.Errorf("fetching model: %w", err)
	}
	h.Sum(sum[:0])
	return sum, size, nil
}
