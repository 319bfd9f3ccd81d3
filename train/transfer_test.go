package train

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
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

// TestTransferPinned pins the initial models and updates of transfer
// models (SHA-256 of their safetensors encoding), as the trainer made them
// before its noise could be added a run at a time: a deployment's updates
// stay bit-identical across versions.
func TestTransferPinned(t *testing.T) {
	tests := []struct {
		params       int64
		init, update string
	}{
		{1, "5a3abd62ff6f7c5763d4adca21244bf86e979a9bfa10e556e867229f686a622e", "8cf5c01e7653557929c61d001c9bcf39619ab2131b3ebd8a9777d4510c06b5a7"},
		{2, "076a1f43259f87ca1d1c47bfe3d4a678b7f22e46fe2e5d286758b674504ebc4d", "5f9e51be1d191eb0ba99db1c0ebc14414e96cf42c6f40ff9b8354d2e99e4aad9"},
		{3, "e6c3fe4859c4aa08a430ebc0b6327ffe26bc37efe6c811e4cb650e1f25d967db", "a1705131ca2f923ee32dbb6c7d980e3cd22bc1414860b380d78537ae915639e1"},
		{10_001, "8e31448b0700a771ce30d790401158edb29cdb2eb5f71f175cab5145b00a4ae6", "a69a5897e2b18803a6665d150293d3bd4fb06f988bd89878d95f48f77a3c10a0"},
		{1 << 20, "af1f8d855c586d461716e6de9574d74e345a254e8bd7770cb8b558ef7efb5a24", "570708e588042c4559b6f993320f1e6185ac61e45474037fe1745719cf20fc3a"},
	}
	sum := func(w *model.Weights) string {
		b, err := model.MarshalSafetensors(w, nil)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", sha256.Sum256(b))
	}
	ctx := WithTask(context.Background(), TaskInfo{Worker: "kit/j1/fedavg"})
	for _, tt := range tests {
		tr, _ := NewTransfer(tt.params)
		w, err := tr.Init(5)
		if err != nil {
			t.Fatal(err)
		}
		if got := sum(w); got != tt.init {
			t.Errorf("Init(5) of %d params hashes to %s, want %s", tt.params, got, tt.init)
		}
		out, _, err := tr.Train(ctx, w, &data.Dataset{Name: "x", N: 3}, TrainConfig{Seed: 9})
		if err != nil {
			t.Fatal(err)
		}
		if got := sum(out); got != tt.update {
			t.Errorf("Train() of %d params hashes to %s, want %s", tt.params, got, tt.update)
		}
	}
}

// TestTransferTrainStream checks that the noise TrainStream's function
// adds run by run, whatever the runs' lengths and parities, is bit for bit
// what Train adds to the whole tensor, and that it stops on a done context.
func TestTransferTrainStream(t *testing.T) {
	tr, _ := NewTransfer(1001)
	w, _ := tr.Init(3)
	w.Tensors = append(w.Tensors, model.Tensor{Name: "second", Shape: []int{7}, Data: []float32{1, 2, 3, 4, 5, 6, 7}})
	ds := &data.Dataset{Name: "x", N: 11}
	cfg := TrainConfig{Seed: 4, Epochs: 2}
	ctx := WithTask(context.Background(), TaskInfo{Worker: "unibo/j/fedavg"})
	want, wantRes, err := tr.Train(ctx, w, ds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, runs := range [][]int{{1}, {2}, {3}, {7, 1, 2}, {1000}, {1001}} {
		perturb, res, err := tr.TrainStream(ctx, ds, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.NumSamples != wantRes.NumSamples || res.Epochs != wantRes.Epochs {
			t.Errorf("TrainStream() reported %+v, want Train's %+v but the seconds", res, wantRes)
		}
		got := w.Clone()
		for i, tn := range got.Tensors {
			for off, r := 0, 0; off < len(tn.Data); r++ {
				end := min(off+runs[r%len(runs)], len(tn.Data))
				if err := perturb(i, off, tn.Data[off:end]); err != nil {
					t.Fatal(err)
				}
				off = end
			}
		}
		for i, tn := range got.Tensors {
			for j, v := range tn.Data {
				if math.Float32bits(v) != math.Float32bits(want.Tensors[i].Data[j]) {
					t.Fatalf("runs of %v: tensor %d value %d = %v, want Train's %v", runs, i, j, v, want.Tensors[i].Data[j])
				}
			}
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	perturb, _, _ := tr.TrainStream(cctx, ds, cfg)
	cancel()
	if err := perturb(0, 0, make([]float32, 4)); !errors.Is(err, context.Canceled) {
		t.Errorf("TrainStream()'s function after cancel = %v, want context.Canceled", err)
	}
}
