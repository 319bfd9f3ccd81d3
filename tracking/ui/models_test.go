package ui

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/tracking"
)

// modelPath is the model page of name, escaped as a link carries it.
func modelPath(name string) string { return "/models/" + url.PathEscape(name) }

// versionPath is the page of one version of name.
func versionPath(name, v string) string {
	return modelPath(name) + "/versions/" + url.PathEscape(v)
}

// between is the part of body from the first from to the next to after it,
// "" if either is missing.
func between(body, from, to string) string {
	_, rest, ok := strings.Cut(body, from)
	if !ok {
		return ""
	}
	part, _, ok := strings.Cut(rest, to)
	if !ok {
		return ""
	}
	return part
}

var versionRowRE = regexp.MustCompile(`<tr class="version">`)

func TestRegistryPages(t *testing.T) {
	f := seedRegistry(t)
	h, err := New(f.store, Config{})
	if err != nil {
		t.Fatal(err)
	}
	escaped := "fmnist%20fedavg%20%231%20100%25%3F%20%C3%BC"
	if got := url.PathEscape(registryModelName); got != escaped {
		t.Fatalf("PathEscape(%q) = %q, want %q", registryModelName, got, escaped)
	}
	d1, d2 := testDigest("fed-1", "site-1"), testDigest("fed-1", "site-2")
	tests := []struct {
		name, path string
		status     int
		contains   []string
		lacks      []string
		versions   int // rows of the versions table; -1: do not count
	}{
		{"models", "/models", 200, []string{
			`href="/models/` + escaped + `"`,
			registryModelName,
			`href="/models/` + escaped + `/versions/2">2</a>`, // the latest version
			"@champion → 2",
			"Fashion-MNIST, FedAvg against centralized",
		}, nil, -1},
		{"navigation", "/", 200, []string{`<a href="/models">Models</a>`}, nil, -1},
		{"model", modelPath(registryModelName), 200, []string{
			"Fashion-MNIST, FedAvg against centralized",
			"<th>team</th><td>cohort</td>",
			`href="/models/` + escaped + `/versions/1"`,
			`href="/runs/` + f.fed.Info.RunID + `"`,
			`href="/runs/` + f.central.Info.RunID + `"`,
			"<th>arm</th><th>strategy</th><th>final acc</th><th>energy J</th><th>acc / kJ</th><th>job digest</th><th>cohort</th><th>dataset digests</th>",
			`<td class="num">0.8807</td>`, `<td class="num">2.6688</td>`, `<td class="num">330</td>`,
			"fedavg", "0.9.0",
			`site-1: <code title="` + d1 + `">` + d1[:12] + "…</code>",
			`site-2: <code title="` + d2 + `">` + d2[:12] + "…</code>",
		}, nil, 2},
		{"fed version", versionPath(registryModelName, "2"), 200, []string{
			"fmnist-job",                                 // the job run
			`href="/runs/` + f.job.Info.RunID + `"`,      // linked
			`href="/runs/` + f.fed.Info.RunID + `"`,      // the arm run
			"<b>fed-1</b> · federated · strategy fedavg", // the arm
			`href="/runs/` + f.sites[0].Info.RunID + `"`, `href="/runs/` + f.sites[1].Info.RunID + `"`,
			`"nowrap">site-1</td>`, `"nowrap">site-2</td>`,
			"<code>" + d1 + "</code>", "<code>" + d2 + "</code>",
			"fashion-mnist/train", "training",
			"✓ same",
			"cohort models download &#39;models:/" + registryModelName + "/2&#39;",
			"cohort models download &#39;models:/" + registryModelName + "@champion&#39;",
			f.fed.Info.ArtifactURI + "/model",
			"<th>stage</th><td>None</td>",
			"cohort.dataset_digest.site-1",
		}, []string{`class="missing"`}, -1},
		{"centralized version", versionPath(registryModelName, "1"), 200, []string{
			"<b>centralized</b> · centralized",
			`href="/runs/` + f.job.Info.RunID + `"`,
			"a centralized arm trains on no site",
		}, []string{"✓ same", "champion"}, -1},
		{"run page", "/runs/" + f.fed.Info.RunID, 200, []string{
			"Registered model versions",
			`href="/models/` + escaped + `/versions/2">2</a>`,
			"@champion",
		}, nil, -1},
		{"unknown model", modelPath("no such model"), 404, []string{"not found"}, nil, -1},
		{"unknown version", versionPath(registryModelName, "9"), 404, []string{"not found"}, nil, -1},
		{"version not a number", versionPath(registryModelName, "latest"), 404, nil, nil, -1},
		{"version of an unknown model", versionPath("no such model", "1"), 404, nil, nil, -1},
		{"bad page token", "/models?page_token=%21%21", 400, []string{"page token"}, nil, -1},
		{"bad filter", "/models?filter=" + url.QueryEscape("nosuchfield = 'x'"), 400, nil, nil, -1},
		{"filter matches", "/models?filter=" + url.QueryEscape("name LIKE 'fmnist%'"), 200, []string{registryModelName}, nil, -1},
		{"filter matches nothing", "/models?filter=" + url.QueryEscape("name = 'other'"), 200, []string{"no registered model matches this filter"}, []string{registryModelName}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, h, tt.path)
			if code != tt.status {
				t.Fatalf("GET %s = %d, want %d\n%s", tt.path, code, tt.status, body)
			}
			for _, want := range tt.contains {
				if !strings.Contains(body, want) {
					t.Errorf("GET %s lacks %q", tt.path, want)
				}
			}
			for _, not := range tt.lacks {
				if strings.Contains(body, not) {
					t.Errorf("GET %s has %q", tt.path, not)
				}
			}
			if tt.versions >= 0 {
				if n := len(versionRowRE.FindAllString(body, -1)); n != tt.versions {
					t.Errorf("GET %s lists %d versions, want %d", tt.path, n, tt.versions)
				}
			}
		})
	}
	// The lineage table holds the chain in order: version, its run, the
	// job run, the arm, the sites.
	_, body := get(t, h, versionPath(registryModelName, "2"))
	lin := between(body, `<table class="lineage">`, "<h2>Download</h2>")
	order := []string{"model version", f.fed.Info.RunID, f.job.Info.RunID, "fed-1", "site-1", d1, "site-2", d2}
	at := 0
	for _, s := range order {
		i := strings.Index(lin[at:], s)
		if i < 0 {
			t.Fatalf("the lineage lacks %q after position %d (order %q):\n%s", s, at, order, lin)
		}
		at += i + len(s)
	}
}

// Over a real HTTP server, every link on the models and model pages
// leads to a page that answers 200: names are escaped end to end.
func TestRegistryLinksResolve(t *testing.T) {
	f := seedRegistry(t)
	// A name with both quotes: the model page's filter must quote it.
	quoted := `it's "quoted" 50%`
	if _, err := f.store.CreateRegisteredModel(context.Background(), quoted, "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.CreateModelVersion(context.Background(), tracking.CreateModelVersion{Name: quoted, Source: "file:///tmp/q", RunID: f.central.Info.RunID}); err != nil {
		t.Fatal(err)
	}
	h, _ := New(f.store, Config{BasePath: "/ui"})
	srv := httptest.NewServer(h)
	defer srv.Close()
	hrefRE := regexp.MustCompile(`href="(/ui/(?:models|runs)[^"]*)"`)
	seen := map[string]bool{}
	queue := []string{"/ui/models"}
	for len(queue) > 0 && len(seen) < 50 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		resp, err := http.Get(srv.URL + strings.ReplaceAll(p, "&amp;", "&"))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Errorf("GET %s = %d", p, resp.StatusCode)
			continue
		}
		if strings.HasPrefix(p, "/ui/runs/") {
			continue
		}
		for _, m := range hrefRE.FindAllStringSubmatch(string(body), -1) {
			queue = append(queue, m[1])
		}
	}
	for _, want := range []string{
		"/ui/models/fmnist%20fedavg%20%231%20100%25%3F%20%C3%BC",
		"/ui/models/fmnist%20fedavg%20%231%20100%25%3F%20%C3%BC/versions/2",
		"/ui/runs/" + f.sites[1].Info.RunID,
		"/ui/runs/" + f.job.Info.RunID,
		"/ui/models/it%27s%20%22quoted%22%2050%25/versions/1",
	} {
		if !seen[want] {
			t.Errorf("no link reached %s; followed %d links", want, len(seen))
		}
	}
}

// A lineage with broken links still renders, naming what is missing.
func TestLineageMissingLinks(t *testing.T) {
	f := seedRegistry(t)
	ctx := context.Background()
	store := f.store
	h, _ := New(store, Config{})
	// A run without a parent, and a deleted site run under fed-1.
	lone, err := store.CreateRun(ctx, tracking.CreateRun{ExperimentID: f.job.Info.ExperimentID, Name: "lone"})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.DeleteRun(ctx, f.sites[0].Info.RunID); err != nil {
		t.Fatal(err)
	}
	// site-2 also evaluated on a second dataset.
	evalDigest := testDigest("fed-1", "site-2/test")
	if err := store.LogInputs(ctx, f.sites[1].Info.RunID, []tracking.DatasetInput{{
		Tags:    []tracking.InputTag{{Key: tracking.TagDatasetContext, Value: "evaluation"}},
		Dataset: tracking.Dataset{Name: "fashion-mnist/test", Digest: evalDigest, SourceType: "cohort-site", Source: `{"site":"site-2"}`},
	}}); err != nil {
		t.Fatal(err)
	}
	mk := func(runID string, tags map[string]string) string {
		v, err := store.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: registryModelName, Source: "file:///tmp/model", RunID: runID, Tags: tags})
		if err != nil {
			t.Fatal(err)
		}
		return v.Version
	}
	tests := []struct {
		name     string
		version  string
		contains []string
	}{
		{"deleted site run", "2", []string{f.sites[0].Info.RunID + `</code> <span class="missing">(deleted)</span>`, testDigest("fed-1", "site-1")}},
		{"two inputs", "2", []string{`<td rowspan="2" class="nowrap">site-2</td>`, "<code>" + testDigest("fed-1", "site-2") + "</code>", `<td class="nowrap">fashion-mnist/test</td>`, "<code>" + evalDigest + "</code></td><td>evaluation</td>"}},
		{"no parent", mk(lone.Info.RunID, nil), []string{"the run has no parent run", ">lone</a>"}},
		{"no run", mk("", map[string]string{"cohort.dataset_digest.site-9": "abc"}), []string{"the version names no run", "unknown: the arm run is missing", `"nowrap">site-9</td>`, `no site run found`, ">abc</code>"}},
		{"unknown run", mk("0123456789abcdef0123456789abcdef", nil), []string{"run 0123456789abcdef0123456789abcdef no longer exists"}},
		{"digest differs", mk(f.fed.Info.RunID, map[string]string{"cohort.dataset_digest.site-2": "ffff"}), []string{`title="the version's tag differs from the site run's inputs">ffff</code>`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, h, versionPath(registryModelName, tt.version))
			if code != 200 {
				t.Fatalf("version %s: %d\n%s", tt.version, code, body)
			}
			for _, want := range tt.contains {
				if !strings.Contains(body, want) {
					t.Errorf("version %s lacks %q", tt.version, want)
				}
			}
		})
	}
}

// The models page and the versions table page through the store's page
// tokens, and each page links to the next.
func TestRegistryPaging(t *testing.T) {
	f := seedRegistry(t)
	ctx := context.Background()
	for i := range 4 {
		if _, err := f.store.CreateRegisteredModel(ctx, fmt.Sprintf("m-%d", i), "", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := f.store.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: registryModelName, Source: "file:///tmp/m", RunID: f.fed.Info.RunID}); err != nil {
			t.Fatal(err)
		}
	}
	h, _ := New(f.store, Config{})
	h.pageSize = 2
	nextRE := regexp.MustCompile(`<a href="([^"]*)">(?:next page|older versions)</a>`)
	modelRE := regexp.MustCompile(`<tr class="model"><td><a href="[^"]*">([^<]*)</a>`)
	versionRE := regexp.MustCompile(`<tr class="version"><td class="num"><a href="[^"]*">([^<]*)</a>`)
	for _, tt := range []struct {
		start string
		row   *regexp.Regexp
		want  []string
	}{
		{"/models", modelRE, []string{registryModelName, "m-0", "m-1", "m-2", "m-3"}},
		{modelPath(registryModelName), versionRE, []string{"6", "5", "4", "3", "2", "1"}},
	} {
		var got []string
		p := tt.start
		for pages := 0; p != "" && pages < 10; pages++ {
			code, body := get(t, h, p)
			if code != 200 {
				t.Fatalf("GET %s = %d\n%s", p, code, body)
			}
			rows := tt.row.FindAllStringSubmatch(body, -1)
			if len(rows) > 2 {
				t.Errorf("GET %s has %d rows, more than a page of 2", p, len(rows))
			}
			for _, r := range rows {
				got = append(got, r[1])
			}
			p = ""
			if m := nextRE.FindStringSubmatch(body); m != nil {
				p = strings.ReplaceAll(m[1], "&amp;", "&")
			}
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("paging from %s: %q, want %q", tt.start, got, tt.want)
		}
	}
}

// Hostile model names, descriptions and tags are escaped.
func TestRegistryEscaping(t *testing.T) {
	f := seedRegistry(t)
	ctx := context.Background()
	evil := `"><img src=x onerror=alert(1)>` // model names take no '/'
	if _, err := f.store.CreateRegisteredModel(ctx, evil, `<script>alert(1)</script>`, map[string]string{"k": `<script>alert(1)</script>`}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: evil, Source: `javascript:alert(1)`, RunID: f.fed.Info.RunID, Tags: map[string]string{"cohort.arm": `<script>alert(1)</script>`, "cohort.dataset_digest.site-1": evil}}); err != nil {
		t.Fatal(err)
	}
	h, _ := New(f.store, Config{})
	for _, p := range []string{"/models", modelPath(evil), versionPath(evil, "1")} {
		code, body := get(t, h, p)
		if code != 200 {
			t.Fatalf("GET %s = %d", p, code)
		}
		if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") || strings.Contains(body, `href="javascript`) {
			t.Errorf("GET %s carries unescaped input", p)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"models:/fmnist/2", "models:/fmnist/2"},
		{"models:/a b/1", "'models:/a b/1'"},
		{"models:/it's/1", `'models:/it'\''s/1'`},
		{"models:/ü@champion", "'models:/ü@champion'"},
		{"", "''"},
	} {
		if got := shellQuote(tt.in); got != tt.want {
			t.Errorf("shellQuote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestLatestVersion(t *testing.T) {
	vs := func(ns ...string) []tracking.ModelVersion {
		var out []tracking.ModelVersion
		for _, n := range ns {
			out = append(out, tracking.ModelVersion{Version: n})
		}
		return out
	}
	for _, tt := range []struct {
		in   []tracking.ModelVersion
		want string
	}{
		{nil, ""},
		{vs("3"), "3"},
		{vs("9", "10", "2"), "10"},
		{vs("x", "1"), "1"},
	} {
		if got := latestVersion(tt.in); got != tt.want {
			t.Errorf("latestVersion(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzModelPath requests arbitrary model and version names: the UI answers
// 200 only for the one model there is, 404 or 400 for anything else, and
// never fails or panics.
func FuzzModelPath(f *testing.F) {
	fx := seedRegistry(f)
	h, _ := New(fx.store, Config{})
	based, _ := New(fx.store, Config{BasePath: "/ui"})
	for _, s := range []string{registryModelName, "", "a/b", "%", "..", "x?y#z", "\x00", "ü", "it's \"q\""} {
		f.Add(s, "1")
	}
	f.Add(registryModelName, "2")
	f.Add(registryModelName, "-1")
	f.Add("a%2Fb", "1")
	f.Add(registryModelName, "02")
	f.Fuzz(func(t *testing.T, name, version string) {
		for _, req := range []struct {
			h    http.Handler
			path string
		}{{h, modelPath(name)}, {h, versionPath(name, version)}, {based, "/ui" + modelPath(name)}, {based, "/ui" + versionPath(name, version)}} {
			p := req.path
			rec := httptest.NewRecorder()
			req.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://x"+p, nil))
			switch {
			case rec.Code >= 500:
				t.Fatalf("GET %q = %d: %s", p, rec.Code, rec.Body.String())
			case rec.Code == 200 && name != registryModelName:
				t.Fatalf("GET %q = 200 for a model that does not exist", p)
			}
		}
	})
}

func BenchmarkRegistryPages(b *testing.B) {
	f := seedRegistry(b)
	h, _ := New(f.store, Config{})
	for _, p := range []struct{ name, path string }{
		{"models", "/models"},
		{"model", modelPath(registryModelName)},
		{"lineage", versionPath(registryModelName, "2")},
	} {
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
