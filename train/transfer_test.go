package train

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
)

func TestTransferInit(t *testing.T) {
	for _, n := range []int64{1, 2, 3, 1000, 123457} {
		tr, err := NewTransfer(n)
		if err != nil {
			t.Fatal(err)
		}
		w, err := tr.Init(7)
		if err != nil {
			t.Fatalf("Init() with %d params: %v", n, err)
		}
		if got := int64(w.NumParams()); got != n {
			t.Errorf("Init() with %d params made %d", n, got)
		}
		if err := w.Validate(); err != nil {
			t.Errorf("Init() with %d params: %v", n, err)
		}
		if w.Tensors[0].Name != "transfer.0" {
			t.Errorf("first tensor %q, want transfer.0", w.Tensors[0].Name)
		}
		var sum float64
		for _, v := range w.Tensors[0].Data {
			if v < -0.05 || v >= 0.05 {
				t.Fatalf("initial value %v outside [-0.05, 0.05)", v)
			}
			sum += float64(v)
		}
		if n >= 1000 {
			// Uniform in ±0.05: the mean's standard error is 0.029/√n.
			if mean := sum / float64(n); math.Abs(mean) > 5*0.029/math.Sqrt(float64(n)) {
				t.Errorf("mean of %d initial values %v, want ≈ 0", n, mean)
			}
		}
		again, _ := tr.Init(7)
		if !slices.Equal(again.Tensors[0].Data, w.Tensors[0].Data) {
			t.Errorf("Init(7) twice with %d params differs", n)
		}
		if other, _ := tr.Init(8); n > 1 && slices.Equal(other.Tensors[0].Data, w.Tensors[0].Data) {
			t.Errorf("Init(7) and Init(8) with %d params are equal", n)
		}
	}
}

func TestTransferBadConfig(t *testing.T) {
	if _, err := NewTransfer(-1); !errors.Is(err, ErrConfig) {
		t.Errorf("NewTransfer(-1) = %v, want ErrConfig", err)
	}
	// The sites' trainer, built by New, sends models back but makes none.
	tr, err := New(Config{Kind: TransferKind, InputShape: []int{60}, Classes: 10})
	if err != nil {
		t.Fatalf("New(transfer) = %v", err)
	}
	if _, err := tr.Init(1); !errors.Is(err, ErrConfig) {
		t.Errorf("Init() of a site's transfer trainer = %v, want ErrConfig", err)
	}
}

func TestTransferTrain(t *testing.T) {
	base, _ := NewTransfer(10_001)
	w, _ := base.Init(1)
	orig := w.Clone()
	ds := &data.Dataset{Name: "synthetic(0,0)", N: 42}
	site, _ := New(Config{Kind: TransferKind, InputShape: []int{60}, Classes: 10})
	train := func(worker string, seed int64) *model.Weights {
		t.Helper()
		ctx := WithTask(context.Background(), TaskInfo{Worker: worker})
		out, res, err := site.Train(ctx, w, ds, TrainConfig{Seed: seed, Epochs: 3})
		if err != nil {
			t.Fatal(err)
		}
		if res.NumSamples != 42 || res.Epochs != 3 {
			t.Errorf("Train() reported %d samples, %d epochs; want 42, 3", res.NumSamples, res.Epochs)
		}
		return out
	}
	a := train("site-1/job-a/fedavg", 5)
	if err := a.Compatible(w); err != nil {
		t.Fatalf("Train() returned an incompatible model: %v", err)
	}
	var maxDiff float64
	var moved int
	for i := range a.Tensors[0].Data {
		d := math.Abs(float64(a.Tensors[0].Data[i] - w.Tensors[0].Data[i]))
		maxDiff = max(maxDiff, d)
		if d > 0 {
			moved++
		}
	}
	if maxDiff > TransferNoise*1.0001 || moved < 9_900 {
		t.Errorf("Train() moved %d of 10001 values by at most %v, want nearly all by ≤ %v", moved, maxDiff, TransferNoise)
	}
	if !slices.Equal(w.Tensors[0].Data, orig.Tensors[0].Data) {
		t.Error("Train() modified its input")
	}
	tests := []struct {
		name   string
		worker string
		seed   int64
		same   bool
	}{
		{"same site and round, another job", "site-1/job-b/fedavg", 5, true},
		{"same site and round, another arm", "site-1/job-a/fedprox", 5, true},
		{"another site", "site-2/job-a/fedavg", 5, false},
		{"another round", "site-1/job-a/fedavg", 6, false},
	}
	for _, tc := range tests {
		b := train(tc.worker, tc.seed)
		if got := slices.Equal(a.Tensors[0].Data, b.Tensors[0].Data); got != tc.same {
			t.Errorf("%s: equal = %v, want %v", tc.name, got, tc.same)
		}
	}
	ev, err := site.Evaluate(context.Background(), w, ds)
	if err != nil || ev.NumSamples != 0 || ev.Accuracy != 0 {
		t.Errorf("Evaluate() = %+v, %v; want no samples", ev, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := site.Train(ctx, w, ds, TrainConfig{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Train() with a cancelled context = %v, want context.Canceled", err)
	}
}

// BenchmarkTransferTrain measures a site's "training" of a 10M-parameter
// transfer model: one copy plus noise.
func BenchmarkTransferTrain(b *testing.B) {
	tr, _ := NewTransfer(10_000_000)
	w, _ := tr.Init(1)
	ds := &data.Dataset{N: 100}
	b.SetBytes(w.Bytes())
	for b.Loop() {
		if _, _, err := tr.Train(context.Background(), w, ds, TrainConfig{Seed: 1}); err != nil {
			b.Fatal(err)
		}
	}
}
