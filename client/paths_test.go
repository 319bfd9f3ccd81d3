package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

// modelCoordinator serves one global model in chunks and records the
// updates pushed to it.
type modelCoordinator struct {
	pb.UnimplementedCoordinatorServiceServer
	global []byte
	sum    []byte // announced; the global's own SHA-256 unless a test lies
	pushed chan pushedUpdate
}

// pushedUpdate is an update as the coordinator received it.
type pushedUpdate struct {
	header *pb.UpdateHeader
	data   []byte
}

func (c *modelCoordinator) FetchModel(_ *pb.FetchModelRequest, s grpc.ServerStreamingServer[pb.ModelChunk]) error {
	first := true
	for off, b := range model.Chunks(c.global, 1000) { // many chunks, cut anywhere
		m := &pb.ModelChunk{Offset: off, Data: b}
		if first {
			m.TotalSize, m.Sha256, first = int64(len(c.global)), c.sum, false
		}
		if err := s.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func (c *modelCoordinator) PushUpdate(s grpc.ClientStreamingServer[pb.UpdateChunk, pb.PushUpdateResponse]) error {
	var u pushedUpdate
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if h := m.GetHeader(); h != nil {
			u.header = h
		}
		u.data = append(u.data, m.GetData()...)
	}
	c.pushed <- u
	return s.SendAndClose(&pb.PushUpdateResponse{Accepted: true})
}

// serveModel serves c over an in-memory connection and returns a client
// of it.
func serveModel(t *testing.T, c *modelCoordinator) pb.CoordinatorServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	pb.RegisterCoordinatorServiceServer(gs, c)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		gs.Stop()
		<-done
	})
	return pb.NewCoordinatorServiceClient(conn)
}

// oneDataset is a site's data: a training set of 7 samples and, if test,
// a test set of 3.
type oneDataset struct{ test bool }

func (d oneDataset) Load(context.Context, string, pb.TaskKind) (*data.Dataset, *data.Dataset, error) {
	var test *data.Dataset
	if d.test {
		test = &data.Dataset{Name: "synthetic(0,0)/test", N: 3}
	}
	return &data.Dataset{Name: "synthetic(0,0)", N: 7}, test, nil
}

// trainerOf hands out one trainer.
type trainerOf struct{ tr train.Trainer }

func (f trainerOf) Trainer(train.Config) (train.Trainer, error) { return f.tr, nil }

// inMemory hides a trainer's TrainStream and TrainFile: the site takes
// its in-memory path (the model decoded, Train, the update encoded).
type inMemory struct{ train.Trainer }

// fileOf is a file trainer made of an in-memory one (its TrainStream
// hidden): it reads the model's file, trains, and writes the update's; it
// records the model files it was handed.
type fileOf struct {
	train.Trainer
	globals *[][]byte
}

func (f fileOf) read(path string) (*model.Weights, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	*f.globals = append(*f.globals, b)
	w, _, err := model.UnmarshalSafetensors(b)
	return w, err
}

func (f fileOf) TrainFile(ctx context.Context, global string, shell *model.Weights, ds *data.Dataset, cfg train.TrainConfig, update string) (train.TrainResult, error) {
	w, err := f.read(global)
	if err != nil {
		return train.TrainResult{}, err
	}
	if len(w.Tensors) != len(shell.Tensors) {
		return train.TrainResult{}, fmt.Errorf("the shell has %d tensors, the file %d", len(shell.Tensors), len(w.Tensors))
	}
	for i, tn := range w.Tensors {
		if tn.Name != shell.Tensors[i].Name || !slices.Equal(tn.Shape, shell.Tensors[i].Shape) {
			return train.TrainResult{}, fmt.Errorf("the shell's tensor %d is %q %v, the file's %q %v", i, shell.Tensors[i].Name, shell.Tensors[i].Shape, tn.Name, tn.Shape)
		}
	}
	out, res, err := f.Train(ctx, w, ds, cfg)
	if err != nil {
		return res, err
	}
	if err := out.CheckFinite(); err != nil {
		return res, err
	}
	return res, model.WriteSafetensorsFile(update, out, nil)
}

func (f fileOf) FileDir() (string, error) { return os.TempDir(), nil }

func (f fileOf) EvaluateFile(ctx context.Context, global string, ds *data.Dataset) (train.EvalResult, error) {
	w, err := f.read(global)
	if err != nil {
		return train.EvalResult{}, err
	}
	return f.Evaluate(ctx, w, ds)
}

// TestUpdatePathsAgree: a transfer task whose update is made as the model
// arrives, a chunk at a time (stream), and one whose trainer gets the
// model in a file and leaves the update in one (file, as the exec trainer
// does), send bit for bit the update of the in-memory path (decode,
// Train, encode), under the same header, for models of one and of several
// tensors, runs that cross chunks, odd lengths and the model's metadata,
// with the global model evaluated first or not; the file trainer gets the
// model as the in-memory path encodes it for a trainer. All three refuse a
// model whose SHA-256 is not the announced one and send nothing, and
// refuse non-finite results. The files are removed.
func TestUpdatePathsAgree(t *testing.T) {
	big, _ := train.NewTransfer(model.ScanChunk + 3)
	bigW, _ := big.Init(1)
	small, _ := train.NewTransfer(5)
	several, _ := small.Init(2)
	several.Tensors = append(several.Tensors,
		model.Tensor{Name: "b", Shape: []int{3, 3}, Data: []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		model.Tensor{Name: "scalar", Data: []float32{-2}})
	nan := &model.Weights{Tensors: []model.Tensor{{Name: "x", Shape: []int{3}, Data: []float32{1, float32(math.NaN()), 2}}}}
	tests := []struct {
		name    string
		global  *model.Weights
		meta    map[string]string
		badSum  bool
		eval    bool  // the site holds a test set and evaluates the global model
		wantErr error // of every path, nil for an update
		size    int64 // of the update
	}{
		// A header of 75 bytes padded to 80, then the values.
		{name: "one tensor over a chunk", global: bigW, size: 88 + 4*(model.ScanChunk+3)},
		// 180 bytes padded to 184, the metadata dropped.
		{name: "several tensors, evaluated", global: several, eval: true, size: 192 + 4*15},
		{name: "several tensors and metadata", global: several, meta: map[string]string{"format": "pt"}, size: 192 + 4*15},
		{name: "wrong checksum", global: several, badSum: true, wantErr: model.ErrChecksum},
		{name: "non-finite", global: nan, wantErr: model.ErrNotFinite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			b, err := model.MarshalSafetensors(tt.global, tt.meta)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(b)
			c := &modelCoordinator{global: b, sum: sum[:], pushed: make(chan pushedUpdate, 1)}
			if tt.badSum {
				c.sum = make([]byte, sha256.Size)
			}
			cli := serveModel(t, c)
			task := &pb.Task{TaskId: "t1", JobId: "j1", Arm: "fedavg", Round: 3, ModelId: "m", Dataset: "synthetic",
				Kind: pb.TaskKind_TASK_KIND_TRAIN, Model: &pb.ModelSpec{Kind: train.TransferKind}, Train: &pb.TrainParams{Seed: 11, Epochs: 1},
				EvaluateGlobal: tt.eval}
			site, _ := train.NewTransfer(0)
			var globals [][]byte
			paths := []struct {
				name string
				tr   train.Trainer
			}{{"in memory", inMemory{site}}, {"stream", site}, {"file", fileOf{site, &globals}}}
			var pushed []pushedUpdate
			for _, p := range paths {
				a, err := New(Config{Name: "kit", Targets: []string{"passthrough:///bufnet"}}, oneDataset{test: tt.eval}, trainerOf{p.tr}, nil)
				if err != nil {
					t.Fatal(err)
				}
				err = a.runTask(context.Background(), cli, nil, task, &taskEnergy{}, a.log)
				if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("%s: runTask() = %v, want %v", p.name, err, tt.wantErr)
				}
				if err == nil {
					pushed = append(pushed, <-c.pushed)
				}
				if len(c.pushed) != 0 {
					t.Errorf("%s: %d updates pushed after a failure", p.name, len(c.pushed))
				}
				if left, _ := os.ReadDir(tmp); len(left) != 0 {
					t.Errorf("%s: the temporary folder holds %d files after the task, want none", p.name, len(left))
				}
			}
			if tt.wantErr != nil || len(pushed) != len(paths) {
				return
			}
			decoded, _, _ := model.UnmarshalSafetensors(b)
			canonical, _ := model.MarshalSafetensors(decoded, nil)
			for i, g := range globals {
				if !bytes.Equal(g, canonical) {
					t.Errorf("the file trainer's model file %d (%d bytes) is not the model as the in-memory path encodes it (%d bytes)", i, len(g), len(canonical))
				}
			}
			if want := map[bool]int{false: 1, true: 2}[tt.eval]; len(globals) != want {
				t.Errorf("the file trainer read the model %d times, want %d", len(globals), want)
			}
			mem := pushed[0]
			if got := int64(len(mem.data)); got != tt.size || mem.header.GetTotalSize() != tt.size {
				t.Errorf("in-memory update of %d bytes, header says %d, want %d", got, mem.header.GetTotalSize(), tt.size)
			}
			if got := sha256.Sum256(mem.data); !bytes.Equal(mem.header.GetSha256(), got[:]) {
				t.Errorf("update's header SHA-256 %x, its bytes' %x", mem.header.GetSha256(), got)
			}
			// The same header but the timings.
			for _, u := range pushed {
				for _, k := range []string{"train_seconds", metricTrainerSeconds, metricTaskSeconds} {
					if u.header.Metrics[k] < 0 {
						t.Errorf("metric %s = %v, want ≥ 0", k, u.header.Metrics[k])
					}
					delete(u.header.Metrics, k)
				}
			}
			for i, u := range pushed[1:] {
				if !bytes.Equal(u.data, mem.data) {
					t.Errorf("%s update (%d bytes) differs from the in-memory one (%d bytes)", paths[i+1].name, len(u.data), len(mem.data))
				}
				if diff := cmp.Diff(mem.header, u.header, protocmp.Transform()); diff != "" {
					t.Errorf("%s update's header (-in memory +%[1]s):\n%s", paths[i+1].name, diff)
				}
			}
			if got := mem.header.GetNumSamples(); got != 7 {
				t.Errorf("update of %d samples, want 7", got)
			}
			if got, ok := mem.header.Metrics["eval_samples"]; ok != tt.eval || got != 0 {
				t.Errorf("update's eval_samples = %v (sent: %v), want 0 sent: %v", got, ok, tt.eval)
			}
		})
	}
}

func (f fileOf) InitFile(_ context.Context, seed int64, out string) error {
	w, err := f.Init(seed)
	if err != nil {
		return err
	}
	return model.WriteSafetensorsFile(out, w, nil)
}

// TestInitPathsAgree: initial weights a trainer leaves in a file are sent
// as the in-memory ones are, bit for bit and under the same header, and
// the file is removed.
func TestInitPathsAgree(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	c := &modelCoordinator{pushed: make(chan pushedUpdate, 1)}
	cli := serveModel(t, c)
	tr, _ := train.NewTransfer(1001)
	task := &pb.Task{TaskId: "t0", JobId: "j1", Kind: pb.TaskKind_TASK_KIND_INIT, Model: &pb.ModelSpec{Kind: train.TransferKind}, Train: &pb.TrainParams{Seed: 4}}
	var pushed []pushedUpdate
	for _, p := range []train.Trainer{inMemory{tr}, fileOf{tr, nil}} {
		a, err := New(Config{Name: "kit", Targets: []string{"passthrough:///bufnet"}}, oneDataset{}, trainerOf{p}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.runTask(context.Background(), cli, nil, task, &taskEnergy{}, a.log); err != nil {
			t.Fatalf("runTask(init) with %T: %v", p, err)
		}
		pushed = append(pushed, <-c.pushed)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the temporary folder holds %d files after the task, want none", len(left))
	}
	mem, file := pushed[0], pushed[1]
	if want := int64(8 + 72 + 4*1001); int64(len(mem.data)) != want { // a 72-byte header, no padding
		t.Errorf("initial weights of %d bytes, want %d", len(mem.data), want)
	}
	if !bytes.Equal(file.data, mem.data) {
		t.Errorf("initial weights from a file (%d bytes) differ from the in-memory ones (%d bytes)", len(file.data), len(mem.data))
	}
	if diff := cmp.Diff(mem.header, file.header, protocmp.Transform()); diff != "" {
		t.Errorf("header (-in memory +file):\n%s", diff)
	}
}
