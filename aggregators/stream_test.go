package aggregators

import (
	"bytes"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/model"
)

// streamOf returns an open function over the values of w as AddStream
// reads them: little-endian float32, tensor after tensor.
func streamOf(t *testing.T, w *model.Weights, extra []byte) func() (io.ReadCloser, error) {
	t.Helper()
	var b bytes.Buffer
	for _, tn := range w.Tensors {
		if err := model.WriteFloats(&b, tn.Data); err != nil {
			t.Fatal(err)
		}
	}
	b.Write(extra)
	data := b.Bytes()
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
}

// TestAddStreamMatchesAdd checks that folding updates from streams gives
// the next model Add gives, bit for bit, and the same metrics.
func TestAddStreamMatchesAdd(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	// One tensor longer than a stream chunk, so that chunks and the
	// aggregate's work split fall differently.
	global := randomWeights(r, 7, model.ScanChunk+40_003, 1)
	var updates []*model.Weights
	for range 4 {
		updates = append(updates, perturbed(r, global))
	}
	counts := []int64{10, 3000, 7, 501}
	tests := []struct {
		name string
		s    Strategy
	}{
		{"fedavg", &FedAvg{}},
		{"fedavg server lr", &FedAvg{ServerLR: 0.7}},
		{"fedprox", &FedProx{Mu: 0.01}},
		{"fedadam", &FedOpt{Optimizer: OptAdam}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ra, err := BeginRound(tt.s, global, 9, 2)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := BeginRound(tt.s, global, 9, 2)
			if err != nil {
				t.Fatal(err)
			}
			sa, ok := rs.(StreamAdder)
			if !ok {
				t.Fatalf("%T is not a StreamAdder", rs)
			}
			for i, u := range updates {
				if err := ra.Add(u, counts[i]); err != nil {
					t.Fatalf("Add(%d) = %v", i, err)
				}
				if err := sa.AddStream(streamOf(t, u, nil), counts[i]); err != nil {
					t.Fatalf("AddStream(%d) = %v", i, err)
				}
			}
			sameFinish(t, ra, rs)
		})
	}
}

// TestAddStreamRefuses checks that a bad stream is refused as Add refuses
// its update, leaving the aggregate as it was, and that a round that
// cannot stream says so before reading anything.
func TestAddStreamRefuses(t *testing.T) {
	global := weights(1, 2, 3)
	nan := weights(1, float32(math.NaN()), 3)
	short := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(make([]byte, 8))), nil }
	tests := []struct {
		name string
		s    Strategy
		open func() (io.ReadCloser, error)
		n    int64
		want error
	}{
		{"nan", &FedAvg{}, streamOf(t, nan, nil), 1, ErrBadUpdate},
		{"short", &FedAvg{}, short, 1, ErrBadUpdate},
		{"long", &FedAvg{}, streamOf(t, weights(1, 2, 3), []byte{0, 0, 0, 0}), 1, ErrBadUpdate},
		{"no samples", &FedAvg{}, streamOf(t, weights(1, 2, 3), nil), 0, ErrBadUpdate},
		{"overflow", &FedAvg{}, streamOf(t, weights(1, 3e38, 3), nil), 1 << 40, ErrBadUpdate},
		{"weight cap", &FedAvg{MaxFraction: 0.5}, streamOf(t, weights(1, 2, 3), nil), 1, ErrNoStream},
		{"dp", &FedAvg{DP: &DP{Clip: 1}}, streamOf(t, weights(1, 2, 3), nil), 1, ErrNoStream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rd, err := BeginRound(tt.s, global, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "overflow" { // a first update sets the reference count
				if err := rd.Add(weights(1, 2, 3), 1); err != nil {
					t.Fatal(err)
				}
			}
			err = rd.(StreamAdder).AddStream(tt.open, tt.n)
			if !errors.Is(err, tt.want) {
				t.Fatalf("AddStream() = %v, want %v", err, tt.want)
			}
			if tt.name == "overflow" {
				return
			}
			if _, _, err := rd.Result(); !errors.Is(err, ErrNoUpdates) {
				t.Errorf("Result() after a refused stream = %v, want %v", err, ErrNoUpdates)
			}
		})
	}
}

// TestAddStreamNamesNonFinite checks that a refused stream names the
// value as Add does.
func TestAddStreamNamesNonFinite(t *testing.T) {
	global := weights(1, 2, 3)
	bad := weights(1, 2, float32(math.Inf(1)))
	ra, _ := BeginRound(&FedAvg{}, global, 1, 1)
	rs, _ := BeginRound(&FedAvg{}, global, 1, 1)
	want := ra.Add(bad, 1)
	got := rs.(StreamAdder).AddStream(streamOf(t, bad, nil), 1)
	if got == nil || want == nil || got.Error() != want.Error() {
		t.Errorf("AddStream() = %v, want Add's %v", got, want)
	}
}

// TestAddStreamUnderWeightCap checks the coordinator's way of folding
// under a weight cap — AddStream, and where the cap holds the update back
// (ErrNoStream) AddOwned of a copy it hands over — against Add alone: the
// same model bit for bit and the same metrics, with some updates folded
// as streams and the held ones kept without a copy.
func TestAddStreamUnderWeightCap(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	global := weights(0, 0, 0)
	for i := range global.Tensors {
		for j := range global.Tensors[i].Data {
			global.Tensors[i].Data[j] = float32(r.NormFloat64())
		}
	}
	for _, tt := range []struct {
		name   string
		frac   float64
		counts []int64
	}{
		{"equal sites", 0.5, []int64{100, 100, 100}},
		{"one large site", 0.3, []int64{100, 100, 100, 100, 3000, 100}},
		{"mixed sizes", 0.3, []int64{10, 3000, 7, 501, 60, 12, 9, 11, 10, 8}},
		{"large first", 0.5, []int64{5000, 10, 10, 10}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &FedAvg{MaxFraction: tt.frac}
			ra, err := BeginRound(s, global, 3, 2)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := BeginRound(s, global, 3, 2)
			if err != nil {
				t.Fatal(err)
			}
			streamed, owned := 0, 0
			for i, n := range tt.counts {
				u := perturbed(r, global)
				if err := ra.Add(u, n); err != nil {
					t.Fatalf("Add(%d) = %v", i, err)
				}
				err := rs.(StreamAdder).AddStream(streamOf(t, u, nil), n)
				switch {
				case err == nil:
					streamed++
				case errors.Is(err, ErrNoStream):
					mine := u.Clone()
					if err := rs.(OwnedAdder).AddOwned(mine, n); err != nil {
						t.Fatalf("AddOwned(%d) = %v", i, err)
					}
					ar := rs.(*avgRound)
					if len(ar.held) == 0 || ar.held[len(ar.held)-1].w != mine {
						t.Fatalf("AddOwned(%d) of an update the cap holds back did not keep it itself (held %d)", i, len(ar.held))
					}
					owned++
				default:
					t.Fatalf("AddStream(%d) = %v", i, err)
				}
			}
			if streamed == 0 || owned == 0 {
				t.Fatalf("%d streamed, %d held back: want both paths taken", streamed, owned)
			}
			sameFinish(t, ra, rs)
		})
	}
}

// sameModel checks that got has want's tensors and values, bit for bit.
func sameModel(t *testing.T, want, got *model.Weights) {
	t.Helper()
	if err := want.Compatible(got); err != nil {
		t.Fatal(err)
	}
	for i := range want.Tensors {
		for j, v := range want.Tensors[i].Data {
			if g := got.Tensors[i].Data[j]; math.Float32bits(g) != math.Float32bits(v) {
				t.Fatalf("model[%d][%d] = %v, want %v", i, j, g, v)
			}
		}
	}
}

// sameFinish finishes both rounds and checks that got's model is want's
// bit for bit and its metrics the same.
func sameFinish(t *testing.T, want, got Round) {
	t.Helper()
	wantW, wantM, err := want.(Finisher).Finish()
	if err != nil {
		t.Fatal(err)
	}
	gotW, gotM, err := got.(Finisher).Finish()
	if err != nil {
		t.Fatal(err)
	}
	sameModel(t, wantW, gotW)
	if diff := cmp.Diff(wantM, gotM); diff != "" {
		t.Errorf("metrics differ from Add's (-Add +stream):\n%s", diff)
	}
}

// TestBeginStreamedMatchesBegin checks a round that reads the global
// model from its file (BeginStreamed) and holds updates back as streams
// (HoldStream) against one with everything in memory: the same model bit
// for bit, the same metrics but the norms, which are summed block by
// block, and no update kept in memory until Result.
func TestBeginStreamedMatchesBegin(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	// A tensor longer than a stream chunk and than the workers' blocks.
	global := randomWeights(r, 7, model.ScanChunk+70_001, 1)
	file, err := model.MarshalSafetensors(global, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		s      *FedAvg
		counts []int64
		held   bool // some update is held back as a stream
	}{
		{"fedavg", &FedAvg{}, []int64{10, 3000, 7}, false},
		{"server lr", &FedAvg{ServerLR: 0.7}, []int64{10, 3000, 7}, false},
		{"cap released", &FedAvg{MaxFraction: 0.5}, []int64{100, 100, 100}, true},
		{"cap binds at Result", &FedAvg{MaxFraction: 0.3}, []int64{10, 3000, 7, 501, 60, 12, 9, 11, 10, 8}, true},
		{"cap and server lr", &FedAvg{MaxFraction: 0.5, ServerLR: 0.5}, []int64{5000, 10, 10, 10}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tf, err := model.OpenTensorFile(bytes.NewReader(file), int64(len(file)))
			if err != nil {
				t.Fatal(err)
			}
			ra, err := BeginRound(tt.s, global, 3, 2)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := tt.s.BeginStreamed(tf, 3, 2)
			if err != nil {
				t.Fatal(err)
			}
			kept := 0
			for i, n := range tt.counts {
				u := perturbed(r, global)
				if err := ra.Add(u, n); err != nil {
					t.Fatalf("Add(%d) = %v", i, err)
				}
				k, err := rs.(StreamHolder).HoldStream(streamOf(t, u, nil), n)
				if err != nil {
					t.Fatalf("HoldStream(%d) = %v", i, err)
				}
				if k {
					kept++
				}
			}
			for i, h := range rs.(*avgRound).held {
				if h.w != nil || h.open == nil {
					t.Fatalf("held update %d is in memory before Result", i)
				}
			}
			if (kept > 0) != tt.held {
				t.Fatalf("%d updates held back as streams; want some: %v", kept, tt.held)
			}
			wantW, wantM, err := ra.(Finisher).Finish()
			if err != nil {
				t.Fatal(err)
			}
			gotW, gotM, err := rs.(Finisher).Finish()
			if err != nil {
				t.Fatal(err)
			}
			sameModel(t, wantW, gotW)
			for k, v := range wantM {
				g := gotM[k]
				if math.Abs(g-v) > 1e-12*math.Abs(v) {
					t.Errorf("metric %s = %v, want %v", k, g, v)
				}
			}
			if len(gotM) != len(wantM) {
				t.Errorf("metrics %v, want %v", gotM, wantM)
			}
		})
	}
}

// failingReader is a GlobalReader whose reads fail.
type failingReader struct{ *model.TensorFile }

func (failingReader) ReadFloats(int, int, []float32) error { return errors.New("disk gone") }

// TestBeginStreamedRefuses checks that DP cannot read the global model in
// place, and that a global model that cannot be read fails the round
// with the reason instead of producing a model.
func TestBeginStreamedRefuses(t *testing.T) {
	global := weights(1, 2, 3)
	file, err := model.MarshalSafetensors(global, nil)
	if err != nil {
		t.Fatal(err)
	}
	tf, err := model.OpenTensorFile(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&FedAvg{DP: &DP{Clip: 1}}).BeginStreamed(tf, 1, 1); !errors.Is(err, ErrNoStream) {
		t.Fatalf("BeginStreamed under DP = %v, want ErrNoStream", err)
	}
	rs, err := (&FedAvg{}).BeginStreamed(failingReader{tf}, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.(StreamAdder).AddStream(streamOf(t, weights(2, 3, 4), nil), 5); err != nil {
		t.Fatal(err)
	}
	if _, _, err := rs.(Finisher).Finish(); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("Finish over an unreadable global model = %v, want the read's error", err)
	}
	if err := rs.Add(weights(2, 3), 5); !errors.Is(err, ErrFinished) && !errors.Is(err, ErrBadUpdate) {
		t.Fatalf("Add after a failed Finish = %v", err)
	}
}
