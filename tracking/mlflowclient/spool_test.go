package mlflowclient

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// TestServerDownMidJob is the scenario: the tracking server goes
// away in the middle of a job and comes back. No call stalls, a run
// created meanwhile gets a placeholder, and every point arrives once, in
// order.
func TestServerDownMidJob(t *testing.T) {
	for _, mode := range []struct {
		name string
		down int
	}{{"connections dropped", 2}, {"503", 1}} {
		t.Run(mode.name, func(t *testing.T) {
			f, srv := startFake(t)
			c := newTestClient(t, testConfig(t, srv.URL))
			stop := runInBackground(t, c)
			ctx := t.Context()
			exp, err := c.EnsureExperiment(ctx, "e")
			if err != nil {
				t.Fatal(err)
			}
			job, _ := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "job"})
			arm, _ := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "fedavg", ParentRunID: job.Info.RunID})
			var site, site2 tracking.Run
			var slowest time.Duration
			for r := 1; r <= 30; r++ {
				switch r {
				case 10:
					f.setDown(mode.down)
				case 20:
					f.setDown(0)
				}
				start := time.Now()
				if r == 12 {
					if site, err = c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "fedavg/site-1", ParentRunID: arm.Info.RunID}); err != nil {
						t.Fatalf("CreateRun during the outage: %v", err)
					}
					// A child of a run that is itself still a placeholder.
					if site2, err = c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "fedavg/site-1/sub", ParentRunID: site.Info.RunID}); err != nil {
						t.Fatalf("CreateRun during the outage: %v", err)
					}
				}
				if err := c.LogBatch(ctx, arm.Info.RunID, metrics(tracking.MetricTestAccuracy, r, r), nil, nil); err != nil {
					t.Fatalf("LogBatch round %d: %v", r, err)
				}
				if r >= 12 {
					if err := c.LogBatch(ctx, site.Info.RunID, metrics(tracking.MetricTrainLoss, r, r), nil, nil); err != nil {
						t.Fatalf("LogBatch round %d: %v", r, err)
					}
				}
				if r != 12 {
					slowest = max(slowest, time.Since(start))
				}
				time.Sleep(2 * time.Millisecond) // rounds take time; the flusher runs meanwhile
			}
			if err := c.UpdateRun(ctx, site.Info.RunID, tracking.StatusFinished, time.Now(), ""); err != nil {
				t.Fatal(err)
			}
			if !isPlaceholder(site.Info.RunID) {
				t.Errorf("site run created during the outage has ID %q, want a placeholder", site.Info.RunID)
			}
			if slowest > time.Second {
				t.Errorf("slowest LogBatch = %v, want no stall", slowest)
			}
			flush(t, c)
			stop()
			if diff := cmp.Diff(metrics(tracking.MetricTestAccuracy, 1, 30), f.history(arm.Info.RunID, tracking.MetricTestAccuracy)); diff != "" {
				t.Errorf("arm points on the server (-want +got):\n%s", diff)
			}
			got, err := c.GetRun(ctx, site.Info.RunID)
			if err != nil {
				t.Fatalf("GetRun(placeholder): %v", err)
			}
			if p, _ := got.Data.Tag(tracking.TagParentRunID); p != arm.Info.RunID || got.Info.Status != tracking.StatusFinished {
				t.Errorf("site run: parent %q, status %s; want %q, FINISHED", p, got.Info.Status, arm.Info.RunID)
			}
			if diff := cmp.Diff(metrics(tracking.MetricTrainLoss, 12, 30), f.history(got.Info.RunID, tracking.MetricTrainLoss)); diff != "" {
				t.Errorf("site points on the server (-want +got):\n%s", diff)
			}
			sub, err := c.GetRun(ctx, site2.Info.RunID)
			if p, _ := sub.Data.Tag(tracking.TagParentRunID); err != nil || p != got.Info.RunID {
				t.Errorf("nested placeholder's parent = %q, %v; want %q", p, err, got.Info.RunID)
			}
			children, err := c.ChildRuns(ctx, arm.Info.RunID)
			if err != nil || len(children) != 1 || children[0].Info.RunID != got.Info.RunID {
				t.Errorf("ChildRuns(arm) = %v, %v; want the site run", children, err)
			}
			if s := c.Stats(); s.Pending != 0 || s.Refused != 0 || s.Unreachable {
				t.Errorf("Stats = %+v, want nothing pending or refused", s)
			}
		})
	}
}

// TestRestartReplaysSpool: a process that could not reach the server
// leaves its writes in the spool, and the next one sends them.
func TestRestartReplaysSpool(t *testing.T) {
	f, srv := startFake(t)
	cfg := testConfig(t, srv.URL)
	ctx := t.Context()
	c1 := newTestClient(t, cfg)
	exp, _ := c1.EnsureExperiment(ctx, "e")
	job, _ := c1.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "job"})
	f.setDown(1)
	child, err := c1.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "arm", ParentRunID: job.Info.RunID})
	if err != nil || !isPlaceholder(child.Info.RunID) {
		t.Fatalf("CreateRun with the server down = %v, %v; want a placeholder", child.Info.RunID, err)
	}
	for r := 1; r <= 5; r++ {
		_ = c1.LogBatch(ctx, child.Info.RunID, metrics("acc", r, r), nil, nil)
		_ = c1.LogBatch(ctx, job.Info.RunID, metrics("elapsed", r, r), nil, nil)
	}
	_ = c1.UpdateRun(ctx, child.Info.RunID, tracking.StatusFinished, time.UnixMilli(1700000099000), "")
	shortCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if err := c1.Flush(shortCtx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "still spooled") {
		t.Errorf("Flush with the server down = %v, want the deadline and what is left", err)
	}
	cancel()
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	f.setDown(0)
	c2 := newTestClient(t, cfg)
	if s := c2.Stats(); s.Pending != 12 {
		t.Errorf("after restart Stats = %+v, want 12 pending", s)
	}
	flush(t, c2)
	var real string
	f.mu.Lock()
	for id, r := range f.runs {
		if r.tags[tracking.TagRunName] == "arm" {
			real = id
		}
	}
	f.mu.Unlock()
	if real == "" {
		t.Fatal("the spooled run was never created")
	}
	if diff := cmp.Diff(metrics("acc", 1, 5), f.history(real, "acc")); diff != "" {
		t.Errorf("replayed points (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(metrics("elapsed", 1, 5), f.history(job.Info.RunID, "elapsed")); diff != "" {
		t.Errorf("replayed points (-want +got):\n%s", diff)
	}
	f.mu.Lock()
	r := f.runs[real]
	if r.tags[tracking.TagParentRunID] != job.Info.RunID || r.info.Status != "FINISHED" {
		t.Errorf("replayed run: parent %q, status %s", r.tags[tracking.TagParentRunID], r.info.Status)
	}
	f.mu.Unlock()
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	c3 := newTestClient(t, cfg)
	if s := c3.Stats(); s.Pending != 0 {
		t.Errorf("third open: Stats = %+v, want nothing pending (sent once)", s)
	}
	if n := f.countCalls("POST runs/create"); n != 2 {
		t.Errorf("runs/create calls = %d, want 2", n)
	}
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestCorruptSpoolTail(t *testing.T) {
	tests := []struct {
		name        string
		damage      func(b []byte) []byte
		wantPending int
	}{
		{"torn last record", func(b []byte) []byte { return b[:len(b)-5] }, 2},
		{"flipped bit in last record", func(b []byte) []byte { b[len(b)-3] ^= 0x10; return b }, 2},
		{"garbage appended", func(b []byte) []byte { return append(b, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5) }, 3},
		{"huge length", func(b []byte) []byte { return append(b, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0) }, 3},
		{"bad magic", func(b []byte) []byte { copy(b, "XXXXXXXX"); return b }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := startFake(t)
			cfg := testConfig(t, srv.URL)
			ctx := t.Context()
			c1 := newTestClient(t, cfg)
			run, _ := c1.CreateRun(ctx, tracking.CreateRun{})
			f.setDown(1)
			for r := 1; r <= 3; r++ {
				if err := c1.LogBatch(ctx, run.Info.RunID, metrics("a", r, r), nil, nil); err != nil {
					t.Fatal(err)
				}
			}
			c1.Close()
			segs := segFiles(t, cfg.SpoolDir)
			last := segs[len(segs)-1]
			b, err := os.ReadFile(last)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(last, tt.damage(b), 0o600); err != nil {
				t.Fatal(err)
			}
			f.setDown(0)
			c2 := newTestClient(t, cfg)
			s := c2.Stats()
			if s.Pending != tt.wantPending || s.CorruptBytes == 0 {
				t.Errorf("Stats after damage = %+v, want %d pending and corrupt bytes reported", s, tt.wantPending)
			}
			flush(t, c2)
			if diff := cmp.Diff(metrics("a", 1, tt.wantPending), f.history(run.Info.RunID, "a"), cmp.Transformer("nil", func(m []tracking.Metric) []tracking.Metric {
				if len(m) == 0 {
					return nil
				}
				return m
			})); diff != "" {
				t.Errorf("points that survived (-want +got):\n%s", diff)
			}
			// The damaged segment is cut (or set aside); a third open finds it clean.
			c2.Close()
			c3 := newTestClient(t, cfg)
			if s := c3.Stats(); s.CorruptBytes != 0 || s.Pending != 0 {
				t.Errorf("third open: Stats = %+v, want clean and empty", s)
			}
		})
	}
}

func TestSpoolFull(t *testing.T) {
	f, srv := startFake(t)
	cfg := testConfig(t, srv.URL)
	cfg.SpoolMaxBytes = 8 << 10
	cfg.SegmentBytes = 2 << 10
	c := newTestClient(t, cfg)
	ctx := t.Context()
	run, _ := c.CreateRun(ctx, tracking.CreateRun{})
	f.setDown(1)
	var err error
	n := 0
	for ; n < 1000; n++ {
		if err = c.LogBatch(ctx, run.Info.RunID, metrics("a", 10*n+1, 10*n+10), nil, nil); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrSpoolFull) || !strings.Contains(err.Error(), "SpoolMaxBytes") || n < 5 {
		t.Fatalf("after %d writes LogBatch = %v, want ErrSpoolFull naming SpoolMaxBytes", n, err)
	}
	if s := c.Stats(); s.Bytes > cfg.SpoolMaxBytes {
		t.Errorf("spool holds %d bytes, over its bound %d", s.Bytes, cfg.SpoolMaxBytes)
	}
	// Writes refused for want of room do not pile up segment files.
	for range 20 {
		if err := c.LogBatch(ctx, run.Info.RunID, metrics("a", 10*n+1, 10*n+10), nil, nil); !errors.Is(err, ErrSpoolFull) {
			t.Fatalf("LogBatch on a full spool = %v, want ErrSpoolFull", err)
		}
	}
	if segs, want := segFiles(t, cfg.SpoolDir), int(cfg.SpoolMaxBytes/cfg.SegmentBytes)+2; len(segs) > want {
		t.Errorf("full spool has %d segment files, want ≤ %d", len(segs), want)
	}
	// The server comes back: what was spooled arrives, and there is room again.
	f.setDown(0)
	flush(t, c)
	if got := len(f.history(run.Info.RunID, "a")); got != 10*n {
		t.Errorf("points on the server = %d, want %d", got, 10*n)
	}
	if err := c.LogBatch(ctx, run.Info.RunID, metrics("b", 1, 1), nil, nil); err != nil {
		t.Errorf("LogBatch after the spool drained = %v", err)
	}
}

func TestSpoolSegmentsAreReclaimed(t *testing.T) {
	f, srv := startFake(t)
	cfg := testConfig(t, srv.URL)
	cfg.SegmentBytes = 4 << 10
	c := newTestClient(t, cfg)
	stop := runInBackground(t, c)
	ctx := t.Context()
	run, _ := c.CreateRun(ctx, tracking.CreateRun{})
	for i := range 200 {
		if i == 50 {
			f.setDown(1)
		}
		if i == 150 {
			f.setDown(0)
		}
		if err := c.LogBatch(ctx, run.Info.RunID, metrics("a", 5*i+1, 5*i+5), nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, c)
	stop()
	if diff := cmp.Diff(metrics("a", 1, 1000), f.history(run.Info.RunID, "a")); diff != "" {
		t.Errorf("points (-want +got):\n%s", diff)
	}
	if segs := segFiles(t, cfg.SpoolDir); len(segs) > 2 {
		t.Errorf("spool keeps %d segments after everything was sent, want ≤ 2", len(segs))
	}
	if s := c.Stats(); s.Bytes > 2*cfg.SegmentBytes {
		t.Errorf("spool holds %d bytes after everything was sent", s.Bytes)
	}
}

func TestSpoolLockedByAnotherProcess(t *testing.T) {
	_, srv := startFake(t)
	cfg := testConfig(t, srv.URL)
	newTestClient(t, cfg)
	if _, err := newClient(cfg, noEnv); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second client on one spool = %v, want the lock error", err)
	}
}

func TestRunFinalFlushAndClose(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx, cancel := context.WithCancel(t.Context())
	run, _ := c.CreateRun(ctx, tracking.CreateRun{})
	done := make(chan error, 1)
	f.setDown(1)
	refused := f.refusal()
	go func() { done <- c.Run(ctx) }()
	_ = c.LogBatch(ctx, run.Info.RunID, metrics("a", 1, 3), nil, nil)
	awaitRefusal(t, refused) // Run tried while the server was down
	f.setDown(0)
	cancel() // the final flush sends what is left
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if got := len(f.history(run.Info.RunID, "a")); got != 3 {
		t.Errorf("points after Run returned = %d, want 3", got)
	}
	c.Close()
	if err := c.LogBatch(t.Context(), run.Info.RunID, metrics("a", 4, 4), nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("LogBatch after Close = %v, want ErrClosed", err)
	}
	if err := c.Run(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
}

func FuzzDecodeSegment(f *testing.F) {
	var seg bytes.Buffer
	seg.WriteString(segMagic)
	for _, rec := range []record{
		{Type: recOp, Seq: 1, Op: &op{Kind: opBatch, RunID: "r", Batch: &mlflowwire.LogBatch{RunRef: mlflowwire.RunRef{RunID: "r"}, Metrics: []mlflowwire.Metric{{Key: "a", Value: 1}}}}},
		{Type: recMap, Map: &idMapping{Placeholder: "cohort-pending-1", RunID: "abc"}},
		{Type: recAck, Seq: 1},
		{Type: recOp, Seq: 2, Op: &op{Kind: opArtifact, RunID: "r", Path: "a.json", Artifact: []byte("{}")}},
	} {
		fr, err := encodeFrame(rec)
		if err != nil {
			f.Fatal(err)
		}
		seg.Write(fr)
	}
	f.Add(seg.Bytes())
	f.Add(seg.Bytes()[:seg.Len()-3])
	f.Add([]byte(segMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		frames, good, err := decodeSegment(b)
		if good < 0 || good > int64(len(b)) || (err == nil && good != int64(len(b))) {
			t.Fatalf("decodeSegment: good prefix %d of %d bytes, err %v", good, len(b), err)
		}
		for _, fr := range frames {
			if fr.off+int64(fr.n) > good {
				t.Fatalf("frame at %d+%d beyond the good prefix %d", fr.off, fr.n, good)
			}
			enc, err := encodeFrame(fr.rec)
			if err != nil {
				t.Fatalf("re-encoding a decoded record: %v", err)
			}
			back, n, err := decodeFrame(enc)
			if err != nil || n != len(enc) {
				t.Fatalf("decoding a re-encoded record: %v", err)
			}
			if diff := cmp.Diff(fr.rec, back, cmp.Comparer(func(a, b mlflowwire.Float64) bool { return a == b || (a != a && b != b) })); diff != "" {
				t.Fatalf("record round trip (-decoded +again):\n%s", diff)
			}
		}
	})
}

// TestFlushHeedsContextWhileRunRetries: a Flush that waits for Run's
// drain (retrying with a long backoff) still returns when its ctx ends.
func TestFlushHeedsContextWhileRunRetries(t *testing.T) {
	f, srv := startFake(t)
	cfg := testConfig(t, srv.URL)
	cfg.BackoffFactor, cfg.BackoffMax = 10*time.Second, 10*time.Second
	c := newTestClient(t, cfg)
	run, _ := c.CreateRun(t.Context(), tracking.CreateRun{})
	f.setDown(1)
	refused := f.refusal()
	stop := runInBackground(t, c)
	_ = c.LogBatch(t.Context(), run.Info.RunID, metrics("a", 1, 1), nil, nil)
	awaitRefusal(t, refused) // Run is in its long backoff now
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Flush(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("Flush = %v after %v, want the deadline at once", err, time.Since(start))
	}
	stop() // the final flush gives up after FinalFlushTimeout
	if n := c.Stats().Pending; n != 1 {
		t.Errorf("Pending = %d, want 1 kept for the next process", n)
	}
}

// BenchmarkLogBatch measures spooling and sending 100-metric batches to
// the in-memory fake (one fsync per write and per ack).
func BenchmarkLogBatch(b *testing.B) {
	f := newFake(nil)
	srv := httptest.NewServer(f)
	defer srv.Close()
	c, err := newClient(Config{URI: srv.URL, SpoolDir: b.TempDir()}, noEnv)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	defer c.cfg.HTTPClient.CloseIdleConnections()
	ctx := context.Background()
	run, err := c.CreateRun(ctx, tracking.CreateRun{})
	if err != nil {
		b.Fatal(err)
	}
	ms := metrics("a", 1, 100)
	b.ResetTimer()
	for b.Loop() {
		if err := c.LogBatch(ctx, run.Info.RunID, ms, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N*len(ms))/b.Elapsed().Seconds(), "points/s")
}

// awaitRefusal waits for the fake to refuse a request.
func awaitRefusal(t *testing.T, refused <-chan struct{}) {
	t.Helper()
	select {
	case <-refused:
	case <-time.After(30 * time.Second):
		t.Fatal("the client sent nothing to the server that was down in 30 s")
	}
}
