package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/cohortfl/cohort/tracking"
)

// The tags a Cohort job writes on the model versions it registers.
const (
	tagVersionStrategy      = "cohort.strategy"
	tagVersionFinalAccuracy = "cohort.final_accuracy"
	tagVersionEnergyJoules  = "cohort.energy_joules"
	tagVersionAccPerKJ      = "cohort.accuracy_per_kj"
	tagVersionJobDigest     = "cohort.job_digest"
	tagVersionCohort        = "cohort.version"
	// tagDatasetDigestPrefix is followed by a site's name: the digest of
	// the data that site trained on.
	tagDatasetDigestPrefix = "cohort.dataset_digest."
)

// keyTag is one of the version tags the model page gives a column.
type keyTag struct {
	Key, Label string
	// Num right-aligns the value; Digest shortens it (the full value is
	// its title).
	Num, Digest bool
}

// keyTags are the version tags shown as columns, in order, when any
// version has them.
var keyTags = []keyTag{
	{Key: tracking.TagArm, Label: "arm"},
	{Key: tagVersionStrategy, Label: "strategy"},
	{Key: tagVersionFinalAccuracy, Label: "final acc", Num: true},
	{Key: tagVersionEnergyJoules, Label: "energy J", Num: true},
	{Key: tagVersionAccPerKJ, Label: "acc / kJ", Num: true},
	{Key: tagVersionJobDigest, Label: "job digest", Digest: true},
	{Key: tagVersionCohort, Label: "cohort"},
}

const (
	// registryPageSize is the models, or versions, on one page.
	registryPageSize = 100
	// maxLineageSites bounds the site runs the lineage of one version shows.
	maxLineageSites = 500
)

// failQuery answers a bad query parameter (a filter, a page token) with
// 400 and the store's explanation, and anything else as fail does.
func (h *Handler) failQuery(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, tracking.ErrInvalid) {
		h.render(w, http.StatusBadRequest, "Bad request", nil, errorBody, struct{ What, Err string }{what, err.Error()})
		return
	}
	h.fail(w, what, err)
}

// modelRow is one registered model on the models page.
type modelRow struct {
	Model  tracking.RegisteredModel
	Latest string
}

func (h *Handler) models(w http.ResponseWriter, r *http.Request) {
	q := tracking.RegistryQuery{
		Filter:     r.URL.Query().Get("filter"),
		OrderBy:    []string{"name ASC"},
		MaxResults: h.pageSize,
		PageToken:  r.URL.Query().Get("page_token"),
	}
	models, next, err := h.store.SearchRegisteredModels(r.Context(), q)
	if err != nil {
		h.failQuery(w, "registered models", err)
		return
	}
	rows := make([]modelRow, len(models))
	for i, m := range models {
		rows[i] = modelRow{Model: m, Latest: latestVersion(m.LatestVersions)}
	}
	h.render(w, http.StatusOK, "Registered models", nil, modelsBody, struct {
		Base   string
		Filter string
		Rows   []modelRow
		Next   string
		First  bool
	}{h.base, q.Filter, rows, next, q.PageToken == ""})
}

// latestVersion is the highest version number among versions, "" if none.
func latestVersion(versions []tracking.ModelVersion) string {
	best, bestN := "", int64(-1)
	for _, v := range versions {
		if n, err := strconv.ParseInt(v.Version, 10, 64); err == nil && n > bestN {
			best, bestN = v.Version, n
		}
	}
	return best
}

// versionRow is one version on a model page.
type versionRow struct {
	V       tracking.ModelVersion
	Cells   []string
	Digests []siteDigest
}

// siteDigest is a version's cohort.dataset_digest.<site> tag.
type siteDigest struct{ Site, Digest string }

// datasetDigests returns a version's per-site dataset digests, by site.
func datasetDigests(tags []tracking.Tag) []siteDigest {
	var out []siteDigest
	for _, t := range tags {
		if site, ok := strings.CutPrefix(t.Key, tagDatasetDigestPrefix); ok && site != "" {
			out = append(out, siteDigest{site, t.Value})
		}
	}
	slices.SortFunc(out, func(a, b siteDigest) int { return strings.Compare(a.Site, b.Site) })
	return out
}

// nameFilter is the registry filter selecting the versions of one model:
// the name in single quotes, a quote in it doubled (the store's filter
// syntax, as SQL's).
func nameFilter(name string) string {
	return "name = '" + strings.ReplaceAll(name, "'", "''") + "'"
}

func (h *Handler) model(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	m, err := h.store.GetRegisteredModel(ctx, name)
	if err != nil {
		h.fail(w, "registered model "+strconv.Quote(name), err)
		return
	}
	token := r.URL.Query().Get("page_token")
	versions, next, err := h.store.SearchModelVersions(ctx, tracking.RegistryQuery{
		Filter:     nameFilter(m.Name),
		OrderBy:    []string{"version_number DESC"},
		MaxResults: h.pageSize,
		PageToken:  token,
	})
	if err != nil {
		h.failQuery(w, "versions of "+strconv.Quote(name), err)
		return
	}
	// A key tag gets a column when any version on the page has it.
	var cols []keyTag
	for _, k := range keyTags {
		if slices.ContainsFunc(versions, func(v tracking.ModelVersion) bool { _, ok := tagValue(v.Tags, k.Key); return ok }) {
			cols = append(cols, k)
		}
	}
	rows := make([]versionRow, len(versions))
	anyDigest := false
	for i, v := range versions {
		row := versionRow{V: v, Digests: datasetDigests(v.Tags)}
		for _, c := range cols {
			val, _ := tagValue(v.Tags, c.Key)
			row.Cells = append(row.Cells, val)
		}
		anyDigest = anyDigest || len(row.Digests) > 0
		rows[i] = row
	}
	h.render(w, http.StatusOK, m.Name, []link{{h.base + "/models", "models"}}, modelBody, struct {
		Base      string
		Model     tracking.RegisteredModel
		Cols      []keyTag
		Rows      []versionRow
		AnyDigest bool
		Next      string
		First     bool
	}{h.base, m, cols, rows, anyDigest, next, token == ""})
}

// tagValue is the value of key among tags.
func tagValue(tags []tracking.Tag, key string) (string, bool) {
	for _, t := range tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return "", false
}

// runRef is one run of a lineage: found, deleted, or missing and why.
type runRef struct {
	ID      string
	Href    string
	Run     tracking.Run
	Found   bool
	Deleted bool
	// Missing says why there is no run to show ("" when Found).
	Missing string
}

// siteLine is one site of a lineage: its run, the datasets it trained
// on, and the digest the version's tags record for it.
type siteLine struct {
	Site   string
	Run    runRef
	Inputs []tracking.DatasetInput
	// Tagged is the version's cohort.dataset_digest.<site>, if any.
	Tagged string
	// Match says whether Tagged is the digest of one of Inputs.
	Match bool
}

// lineage is the chain from a model version back to the data.
type lineage struct {
	Arm       runRef
	Job       runRef
	ArmName   string
	ArmKind   string
	Strategy  string
	Sites     []siteLine
	MoreSites bool
	// SitesMissing says why no site runs could be listed ("" if they were).
	SitesMissing string
}

// lookupRun resolves a run ID for the lineage: a store error other than
// not found is logged and shown, never fatal to the page.
func (h *Handler) lookupRun(ctx context.Context, id, none string) runRef {
	ref := runRef{ID: id, Href: h.base + "/runs/" + pathSegment(id)}
	if id == "" {
		ref.Missing = none
		return ref
	}
	run, err := h.store.GetRun(ctx, id)
	switch {
	case errors.Is(err, tracking.ErrNotFound):
		ref.Missing = "run " + id + " no longer exists"
	case err != nil:
		h.log.Warn("ui_lineage_run_unreadable", "run", id, "err", err)
		ref.Missing = "run " + id + " could not be read: " + err.Error()
	default:
		ref.Run, ref.Found = run, true
		ref.Deleted = run.Info.LifecycleStage == tracking.LifecycleDeleted
	}
	return ref
}

// buildLineage follows a version to its arm run, the job run above it,
// and the arm's site runs with their datasets.
func (h *Handler) buildLineage(ctx context.Context, v tracking.ModelVersion) lineage {
	var l lineage
	l.Arm = h.lookupRun(ctx, v.RunID, "the version names no run")
	l.Strategy, _ = tagValue(v.Tags, tagVersionStrategy)
	l.ArmName, _ = tagValue(v.Tags, tracking.TagArm)
	tagged := datasetDigests(v.Tags)
	if !l.Arm.Found {
		l.Job = runRef{Missing: "unknown: the arm run is missing"}
		l.SitesMissing = "unknown: the arm run is missing"
		for _, d := range tagged {
			l.Sites = append(l.Sites, siteLine{Site: d.Site, Run: runRef{Missing: "no site run found"}, Tagged: d.Digest})
		}
		return l
	}
	arm := l.Arm.Run
	if name, ok := arm.Data.Tag(tracking.TagArm); ok {
		l.ArmName = name
	}
	if l.ArmName == "" {
		l.ArmName = arm.Info.RunName
	}
	l.ArmKind, _ = arm.Data.Tag(tracking.TagKind)
	parent, _ := arm.Data.Tag(tracking.TagParentRunID)
	l.Job = h.lookupRun(ctx, parent, "the run has no parent run")

	children, next, err := h.store.SearchRuns(ctx, tracking.RunQuery{ParentRunID: arm.Info.RunID, ViewType: tracking.ViewAll, MaxResults: maxLineageSites})
	if err != nil {
		h.log.Warn("ui_lineage_sites_unreadable", "run", arm.Info.RunID, "err", err)
		l.SitesMissing = "the site runs could not be read: " + err.Error()
	}
	l.MoreSites = next != ""
	bySite := map[string]bool{}
	for _, c := range children {
		site, ok := c.Data.Tag(tracking.TagSite)
		if !ok {
			continue
		}
		s := siteLine{Site: site, Run: runRef{ID: c.Info.RunID, Href: h.base + "/runs/" + pathSegment(c.Info.RunID), Run: c, Found: true, Deleted: c.Info.LifecycleStage == tracking.LifecycleDeleted}, Inputs: c.Inputs}
		l.Sites = append(l.Sites, s)
		bySite[site] = true
	}
	for _, d := range tagged {
		if !bySite[d.Site] {
			l.Sites = append(l.Sites, siteLine{Site: d.Site, Run: runRef{Missing: "no site run found under the arm run"}})
		}
	}
	for i := range l.Sites {
		s := &l.Sites[i]
		for _, d := range tagged {
			if d.Site == s.Site {
				s.Tagged = d.Digest
			}
		}
		s.Match = s.Tagged != "" && slices.ContainsFunc(s.Inputs, func(in tracking.DatasetInput) bool {
			return in.Dataset.Digest == s.Tagged || strings.Contains(in.Dataset.Profile, s.Tagged)
		})
	}
	slices.SortStableFunc(l.Sites, func(a, b siteLine) int {
		return strings.Compare(a.Site, b.Site)
	})
	return l
}

func (h *Handler) modelVersion(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name, ver := r.PathValue("name"), r.PathValue("version")
	v, err := h.store.GetModelVersion(ctx, name, ver)
	if err != nil {
		h.fail(w, fmt.Sprintf("version %s of registered model %q", ver, name), err)
		return
	}
	crumb := []link{{h.base + "/models", "models"}, {h.base + "/models/" + pathSegment(v.Name), v.Name}}
	h.render(w, http.StatusOK, v.Name+" version "+v.Version, crumb, versionBody, struct {
		Base     string
		V        tracking.ModelVersion
		Lineage  lineage
		Download string
		Aliases  []string
	}{h.base, v, h.buildLineage(ctx, v), "cohort models download " + shellQuote("models:/"+v.Name+"/"+v.Version), aliasURIs(v)})
}

// aliasURIs are the models:/<name>@<alias> URIs of a version, shell-quoted.
func aliasURIs(v tracking.ModelVersion) []string {
	out := make([]string, len(v.Aliases))
	for i, a := range v.Aliases {
		out[i] = shellQuote("models:/" + v.Name + "@" + a)
	}
	return out
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// letters, digits and -_./:@%+=,.
func shellQuote(s string) string {
	safe := s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-_./:@%+=,", r))
	})
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
