package plot

import (
	"bytes"
	"context"
	"image/png"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/tracking"
)

func seed(t *testing.T) (*tracking.SQLiteStore, string) {
	t.Helper()
	ctx := context.Background()
	st, err := tracking.OpenSQLite(ctx, filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	exp, _ := st.EnsureExperiment(ctx, "e")
	job, err := st.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "job", Tags: map[string]string{tracking.TagKind: "job"}})
	if err != nil {
		t.Fatal(err)
	}
	for i, arm := range []string{"centralized", "fedavg"} {
		kind := map[int]string{0: "centralized", 1: "federated"}[i]
		a, err := st.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: arm, ParentRunID: job.Info.RunID, StartTime: time.Now().Add(time.Duration(i) * time.Second),
			Tags: map[string]string{tracking.TagKind: kind, tracking.TagArm: arm}})
		if err != nil {
			t.Fatal(err)
		}
		var ms []tracking.Metric
		for r := int64(0); r <= 5; r++ {
			ms = append(ms, tracking.Metric{Key: tracking.MetricTestAccuracy, Value: 0.5 + 0.07*float64(r) - 0.02*float64(i), Timestamp: r, Step: r},
				tracking.Metric{Key: "energy_joules_cumulative", Value: 12 * float64(r), Timestamp: r, Step: r})
		}
		if err := st.LogBatch(ctx, a.Info.RunID, ms, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	return st, job.Info.RunID
}

func TestComparisonFormats(t *testing.T) {
	st, job := seed(t)
	var pngBuf, svgBuf bytes.Buffer
	if err := Comparison(context.Background(), st, job, "png", &pngBuf); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&pngBuf)
	if err != nil {
		t.Fatalf("the PNG does not decode: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 400 {
		t.Errorf("PNG is %v, want about 1320×495", b)
	}
	if err := Comparison(context.Background(), st, job, "svg", &svgBuf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "centralized (per epoch)", "fedavg", "cumulative energy"} {
		if !strings.Contains(svgBuf.String(), want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	if err := Comparison(context.Background(), st, job, "gif", &svgBuf); err == nil || !strings.Contains(err.Error(), "png, svg") {
		t.Errorf("format gif: %v, want an error naming png and svg", err)
	}
	if err := Comparison(context.Background(), st, "nosuchrun", "png", &svgBuf); err == nil {
		t.Error("plot of a missing run: no error")
	}
}
