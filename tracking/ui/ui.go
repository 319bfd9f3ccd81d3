package ui

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/cohortfl/cohort/tracking"
)

// Store is what the UI reads; [*tracking.SQLiteStore] is one.
type Store interface {
	ListExperiments(ctx context.Context) ([]tracking.Experiment, error)
	GetExperiment(ctx context.Context, id string) (tracking.Experiment, error)
	SearchRuns(ctx context.Context, q tracking.RunQuery) ([]tracking.Run, string, error)
	GetRun(ctx context.Context, runID string) (tracking.Run, error)
	ChildRuns(ctx context.Context, parentRunID string) ([]tracking.Run, error)
	GetMetricHistory(ctx context.Context, runID, key string) ([]tracking.Metric, error)
	ListArtifacts(ctx context.Context, runID, dir string) ([]tracking.FileInfo, error)
	OpenArtifact(ctx context.Context, runID, relPath string) (io.ReadCloser, error)
	SearchRegisteredModels(ctx context.Context, q tracking.RegistryQuery) ([]tracking.RegisteredModel, string, error)
	GetRegisteredModel(ctx context.Context, name string) (tracking.RegisteredModel, error)
	SearchModelVersions(ctx context.Context, q tracking.RegistryQuery) ([]tracking.ModelVersion, string, error)
	GetModelVersion(ctx context.Context, name, version string) (tracking.ModelVersion, error)
}

var _ Store = (*tracking.SQLiteStore)(nil)

// Config configures the UI. The zero value serves at "/" and logs nothing.
type Config struct {
	// Logger receives the UI's errors; nil discards them.
	Logger *slog.Logger
	// BasePath is the path prefix the UI is served under ("" = "/").
	BasePath string
}

// Handler serves the UI's pages. Create it with [New].
type Handler struct {
	store Store
	log   *slog.Logger
	base  string
	mux   *http.ServeMux
	// pageSize is the registry pages' page size (tests shrink it).
	pageSize int
}

// maxChartsPerRun bounds the metric charts on a run page.
const maxChartsPerRun = 60

// maxInlineArtifact bounds the artifacts shown inline on a run page.
const maxInlineArtifact = 64 << 10

// New returns the UI over store.
func New(store Store, cfg Config) (*Handler, error) {
	if store == nil {
		return nil, errors.New("creating the tracking UI: store is nil")
	}
	base := strings.TrimSuffix(cfg.BasePath, "/")
	if base != "" && !strings.HasPrefix(base, "/") {
		return nil, fmt.Errorf("creating the tracking UI: BasePath %q must start with /", cfg.BasePath)
	}
	h := &Handler{store: store, log: cfg.Logger, base: base, mux: http.NewServeMux(), pageSize: registryPageSize}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.mux.HandleFunc("GET /{$}", h.experiments)
	h.mux.HandleFunc("GET /experiments/{id}", h.experiment)
	h.mux.HandleFunc("GET /runs/{id}", h.run)
	h.mux.HandleFunc("GET /runs/{id}/artifacts/{path...}", h.artifact)
	h.mux.HandleFunc("GET /compare/{id}", h.compare)
	h.mux.HandleFunc("GET /models", h.models)
	h.mux.HandleFunc("GET /models/{name}", h.model)
	h.mux.HandleFunc("GET /models/{name}/versions/{version}", h.modelVersion)
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.base != "" {
		p, ok := strings.CutPrefix(r.URL.Path, h.base)
		if !ok {
			http.NotFound(w, r)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + strings.TrimPrefix(p, "/")
		r = r2
	}
	h.mux.ServeHTTP(w, r)
}

// page is what the layout renders around a page's content.
type page struct {
	Title string
	Base  string
	Crumb []link
	Body  template.HTML
}

type link struct{ Href, Text string }

func (h *Handler) render(w http.ResponseWriter, status int, title string, crumb []link, body *template.Template, data any) {
	var content bytes.Buffer
	if err := body.Execute(&content, data); err != nil {
		h.log.Error("ui_render_failed", "page", title, "err", err)
		http.Error(w, "rendering the page failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	var out bytes.Buffer
	if err := layout.Execute(&out, page{Title: title, Base: h.base, Crumb: crumb, Body: template.HTML(content.String())}); err != nil {
		http.Error(w, "rendering the page failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:")
	w.WriteHeader(status)
	_, _ = w.Write(out.Bytes())
}

// fail answers with an error page: 404 for what does not exist, 500 else.
func (h *Handler) fail(w http.ResponseWriter, what string, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, tracking.ErrNotFound) || errors.Is(err, tracking.ErrInvalid) {
		status = http.StatusNotFound
	} else {
		h.log.Error("ui_read_failed", "what", what, "err", err)
	}
	h.render(w, status, "Not found", nil, errorBody, struct{ What, Err string }{what, err.Error()})
}

func (h *Handler) experiments(w http.ResponseWriter, r *http.Request) {
	exps, err := h.store.ListExperiments(r.Context())
	if err != nil {
		h.fail(w, "experiments", err)
		return
	}
	h.render(w, http.StatusOK, "Experiments", nil, experimentsBody, struct {
		Base string
		Exps []tracking.Experiment
	}{h.base, exps})
}

// node is one run of a run tree.
type node struct {
	Run      tracking.Run
	Depth    int
	Kind     string
	Duration string
	Acc      string
	Energy   string
}

func (h *Handler) experiment(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	exp, err := h.store.GetExperiment(ctx, r.PathValue("id"))
	if err != nil {
		h.fail(w, "experiment "+r.PathValue("id"), err)
		return
	}
	runs, _, err := h.store.SearchRuns(ctx, tracking.RunQuery{ExperimentIDs: []string{exp.ExperimentID}, MaxResults: tracking.MaxSearchResults})
	if err != nil {
		h.fail(w, "runs of "+exp.Name, err)
		return
	}
	h.render(w, http.StatusOK, exp.Name, []link{{h.base + "/", "experiments"}}, experimentBody, struct {
		Base string
		Exp  tracking.Experiment
		Tree []node
	}{h.base, exp, runTree(runs)})
}

// runTree orders runs as a tree: each root (a run without a parent in the
// list), newest first, followed by its children, oldest first, depth-first.
func runTree(runs []tracking.Run) []node {
	byID := make(map[string]bool, len(runs))
	for _, r := range runs {
		byID[r.Info.RunID] = true
	}
	children := make(map[string][]tracking.Run)
	var roots []tracking.Run
	for _, r := range runs {
		p, ok := r.Data.Tag(tracking.TagParentRunID)
		if ok && byID[p] {
			children[p] = append(children[p], r)
		} else {
			roots = append(roots, r)
		}
	}
	var out []node
	var walk func(r tracking.Run, depth int)
	walk = func(r tracking.Run, depth int) {
		n := node{Run: r, Depth: depth, Duration: formatDuration(r.Info.StartTime, r.Info.EndTime)}
		n.Kind, _ = r.Data.Tag(tracking.TagKind)
		if m, ok := r.Data.Metric(tracking.MetricTestAccuracy); ok {
			n.Acc = formatValue(m.Value)
		} else if m, ok := r.Data.Metric(tracking.MetricEvalAccuracy); ok {
			n.Acc = formatValue(m.Value)
		}
		if m, ok := r.Data.Metric(tracking.MetricEnergyJoulesCumulative); ok {
			n.Energy = formatValue(m.Value)
		}
		out = append(out, n)
		kids := children[r.Info.RunID]
		sort.SliceStable(kids, func(a, b int) bool {
			if !kids[a].Info.StartTime.Equal(kids[b].Info.StartTime) {
				return kids[a].Info.StartTime.Before(kids[b].Info.StartTime)
			}
			return kids[a].Info.RunName < kids[b].Info.RunName
		})
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return out
}

// chart is one rendered chart with its heading.
type chart struct {
	Key string
	SVG template.HTML
}

// artifactView is one artifact on a run page, with its text when small.
type artifactView struct {
	tracking.FileInfo
	Text string
}

func (h *Handler) run(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	run, err := h.store.GetRun(ctx, r.PathValue("id"))
	if err != nil {
		h.fail(w, "run "+r.PathValue("id"), err)
		return
	}
	var charts []chart
	for i, m := range run.Data.Metrics {
		if i == maxChartsPerRun {
			break
		}
		hist, err := h.store.GetMetricHistory(ctx, run.Info.RunID, m.Key)
		if err != nil {
			h.fail(w, "metric "+m.Key, err)
			return
		}
		charts = append(charts, chart{Key: m.Key, SVG: lineChart(m.Key, "step", m.Key, []series{historySeries(m.Key, hist)})})
	}
	arts, err := h.listArtifacts(ctx, run.Info.RunID, "", 3)
	if err != nil {
		h.log.Warn("ui_artifacts_unreadable", "run", run.Info.RunID, "err", err)
	}
	crumb := []link{{h.base + "/", "experiments"}, {h.base + "/experiments/" + run.Info.ExperimentID, "experiment " + run.Info.ExperimentID}}
	if p, ok := run.Data.Tag(tracking.TagParentRunID); ok {
		crumb = append(crumb, link{h.base + "/runs/" + p, "parent run"})
	}
	kind, _ := run.Data.Tag(tracking.TagKind)
	children, err := h.store.ChildRuns(ctx, run.Info.RunID)
	if err != nil {
		h.fail(w, "child runs", err)
		return
	}
	// The model versions registered from this run; the page stands
	// without them.
	versions, _, err := h.store.SearchModelVersions(ctx, tracking.RegistryQuery{Filter: "run_id = '" + run.Info.RunID + "'", OrderBy: []string{"name ASC", "version_number ASC"}, MaxResults: h.pageSize})
	if err != nil {
		h.log.Warn("ui_model_versions_unreadable", "run", run.Info.RunID, "err", err)
	}
	h.render(w, http.StatusOK, run.Info.RunName, crumb, runBody, struct {
		Base      string
		Run       tracking.Run
		Duration  string
		IsJob     bool
		Children  []tracking.Run
		Charts    []chart
		Artifacts []artifactView
		Versions  []tracking.ModelVersion
	}{h.base, run, formatDuration(run.Info.StartTime, run.Info.EndTime), kind == "job", children, charts, arts, versions})
}

// listArtifacts lists a run's artifacts depth-first, down to depth levels.
func (h *Handler) listArtifacts(ctx context.Context, runID, dir string, depth int) ([]artifactView, error) {
	files, err := h.store.ListArtifacts(ctx, runID, dir)
	if err != nil {
		return nil, err
	}
	var out []artifactView
	for _, f := range files {
		if f.IsDir {
			if depth > 0 {
				sub, err := h.listArtifacts(ctx, runID, f.Path, depth-1)
				if err != nil {
					return out, err
				}
				out = append(out, sub...)
			}
			continue
		}
		v := artifactView{FileInfo: f}
		if ext := path.Ext(f.Path); (ext == ".txt" || ext == ".json") && f.FileSize <= maxInlineArtifact && len(out) < 20 {
			if rc, err := h.store.OpenArtifact(ctx, runID, f.Path); err == nil {
				b, _ := io.ReadAll(io.LimitReader(rc, maxInlineArtifact))
				rc.Close()
				v.Text = string(b)
			}
		}
		out = append(out, v)
	}
	return out, nil
}

func (h *Handler) artifact(w http.ResponseWriter, r *http.Request) {
	rc, err := h.store.OpenArtifact(r.Context(), r.PathValue("id"), r.PathValue("path"))
	if err != nil {
		h.fail(w, "artifact "+r.PathValue("path"), err)
		return
	}
	defer rc.Close()
	ct := mime.TypeByExtension(path.Ext(r.PathValue("path")))
	if ct == "" || strings.HasPrefix(ct, "text/html") {
		ct = "application/octet-stream"
	}
	if slices.Contains([]string{".txt", ".json", ".log", ".yaml"}, path.Ext(r.PathValue("path"))) {
		ct = "text/plain; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = io.Copy(w, rc)
}

// historySeries turns a metric's history into one series, the latest point
// of each step.
func historySeries(name string, hist []tracking.Metric) series {
	s := series{Name: name}
	last := map[int64]int{}
	for _, m := range hist {
		if i, ok := last[m.Step]; ok {
			if m.Timestamp >= s.Points[i].ts {
				s.Points[i] = point{X: float64(m.Step), Y: m.Value, ts: m.Timestamp}
			}
			continue
		}
		last[m.Step] = len(s.Points)
		s.Points = append(s.Points, point{X: float64(m.Step), Y: m.Value, ts: m.Timestamp})
	}
	sort.Slice(s.Points, func(a, b int) bool { return s.Points[a].X < s.Points[b].X })
	return s
}
