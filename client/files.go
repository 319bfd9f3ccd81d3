package client

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

// fileTrainer is a trainer that takes the model in a file and leaves the
// update in one (train.Exec: its process reads and writes files anyway):
// the site writes the global model to the file as it arrives and sends
// the update from its file, holding a chunk, never a model.
type fileTrainer interface {
	train.Trainer
	// TrainFile trains the model in global, whose tensors' names and
	// shapes shell gives, and writes the update to update as Train's
	// result encodes (finite, in shell's order, no metadata).
	TrainFile(ctx context.Context, global string, shell *model.Weights, ds *data.Dataset, cfg train.TrainConfig, update string) (train.TrainResult, error)
	// EvaluateFile evaluates the model in global.
	EvaluateFile(ctx context.Context, global string, ds *data.Dataset) (train.EvalResult, error)
	// FileDir is the folder the trainer's files go in: the task's model
	// files go there too.
	FileDir() (string, error)
}

var _ fileTrainer = (*train.Exec)(nil)

// modelFiles are a task's model files, in a folder of their own.
type modelFiles struct {
	dir    string
	global string         // the global model, as model.EncodeSafetensors writes it
	shell  *model.Weights // its tensors' names and shapes
	update string         // where the trainer writes the update
}

// remove removes the files.
func (f *modelFiles) remove() { _ = os.RemoveAll(f.dir) }

// fetchModelFile downloads task t's global model into a file in a new
// folder under root, written as the chunks arrive (checked as fetchModel
// checks them, and encoded as the in-memory path hands the model to a
// trainer), and returns the task's files.
func fetchModelFile(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, root string) (_ *modelFiles, err error) {
	dir, err := os.MkdirTemp(root, "task-*")
	if err != nil {
		return nil, fmt.Errorf("creating the task's folder for the model's files (the site's exec.workdir or TMPDIR must be writable): %w", err)
	}
	files := &modelFiles{dir: dir, global: filepath.Join(dir, "global.safetensors"), update: filepath.Join(dir, "update.safetensors")}
	defer func() {
		if err != nil {
			files.remove()
		}
	}()
	f, err := os.Create(files.global)
	if err != nil {
		return nil, fmt.Errorf("writing the global model's file: %w", err)
	}
	defer f.Close()
	r, total, want, err := openModel(ctx, cli, t)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, model.ChunkSize)
	_, err = model.TransformSafetensors(bw, r, total, func(shell *model.Weights) error {
		files.shell = shell
		return nil
	}, func(int, int, []float32) error { return nil })
	if err != nil {
		return nil, fmt.Errorf("fetching the global model into its file: %w", err)
	}
	if err := r.Finish(want); err != nil {
		return nil, fmt.Errorf("fetching model: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("writing the global model's file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing the global model's file: %w", err)
	}
	return files, nil
}

// pushUpdateFile uploads the update in the file at path, as pushUpdate
// uploads weights: hashed for the header in one pass, sent in another.
func pushUpdateFile(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, path string, n int64, metrics map[string]float64, rep, evalRep *pb.EnergyReport, ds *pb.DatasetInfo) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("reading the update's file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("reading the update's file: %w", err)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sendUpdate(ctx, cli, updateHeader(t, n, sum, size, metrics, rep, evalRep, ds), sendFile(f, size))
}

// sendFile writes the first size bytes of f.
func sendFile(f *os.File, size int64) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.Copy(w, io.NewSectionReader(f, 0, size))
		return err
	}
}

// fileIniter is a trainer that makes the initial weights in a file
// (train.Exec): the site sends them on from it, holding none.
type fileIniter interface {
	// InitFile writes the initial weights to out as Init's result
	// encodes (finite, no metadata).
	InitFile(ctx context.Context, seed int64, out string) error
	// FileDir is the folder the trainer's files go in.
	FileDir() (string, error)
}

var _ fileIniter = (*train.Exec)(nil)

// initFile is initTask for a file initer; m measures it.
func (a *Agent) initFile(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, fi fileIniter, m *meterRun, spent *taskEnergy, log *slog.Logger) error {
	root, err := fi.FileDir()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(root, "task-*")
	if err != nil {
		return fmt.Errorf("creating the task's folder for the initial weights (the site's exec.workdir or TMPDIR must be writable): %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "init.safetensors")
	err = fi.InitFile(a.trainerContext(ctx, t, m), t.GetTrain().GetSeed(), path)
	report := m.stop()
	spent.report = report
	if err != nil {
		return fmt.Errorf("making the initial weights: %w", err)
	}
	log.Info("task_initialised", "file", true)
	return pushUpdateFile(ctx, cli, t, path, 0, nil, report, nil, nil)
}
