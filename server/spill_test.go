package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// spillGlobal is a model with a tensor longer than a scan chunk and one of
// odd length, so that chunks and value pairs fall unevenly.
func spillGlobal() *model.Weights {
	w := &model.Weights{}
	for i, n := range []int{model.ScanChunk + 3, 5} {
		d := make([]float32, n)
		for j := range d {
			d[j] = float32(math.Sin(float64(i*7 + j)))
		}
		w.Tensors = append(w.Tensors, model.Tensor{Name: fmt.Sprint("t", i), Shape: []int{n}, Data: d})
	}
	return w
}

// weightsDiff describes the first difference between want and got (names,
// shapes, values bit for bit), "" if none: cmp.Diff walks a million floats
// by reflection, which under -race took a minute.
func weightsDiff(want, got *model.Weights) string {
	if len(want.Tensors) != len(got.Tensors) {
		return fmt.Sprintf("%d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for i, w := range want.Tensors {
		g := got.Tensors[i]
		if g.Name != w.Name || fmt.Sprint(g.Shape) != fmt.Sprint(w.Shape) || len(g.Data) != len(w.Data) {
			return fmt.Sprintf("tensor %d is %q %v (%d values), want %q %v (%d)", i, g.Name, g.Shape, len(g.Data), w.Name, w.Shape, len(w.Data))
		}
		for j, v := range w.Data {
			if math.Float32bits(g.Data[j]) != math.Float32bits(v) {
				return fmt.Sprintf("tensor %q[%d] = %v, want %v", w.Name, j, g.Data[j], v)
			}
		}
	}
	return ""
}

// TestSpill checks that a spilled update reads back as it was sent, that
// its norm is model.DeltaNorm's bit for bit, that shrinking it as it is
// read is model.ShrinkDelta, and that a bad update leaves no file and the
// reason the in-memory checks give.
func TestSpill(t *testing.T) {
	global := spillGlobal()
	good := global.Clone()
	for i := range good.Tensors {
		for j := range good.Tensors[i].Data {
			good.Tensors[i].Data[j] += float32(j%13) * 0.01
		}
	}
	nan := good.Clone()
	nan.Tensors[1].Data[2] = float32(math.NaN())
	shape := &model.Weights{Tensors: []model.Tensor{good.Tensors[0], {Name: "t1", Shape: []int{1, 5}, Data: good.Tensors[1].Data}}}
	tests := []struct {
		name             string
		update           *model.Weights
		wantIncompatible error
		wantNonFinite    error
	}{
		{"good", good, nil, nil},
		{"nan", nan, nil, nan.CheckFinite()},
		{"shape", shape, global.Compatible(shape), nil},
	}
	sources := map[string]globalSource{"memory": sourceOf(global), "blob": globalOnDisk(t, global)}
	for _, tt := range tests {
		for src, gs := range sources {
			t.Run(tt.name+"/"+src, func(t *testing.T) { spillCase(t, global, gs, tt.update, tt.wantIncompatible, tt.wantNonFinite) })
		}
	}
}

// globalOnDisk returns w as a model kept in a blob file.
func globalOnDisk(t *testing.T, w *model.Weights) *globalFile {
	t.Helper()
	b, err := model.MarshalSafetensors(w, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	gf, err := openGlobalFile(f, hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gf.close)
	return gf
}

// spillCase spills update against gs (global's values) and checks it.
func spillCase(t *testing.T, global *model.Weights, gs globalSource, update *model.Weights, wantIncompatible, wantNonFinite error) {
	dir := t.TempDir()
	b, err := model.MarshalSafetensors(update, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spill(dir, bytes.NewReader(b), int64(len(b)), gs)
	if err != nil {
		t.Fatal(err)
	}
	defer s.remove()
	if fmt.Sprint(s.incompatible) != fmt.Sprint(wantIncompatible) || fmt.Sprint(s.nonFinite) != fmt.Sprint(wantNonFinite) {
		t.Fatalf("spill() = incompatible %v, non-finite %v; want %v, %v", s.incompatible, s.nonFinite, wantIncompatible, wantNonFinite)
	}
	if wantIncompatible != nil || wantNonFinite != nil {
		if s.path != "" || !math.IsNaN(s.deltaNorm) {
			t.Errorf("a refused update kept file %q and norm %v", s.path, s.deltaNorm)
		}
		return
	}
	if want := model.DeltaNorm(update, global); math.Float64bits(s.deltaNorm) != math.Float64bits(want) {
		t.Errorf("spilled delta norm = %v, want DeltaNorm's %v", s.deltaNorm, want)
	}
	got, err := s.decode()
	if err != nil {
		t.Fatal(err)
	}
	if diff := weightsDiff(update, got); diff != "" {
		t.Errorf("decoded spill differs from the update: %s", diff)
	}
	s.shrink = 0.3
	got, err = s.decode()
	if err != nil {
		t.Fatal(err)
	}
	want := update.Clone()
	model.ShrinkDelta(want, global, 0.3)
	if diff := weightsDiff(want, got); diff != "" {
		t.Errorf("shrunk spill differs from ShrinkDelta: %s", diff)
	}
	// Read a block at a time (a robust rule's way), in blocks that do
	// not divide the tensors, it is the same.
	br, err := s.openBlocks()
	if err != nil {
		t.Fatal(err)
	}
	blocks := want.ZerosLike()
	for i, tn := range blocks.Tensors {
		for lo := 0; lo < len(tn.Data); lo += 1000 {
			if err := br.ReadBlock(i, lo, tn.Data[lo:min(len(tn.Data), lo+1000)]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := br.ReadBlock(0, len(blocks.Tensors[0].Data), make([]float32, 1)); err == nil {
		t.Error("ReadBlock past a tensor's end: no error")
	}
	br.Close()
	if diff := weightsDiff(want, blocks); diff != "" {
		t.Errorf("spill read by blocks differs: %s", diff)
	}
	s.remove()
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("%d files left after remove, want none", len(left))
	}
}

// TestSpillRefusesBadBytes checks that an update that cannot be decoded
// is refused as the decoder refuses it, leaving no file.
func TestSpillRefusesBadBytes(t *testing.T) {
	global := spillGlobal()
	b, _ := model.MarshalSafetensors(global, nil)
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"truncated", b[:len(b)/2], model.ErrTruncated},
		{"not safetensors", []byte("hello, world"), model.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := spill(dir, bytes.NewReader(tt.b), int64(len(b)), sourceOf(global))
			if !errors.Is(err, tt.want) {
				t.Errorf("spill() = %v, want %v", err, tt.want)
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("%d files left after a refused update, want none", len(left))
			}
		})
	}
}

// TestSpilledUpdatesGoWithACancelledRound checks that the files of updates
// parked in a round that is cancelled are removed when the round ends.
func TestSpilledUpdatesGoWithACancelledRound(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// site-3 never answers: the two others' updates stay parked, waiting
	// for a third norm for the adaptive bound.
	hang := func(ctx context.Context, _ pb.CoordinatorServiceClient, _ func(*pb.SiteMessage), _ *pb.Task) bool {
		<-ctx.Done()
		return true
	}
	c.startSite(t, ctx, &fakeSite{name: "site-1", update: plusOne(100)})
	c.startSite(t, ctx, &fakeSite{name: "site-2", update: plusOne(100)})
	c.startSite(t, ctx, &fakeSite{name: "site-3", handle: hang})
	j := submit(t, c, fmt.Sprintf(testJob, 3, "10m"))
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if left, _ := os.ReadDir(c.spill); len(left) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the two answering sites' updates never reached the spill dir")
		}
		<-tick.C
	}
	if _, err := c.coord.CancelJob(context.Background(), &pb.CancelJobRequest{JobId: j.GetJobId(), Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if got := waitJob(t, c, j.GetJobId()); got.GetState() != pb.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("job state = %v, want CANCELLED", got.GetState())
	}
	if left, _ := os.ReadDir(c.spill); len(left) != 0 {
		t.Errorf("spill dir after the cancelled round: %d files, want none", len(left))
	}
}

// TestSpillAboveDefault: a coordinator spills updates past 64 KiB by
// default, every update when told to, and past its own bound when given.
func TestSpillAboveDefault(t *testing.T) {
	for _, tt := range []struct{ set, want int64 }{{0, 64 << 10}, {-1, 0}, {1 << 20, 1 << 20}} {
		c := &Coordinator{cfg: Config{SpillAbove: tt.set}}
		if got := c.spillAbove(); got != tt.want {
			t.Errorf("SpillAbove %d: spills past %d bytes, want %d", tt.set, got, tt.want)
		}
	}
}
