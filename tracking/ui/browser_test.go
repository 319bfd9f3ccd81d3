package ui

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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

	ctx, problems := browser(t, bin)

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
	for _, p := range problems() {
		t.Error(p)
	}
}

// browser starts headless Chromium for one test, stopped at its end. The
// returned function lists what the pages logged to the console as errors
// or warnings, and the exceptions they threw.
func browser(t *testing.T, bin string) (context.Context, func() []string) {
	t.Helper()
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
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancel)

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

	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(problems)
	}
}

// TestRegistryInChromium walks the registry as a user does: from the
// models page it follows the model's link (its name needs escaping), then
// version 2's, and finds the lineage from the version to the job, the arm,
// both sites and both datasets' digests. With COHORT_UPDATE_SCREENSHOTS=1 it
// saves docs/ui-models.png, docs/ui-model.png and docs/ui-lineage.png.
func TestRegistryInChromium(t *testing.T) {
	bin := chromium(t)
	f := seedRegistry(t)
	h, err := New(f.store, Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, problems := browser(t, bin)
	shots := os.Getenv("COHORT_UPDATE_SCREENSHOTS") == "1"
	shoot := func(name string) {
		if !shots {
			return
		}
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "ui-"+name+".png"), shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel string) string {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/models"), chromedp.WaitReady(chromedp.CSS("table.models"))); err != nil {
		t.Fatalf("models page: %v", err)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("tr.model").length`)); err != nil || n != 1 {
		t.Errorf("models page: %d models (%v), want 1", n, err)
	}
	if row := text("tr.model"); !strings.Contains(row, registryModelName) || !strings.Contains(row, "@champion → 2") {
		t.Errorf("models page row %q lacks the model's name or its alias", row)
	}
	shoot("models")

	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("tr.model td a")), chromedp.WaitReady(chromedp.CSS("table.versions"))); err != nil {
		t.Fatalf("following the model's link: %v", err)
	}
	if title, _ := chromedp.Run(ctx, chromedp.Title()); title != registryModelName+" · Cohort" {
		t.Errorf("model page title %q, want the model's name", title)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("tr.version").length`)); err != nil || n != 2 {
		t.Errorf("model page: %d versions (%v), want 2", n, err)
	}
	shoot("model")

	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr.version a[href$="/versions/2"]`)), chromedp.WaitReady(chromedp.CSS("table.lineage"))); err != nil {
		t.Fatalf("following version 2's link: %v", err)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("table.lineage tr.site").length`)); err != nil || n != 2 {
		t.Errorf("lineage: %d site rows (%v), want 2", n, err)
	}
	lin := text("table.lineage")
	for _, want := range []string{f.fed.Info.RunName, f.job.Info.RunName, "fed-1", "federated", "site-1", "site-2", testDigest("fed-1", "site-1"), testDigest("fed-1", "site-2"), "fashion-mnist/train"} {
		if !strings.Contains(lin, want) {
			t.Errorf("the lineage lacks %q:\n%s", want, lin)
		}
	}
	if hint := text("pre"); !strings.Contains(hint, "cohort models download 'models:/"+registryModelName+"/2'") {
		t.Errorf("download hint %q", hint)
	}
	shoot("lineage")

	// The job run's link in the lineage leads to the job's run page.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr.lineage-job a`)), chromedp.WaitReady(chromedp.CSS("table.runinfo"))); err != nil {
		t.Fatalf("following the job run's link: %v", err)
	}
	if title, _ := chromedp.Run(ctx, chromedp.Title()); title != f.job.Info.RunName+" · Cohort" {
		t.Errorf("job run page title %q", title)
	}
	for _, p := range problems() {
		t.Error(p)
	}
}
