package ui

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromium finds a headless-capable Chromium; CI installs Debian's.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH; .ci/run installs Debian's chromium for this test")
	}
	t.Skip("no chromium on PATH (apt-get install chromium)")
	return ""
}

// TestPagesInChromium loads every page in headless Chromium: each renders,
// its charts have the expected number of series, and nothing is logged to
// the console. With COHORT_UPDATE_SCREENSHOTS=1 it saves docs/ui-*.png.
func TestPagesInChromium(t *testing.T) {
	bin := chromium(t)
	store, job := seedJob(t, "fashion-mnist", 2, 4, 20)
	h, err := New(store, Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	run, _ := store.GetRun(context.Background(), job)
	arms, _ := store.ChildRuns(context.Background(), job)
	sites, _ := store.ChildRuns(context.Background(), arms[1].Info.RunID)

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	var mu sync.Mutex
	var problems []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning {
				problems = append(problems, fmt.Sprintf("console %s: %v", e.Type, e.Args))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+e.ExceptionDetails.Text)
		}
	}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}

	pages := []struct {
		name, path     string
		series, charts int
	}{
		{"experiments", "/", 0, 0},
		{"runs", "/experiments/" + run.Info.ExperimentID, 0, 0},
		{"run", "/runs/" + sites[0].Info.RunID, 4, 4},
		{"compare", "/compare/" + job, 6, 4 + 2*3},
	}
	shots := os.Getenv("COHORT_UPDATE_SCREENSHOTS") == "1"
	for _, p := range pages {
		if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+p.path), chromedp.WaitReady(chromedp.CSS("main"))); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		title, err := chromedp.Run(ctx, chromedp.Title())
		if err != nil {
			t.Fatal(err)
		}
		series, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("svg.chart path.series").length`))
		if err != nil {
			t.Fatal(err)
		}
		charts, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("svg.chart").length`))
		if err != nil {
			t.Fatal(err)
		}
		if series != p.series || charts != p.charts {
			t.Errorf("%s (%s): %d charts with %d series, want %d charts with %d series", p.name, title, charts, series, p.charts, p.series)
		}
		if shots {
			shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("..", "..", "docs", "ui-"+p.name+".png"), shot, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Error(p)
	}
}
