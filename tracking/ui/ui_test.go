package ui

import (
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/tracking"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

var seriesRE = regexp.MustCompile(`<path class="series"`)

func TestPages(t *testing.T) {
	store, job := seedJob(t, "fmnist", 2, 3, 5)
	h, err := New(store, Config{})
	if err != nil {
		t.Fatal(err)
	}
	jobRun, err := store.GetRun(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	arms, _ := store.ChildRuns(context.Background(), job)
	sites, _ := store.ChildRuns(context.Background(), arms[1].Info.RunID)
	tests := []struct {
		path     string
		status   int
		contains []string
		series   int // <path class="series"> elements; -1: do not count
		bars     int // <rect class="bar"> elements; -1: do not count
	}{
		{"/", 200, []string{"fmnist", "/experiments/" + jobRun.Info.ExperimentID}, 0, 0},
		{"/experiments/" + jobRun.Info.ExperimentID, 200, []string{"centralized", "fed-1/site-3", "/compare/" + job, "FINISHED"}, 0, 0},
		// 3 arms on the accuracy chart and on accuracy-vs-energy; bars: energy
		// and time for 3 arms, and samples, time, energy for 3 sites of each
		// of the 2 federated arms.
		{"/compare/" + job, 200, []string{"test accuracy against cumulative energy", "fed-2: sites", "final acc"}, 6, 3*2 + 2*3*3},
		// A site run: one chart per metric (4), its dataset input.
		{"/runs/" + sites[0].Info.RunID, 200, []string{"fashion-mnist/train", "training", "train_loss"}, 4, 0},
		{"/runs/nosuchrun", 404, []string{"not found"}, -1, -1},
		{"/experiments/987654", 404, nil, -1, -1},
		{"/compare/nosuchrun", 404, nil, -1, -1},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := get(t, h, tt.path)
			if code != tt.status {
				t.Fatalf("GET %s = %d, want %d\n%s", tt.path, code, tt.status, body)
			}
			for _, want := range tt.contains {
				if !strings.Contains(body, want) {
					t.Errorf("GET %s lacks %q", tt.path, want)
				}
			}
			if tt.series >= 0 {
				if n := len(seriesRE.FindAllString(body, -1)); n != tt.series {
					t.Errorf("GET %s has %d line series, want %d", tt.path, n, tt.series)
				}
			}
			if tt.bars >= 0 {
				if n := strings.Count(body, `<rect class="bar"`); n != tt.bars {
					t.Errorf("GET %s has %d bars, want %d", tt.path, n, tt.bars)
				}
			}
		})
	}
}

// Hostile names are escaped everywhere, in HTML and in SVG.
func TestEscaping(t *testing.T) {
	store, job := seedJob(t, `<script>alert(1)</script>`, 1, 1, 2)
	ctx := context.Background()
	if err := store.LogBatch(ctx, job, nil, []tracking.Param{{Key: "x", Value: `"><img src=x onerror=alert(1)>`}}, nil); err != nil {
		t.Fatal(err)
	}
	h, _ := New(store, Config{})
	run, _ := store.GetRun(ctx, job)
	for _, p := range []string{"/", "/experiments/" + run.Info.ExperimentID, "/runs/" + job, "/compare/" + job} {
		_, body := get(t, h, p)
		if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") {
			t.Errorf("GET %s carries unescaped input", p)
		}
	}
}

// A run with NaN and infinite points, and one with no metrics, still
// renders.
func TestOddData(t *testing.T) {
	store, job := seedJob(t, "odd", 1, 1, 3)
	ctx := context.Background()
	nan := []tracking.Metric{{Key: "weird", Value: 1, Timestamp: 1, Step: 0}, {Key: "weird", Value: math.NaN(), Timestamp: 2, Step: 1}, {Key: "weird", Value: math.Inf(1), Timestamp: 3, Step: 2}}
	if err := store.LogBatch(ctx, job, nan, nil, nil); err != nil {
		t.Fatal(err)
	}
	h, _ := New(store, Config{})
	if code, body := get(t, h, "/runs/"+job); code != 200 || !strings.Contains(body, "weird") {
		t.Errorf("run with NaN metrics: %d", code)
	}
	run, _ := store.GetRun(ctx, job)
	empty, err := store.CreateRun(ctx, tracking.CreateRun{ExperimentID: run.Info.ExperimentID, Name: "empty"})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, h, "/runs/"+empty.Info.RunID); code != 200 {
		t.Errorf("run without metrics: %d", code)
	}
	if code, body := get(t, h, "/compare/"+empty.Info.RunID); code != 200 || !strings.Contains(body, "no finite values") {
		t.Errorf("comparison of a run without arms: %d", code)
	}
}

func TestBasePath(t *testing.T) {
	store, _ := seedJob(t, "based", 1, 1, 1)
	h, err := New(store, Config{BasePath: "/ui"})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, h, "/ui/"); code != 200 || !strings.Contains(body, `href="/ui/experiments/`) {
		t.Errorf("GET /ui/ = %d, links not under /ui", code)
	}
	if code, body := get(t, h, "/ui/models"); code != 200 || !strings.Contains(body, `href="/ui/models"`) {
		t.Errorf("GET /ui/models = %d, links not under /ui", code)
	}
	// An escaped slash stays inside one segment: no model has that name.
	if code, _ := get(t, h, "/ui/models/a%2Fb/versions/1"); code != 404 {
		t.Errorf("GET /ui/models/a%%2Fb/versions/1 = %d, want 404", code)
	}
	if _, err := New(store, Config{BasePath: "ui"}); err == nil {
		t.Error("BasePath without a leading slash accepted")
	}
}

func BenchmarkComparisonPage(b *testing.B) {
	store, job := seedJob(b, "bench", 2, 10, 100) // 3 arms (1 centralized) × 10 sites × 100 rounds
	h, _ := New(store, Config{})
	run, _ := store.GetRun(context.Background(), job)
	for _, p := range []struct{ name, path string }{{"compare", "/compare/" + job}, {"tree", "/experiments/" + run.Info.ExperimentID}} {
		b.Run(p.name, func(b *testing.B) {
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p.path, nil))
				if rec.Code != 200 {
					b.Fatal(rec.Code)
				}
			}
		})
	}
}

func TestNiceTicksEnclose(t *testing.T) {
	for _, r := range [][2]float64{{0.38, 0.88}, {0, 1}, {-3.2, 7.9}, {10, 240}, {5, 5}} {
		ts := niceTicks(r[0], r[1], 5)
		if len(ts) < 2 || ts[0] > r[0] || ts[len(ts)-1] < r[1] {
			t.Errorf("niceTicks(%v, %v) = %v: does not enclose the range", r[0], r[1], ts)
		}
	}
}
