package tracking

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

func mustModel(t testing.TB, s *SQLiteStore, name string, tags map[string]string) RegisteredModel {
	t.Helper()
	rm, err := s.CreateRegisteredModel(context.Background(), name, "", tags)
	if err != nil {
		t.Fatalf("CreateRegisteredModel(%q) = %v", name, err)
	}
	return rm
}

func mustVersion(t testing.TB, s *SQLiteStore, req CreateModelVersion) ModelVersion {
	t.Helper()
	mv, err := s.CreateModelVersion(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateModelVersion(%+v) = %v", req, err)
	}
	return mv
}

func versionsOf(mvs []ModelVersion) []string {
	out := make([]string, len(mvs))
	for i, mv := range mvs {
		out[i] = mv.Name + "/" + mv.Version
	}
	return out
}

func TestRegistryLifecycle(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	run := mustCreateRun(t, s, CreateRun{})

	rm, err := s.CreateRegisteredModel(ctx, "fmnist", "a CNN", map[string]string{"team": "kit"})
	if err != nil {
		t.Fatal(err)
	}
	if rm.Name != "fmnist" || rm.Description != "a CNN" || !slices.Equal(rm.Tags, []Tag{{"team", "kit"}}) || rm.CreationTime.IsZero() ||
		!rm.CreationTime.Equal(rm.LastUpdatedTime) || len(rm.LatestVersions) != 0 {
		t.Fatalf("created %+v", rm)
	}
	v1 := mustVersion(t, s, CreateModelVersion{Name: "fmnist", Source: "runs:/" + run.Info.RunID + "/model", RunID: run.Info.RunID, Tags: map[string]string{"acc": "0.91"}})
	v2 := mustVersion(t, s, CreateModelVersion{Name: "fmnist", Source: "/models/2", Description: "second"})
	if v1.Version != "1" || v2.Version != "2" || v1.CurrentStage != StageNone || v1.Status != VersionReady ||
		!slices.Equal(v1.Tags, []Tag{{"acc", "0.91"}}) || v2.Description != "second" {
		t.Fatalf("versions %+v %+v", v1, v2)
	}

	// Aliases: unique per model, moved by a second set.
	if err := s.SetRegisteredModelAlias(ctx, "fmnist", "champion", "1"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRegisteredModelAlias(ctx, "fmnist", "champion", "2"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetModelVersionByAlias(ctx, "fmnist", "champion"); err != nil || got.Version != "2" || !slices.Equal(got.Aliases, []string{"champion"}) {
		t.Fatalf("GetModelVersionByAlias = %+v, %v; want version 2", got, err)
	}
	if got, _ := s.GetModelVersion(ctx, "fmnist", "1"); len(got.Aliases) != 0 {
		t.Fatalf("version 1 keeps aliases %v after the alias moved", got.Aliases)
	}

	// Stages and latest versions.
	if _, err := s.TransitionModelVersionStage(ctx, "fmnist", "1", "production", false); err != nil {
		t.Fatal(err)
	}
	got, err := s.TransitionModelVersionStage(ctx, "fmnist", "2", "Production", true)
	if err != nil || got.CurrentStage != StageProduction {
		t.Fatalf("transition = %+v, %v", got, err)
	}
	if got, _ := s.GetModelVersion(ctx, "fmnist", "1"); got.CurrentStage != StageArchived {
		t.Fatalf("version 1 stage %q after archive_existing; want Archived", got.CurrentStage)
	}
	rm, err = s.GetRegisteredModel(ctx, "fmnist")
	if err != nil {
		t.Fatal(err)
	}
	if g := versionsOf(rm.LatestVersions); !slices.Equal(g, []string{"fmnist/1", "fmnist/2"}) ||
		!slices.Equal(rm.Aliases, []ModelAlias{{"champion", "2"}}) {
		t.Fatalf("model %v aliases %v", g, rm.Aliases)
	}
	if lv, err := s.GetLatestVersions(ctx, "fmnist", []string{"PRODUCTION"}); err != nil || !slices.Equal(versionsOf(lv), []string{"fmnist/2"}) {
		t.Fatalf("GetLatestVersions(Production) = %v, %v", versionsOf(lv), err)
	}

	// Download URIs: a runs:/ source resolves through the run.
	uri, err := s.GetModelVersionDownloadURI(ctx, "fmnist", "1")
	if want := run.Info.ArtifactURI + "/model"; err != nil || uri != want {
		t.Fatalf("download URI = %q, %v; want %q", uri, err, want)
	}
	if uri, err := s.GetModelVersionDownloadURI(ctx, "fmnist", "2"); err != nil || uri != "/models/2" {
		t.Fatalf("download URI = %q, %v; want the source as stored", uri, err)
	}

	// URIs.
	for _, c := range []struct{ uri, want string }{
		{"models:/fmnist/1", "1"}, {"models:/fmnist@champion", "2"}, {"models:/fmnist/Production", "2"},
		{"models:/fmnist/archived", "1"}, {"models:/fmnist/latest", "2"},
	} {
		mv, err := s.ResolveModelURI(ctx, c.uri)
		if err != nil || mv.Version != c.want {
			t.Errorf("ResolveModelURI(%q) = %v, %v; want version %s", c.uri, mv.Version, err, c.want)
		}
	}

	// Rename: versions, tags and aliases follow.
	rm, err = s.RenameRegisteredModel(ctx, "fmnist", "fmnist-cnn")
	if err != nil || rm.Name != "fmnist-cnn" || len(rm.Tags) != 1 || len(rm.Aliases) != 1 || len(rm.LatestVersions) != 2 {
		t.Fatalf("rename = %+v, %v", rm, err)
	}
	if mv, err := s.GetModelVersion(ctx, "fmnist-cnn", "2"); err != nil || !slices.Equal(mv.Aliases, []string{"champion"}) {
		t.Fatalf("renamed version = %+v, %v", mv, err)
	}
	if mv, err := s.GetModelVersion(ctx, "fmnist-cnn", "1"); err != nil || !slices.Equal(mv.Tags, []Tag{{"acc", "0.91"}}) || mv.Name != "fmnist-cnn" {
		t.Fatalf("renamed version 1 = %+v, %v; want its tag acc=0.91 kept", mv, err)
	}
	if _, err := s.GetRegisteredModel(ctx, "fmnist"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old name: %v; want ErrNotFound", err)
	}

	// Update descriptions.
	if rm, err := s.UpdateRegisteredModel(ctx, "fmnist-cnn", "new"); err != nil || rm.Description != "new" {
		t.Fatalf("UpdateRegisteredModel = %+v, %v", rm, err)
	}
	if mv, err := s.UpdateModelVersion(ctx, "fmnist-cnn", "1", "v1 text"); err != nil || mv.Description != "v1 text" {
		t.Fatalf("UpdateModelVersion = %+v, %v", mv, err)
	}

	// Tags on models and versions.
	if err := s.SetRegisteredModelTag(ctx, "fmnist-cnn", Tag{"team", "lab"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetModelVersionTag(ctx, "fmnist-cnn", "2", Tag{"acc", "0.93"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteModelVersionTag(ctx, "fmnist-cnn", "1", "acc"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteModelVersionTag(ctx, "fmnist-cnn", "1", "never-set"); err != nil {
		t.Fatalf("deleting an unset tag: %v; MLflow accepts it", err)
	}
	mv1, _ := s.GetModelVersion(ctx, "fmnist-cnn", "1")
	mv2, _ := s.GetModelVersion(ctx, "fmnist-cnn", "2")
	rm, _ = s.GetRegisteredModel(ctx, "fmnist-cnn")
	if len(mv1.Tags) != 0 || !slices.Equal(mv2.Tags, []Tag{{"acc", "0.93"}}) || !slices.Equal(rm.Tags, []Tag{{"team", "lab"}}) {
		t.Fatalf("tags: v1 %v v2 %v model %v", mv1.Tags, mv2.Tags, rm.Tags)
	}
	if err := s.DeleteRegisteredModelTag(ctx, "fmnist-cnn", "team"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRegisteredModelAlias(ctx, "fmnist-cnn", "champion"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetModelVersionByAlias(ctx, "fmnist-cnn", "champion"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted alias: %v; want ErrNotFound", err)
	}

	// Delete: the model's versions go with it.
	if err := s.DeleteRegisteredModel(ctx, "fmnist-cnn"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetModelVersion(ctx, "fmnist-cnn", "1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a deleted model's version: %v; want ErrNotFound", err)
	}
	var left int
	for _, table := range []string{"registered_models", "registered_model_tags", "model_versions", "model_version_tags", "registered_model_aliases"} {
		var n int
		if err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		left += n
	}
	if left != 0 {
		t.Fatalf("%d registry rows left after deleting the only model", left)
	}
}

func TestRegistryVersionNumbersAreNotReused(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	mustModel(t, s, "m", nil)
	for range 3 {
		mustVersion(t, s, CreateModelVersion{Name: "m", Source: "/x"})
	}
	if err := s.DeleteModelVersion(ctx, "m", "3"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRegisteredModelAlias(ctx, "m", "best", "2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteModelVersion(ctx, "m", "2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetModelVersionByAlias(ctx, "m", "best"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("alias of a deleted version: %v; want ErrNotFound", err)
	}
	if mv := mustVersion(t, s, CreateModelVersion{Name: "m", Source: "/x"}); mv.Version != "4" {
		t.Fatalf("after deleting the newest (3), the next version is %s; want 4 (MLflow never reuses numbers)", mv.Version)
	}
	// EnsureRegisteredModel keeps an existing model and its numbering.
	if err := s.EnsureRegisteredModel(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if mv := mustVersion(t, s, CreateModelVersion{Name: "m", Source: "/x"}); mv.Version != "5" {
		t.Fatalf("after EnsureRegisteredModel, next version %s; want 5", mv.Version)
	}
	if err := s.EnsureRegisteredModel(ctx, "fresh"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRegisteredModel(ctx, "fresh"); err != nil {
		t.Fatalf("EnsureRegisteredModel did not create: %v", err)
	}
}

// TestRegistryConcurrentVersions creates versions of one model from many
// goroutines: every number from 1 up is given exactly once.
func TestRegistryConcurrentVersions(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	mustModel(t, s, "m", nil)
	const workers, each = 8, 10
	got := make(chan string, workers*each)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				mv, err := s.CreateModelVersion(ctx, CreateModelVersion{Name: "m", Source: "/x"})
				if err != nil {
					t.Error(err)
					return
				}
				got <- mv.Version
			}
		})
	}
	wg.Wait()
	close(got)
	seen := map[string]bool{}
	for v := range got {
		if seen[v] {
			t.Fatalf("version %s given twice", v)
		}
		seen[v] = true
	}
	for i := 1; i <= workers*each; i++ {
		if !seen[fmt.Sprint(i)] {
			t.Fatalf("version %d never given; got %d versions", i, len(seen))
		}
	}
}

func TestResolveModelURIWithAtInName(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	mustModel(t, s, "team@lab", nil)
	mustVersion(t, s, CreateModelVersion{Name: "team@lab", Source: "/x"})
	if err := s.SetRegisteredModelAlias(ctx, "team@lab", "best", "1"); err != nil {
		t.Fatal(err)
	}
	for _, uri := range []string{"models:/team@lab/1", "models:/team@lab@best", "models:/team@lab/latest"} {
		if mv, err := s.ResolveModelURI(ctx, uri); err != nil || mv.Name != "team@lab" || mv.Version != "1" {
			t.Errorf("ResolveModelURI(%q) = %+v, %v; want team@lab version 1", uri, mv, err)
		}
	}
	// models:/team@lab reads as model "team", alias "lab", as in MLflow.
	if _, err := s.ResolveModelURI(ctx, "models:/team@lab"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ResolveModelURI(models:/team@lab) = %v; want ErrNotFound (model team has no alias lab)", err)
	}
	for _, uri := range []string{"models:/@best", "models:/team@lab/1/2", "models://host/m/1", "models:/m/"} {
		if _, err := s.ResolveModelURI(ctx, uri); !errors.Is(err, ErrInvalid) {
			t.Errorf("ResolveModelURI(%q) = %v; want ErrInvalid", uri, err)
		}
	}
}

func TestRegistryBadInput(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	mustModel(t, s, "m", nil)
	mustVersion(t, s, CreateModelVersion{Name: "m", Source: "/x"})
	big := strings.Repeat("d", 10<<20)
	for _, c := range []struct {
		name string
		call func() error
		want error
		msg  string
	}{
		{"duplicate name", func() error { _, err := s.CreateRegisteredModel(ctx, "m", "", nil); return err }, ErrAlreadyExists, "Registered Model (name=m) already exists"},
		{"empty name", func() error { _, err := s.CreateRegisteredModel(ctx, "", "", nil); return err }, ErrInvalid, "name (name) is empty"},
		{"slash", func() error { _, err := s.CreateRegisteredModel(ctx, "a/b", "", nil); return err }, ErrInvalid, "may not contain '/'"},
		{"backslash", func() error { _, err := s.CreateRegisteredModel(ctx, `a\b`, "", nil); return err }, ErrInvalid, "may not contain '/' or '\\'"},
		{"dot dot", func() error { _, err := s.CreateRegisteredModel(ctx, "..", "", nil); return err }, ErrInvalid, `contains ".."`},
		{"control", func() error { _, err := s.CreateRegisteredModel(ctx, "a\nb", "", nil); return err }, ErrInvalid, "control character U+000A"},
		{"long name", func() error { _, err := s.CreateRegisteredModel(ctx, strings.Repeat("n", 257), "", nil); return err }, ErrInvalid, "the limit is 256"},
		{"10 MB description", func() error { _, err := s.CreateRegisteredModel(ctx, "big", big, nil); return err }, ErrInvalid, "the description is 10485760 characters long; the limit is 5000"},
		{"10 MB version description", func() error {
			_, err := s.CreateModelVersion(ctx, CreateModelVersion{Name: "m", Source: "/x", Description: big})
			return err
		}, ErrInvalid, "the limit is 5000"},
		{"bad tag key", func() error {
			_, err := s.CreateRegisteredModel(ctx, "t", "", map[string]string{"a\x00": "v"})
			return err
		}, ErrInvalid, "tag key"},
		{"long tag value", func() error { return s.SetRegisteredModelTag(ctx, "m", Tag{"k", strings.Repeat("v", 5001)}) }, ErrInvalid, "the limit is 5000"},
		{"rename onto another", func() error {
			mustModel(t, s, "other", nil)
			_, err := s.RenameRegisteredModel(ctx, "other", "m")
			return err
		}, ErrAlreadyExists, "Registered Model (name=m) already exists"},
		{"unknown model", func() error { _, err := s.GetRegisteredModel(ctx, "nope"); return err }, ErrNotFound, "Registered Model with name=nope not found"},
		{"version of unknown model", func() error {
			_, err := s.CreateModelVersion(ctx, CreateModelVersion{Name: "nope", Source: "/x"})
			return err
		}, ErrNotFound, "Registered Model with name=nope not found"},
		{"unknown version", func() error { _, err := s.GetModelVersion(ctx, "m", "9"); return err }, ErrNotFound, "Model Version (name=m, version=9) not found"},
		{"bad version", func() error { _, err := s.GetModelVersion(ctx, "m", "one"); return err }, ErrInvalid, "parameter 'version' must be a positive integer"},
		{"alias on missing version", func() error { return s.SetRegisteredModelAlias(ctx, "m", "champion", "7") }, ErrNotFound, "Model Version (name=m, version=7) not found"},
		{"alias latest", func() error { return s.SetRegisteredModelAlias(ctx, "m", "Latest", "1") }, ErrInvalid, "reserved"},
		{"alias v1", func() error { return s.SetRegisteredModelAlias(ctx, "m", "v1", "1") }, ErrInvalid, "reserved"},
		{"alias chars", func() error { return s.SetRegisteredModelAlias(ctx, "m", "a b", "1") }, ErrInvalid, "alphanumerics"},
		{"empty source", func() error { _, err := s.CreateModelVersion(ctx, CreateModelVersion{Name: "m"}); return err }, ErrInvalid, "source is empty"},
		{"bad stage", func() error { _, err := s.TransitionModelVersionStage(ctx, "m", "1", "Prod", false); return err }, ErrInvalid, "must be one of None, Staging, Production, Archived"},
		{"archive into None", func() error { _, err := s.TransitionModelVersionStage(ctx, "m", "1", "None", true); return err }, ErrInvalid, "not an active stage"},
		{"bad URI", func() error { _, err := s.ResolveModelURI(ctx, "runs:/x/model"); return err }, ErrInvalid, "models:/<name>/<version>"},
		{"empty stage URI", func() error { _, err := s.ResolveModelURI(ctx, "models:/m/Staging"); return err }, ErrNotFound, "no version in stage Staging"},
		{"missing run in source", func() error {
			mustVersion(t, s, CreateModelVersion{Name: "m", Source: "runs:/0123456789abcdef/model"})
			_, err := s.GetModelVersionDownloadURI(ctx, "m", "2")
			return err
		}, ErrNotFound, "runs:/0123456789abcdef/model"},
		{"search page size", func() error { _, _, err := s.SearchModelVersions(ctx, RegistryQuery{MaxResults: 200_001}); return err }, ErrInvalid, "between 1 and 200000"},
		{"search bad token", func() error { _, _, err := s.SearchRegisteredModels(ctx, RegistryQuery{PageToken: "!!"}); return err }, ErrInvalid, "page token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error = %v; want %v containing %q", err, c.want, c.msg)
			}
		})
	}
	// Nothing half-written: only the models and versions made above.
	rms, _, err := s.SearchRegisteredModels(ctx, RegistryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, rm := range rms {
		names = append(names, rm.Name)
	}
	if !slices.Equal(names, []string{"m", "other"}) {
		t.Fatalf("models after the bad calls: %v; want [m other]", names)
	}
	mvs, _, err := s.SearchModelVersions(ctx, RegistryQuery{OrderBy: []string{"version_number"}})
	if err != nil || !slices.Equal(versionsOf(mvs), []string{"m/1", "m/2"}) {
		t.Fatalf("versions after the bad calls: %v, %v", versionsOf(mvs), err)
	}
}

// TestCreateModelVersionAtomic checks that a create that fails inside its
// transaction (a tag insert refused by the database) leaves neither the
// version nor a bumped version counter.
func TestCreateModelVersionAtomic(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	mustModel(t, s, "m", nil)
	if _, err := s.w.ExecContext(ctx, `CREATE TRIGGER refuse_tag BEFORE INSERT ON model_version_tags WHEN NEW.key = 'boom'
		BEGIN SELECT RAISE(ABORT, 'refused'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateModelVersion(ctx, CreateModelVersion{Name: "m", Source: "/x", Tags: map[string]string{"a": "1", "boom": "2"}}); err == nil {
		t.Fatal("create with a refused tag succeeded")
	}
	if mvs, _, _ := s.SearchModelVersions(ctx, RegistryQuery{}); len(mvs) != 0 {
		t.Fatalf("a failed create left %v", versionsOf(mvs))
	}
	if mv := mustVersion(t, s, CreateModelVersion{Name: "m", Source: "/x"}); mv.Version != "1" {
		t.Fatalf("first successful version is %s; want 1 (the failed create must not count)", mv.Version)
	}
}

func TestSearchRegistry(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	for i, name := range []string{"alpha", "Beta", "gamma"} {
		mustModel(t, s, name, map[string]string{"team": []string{"kit", "lab", "kit"}[i]})
		for v := range 3 {
			mustVersion(t, s, CreateModelVersion{Name: name, Source: fmt.Sprintf("s3://b/%s/%d", name, v+1), RunID: fmt.Sprintf("run%d", v),
				Tags: map[string]string{"round": fmt.Sprint(v + 1)}})
		}
	}
	for _, c := range []struct {
		filter string
		order  []string
		want   []string
	}{
		{"", nil, []string{"Beta", "alpha", "gamma"}}, // name ASC, binary
		{"name = 'alpha'", nil, []string{"alpha"}},
		{"name != 'alpha'", nil, []string{"Beta", "gamma"}},
		{"name LIKE 'b%'", nil, nil}, // LIKE is case-sensitive
		{"name ILIKE 'b%'", nil, []string{"Beta"}},
		{"tags.team = 'kit'", []string{"name DESC"}, []string{"gamma", "alpha"}},
		{"tags.`team` LIKE 'l%' AND name = 'Beta'", nil, []string{"Beta"}},
		{"", []string{"creation_timestamp DESC"}, nil}, // checked below: order by creation
	} {
		rms, _, err := s.SearchRegisteredModels(ctx, RegistryQuery{Filter: c.filter, OrderBy: c.order})
		if err != nil {
			t.Fatalf("SearchRegisteredModels(%q) = %v", c.filter, err)
		}
		var got []string
		for _, rm := range rms {
			got = append(got, rm.Name)
			if len(rm.LatestVersions) != 1 || rm.LatestVersions[0].Version != "3" {
				t.Errorf("%s latest versions %v; want [3]", rm.Name, versionsOf(rm.LatestVersions))
			}
		}
		if c.order != nil && c.order[0] == "creation_timestamp DESC" {
			if len(got) != 3 {
				t.Errorf("order by creation: %v", got)
			}
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("SearchRegisteredModels(%q, %v) = %v; want %v", c.filter, c.order, got, c.want)
		}
	}
	for _, c := range []struct {
		filter string
		order  []string
		want   []string
	}{
		{"name = 'alpha'", []string{"version_number ASC"}, []string{"alpha/1", "alpha/2", "alpha/3"}},
		{"name = 'alpha' AND version_number >= 2", nil, []string{"alpha/3", "alpha/2"}},
		{"version_number = '2' AND name ILIKE 'BETA'", nil, []string{"Beta/2"}},
		{"run_id IN ('run0', 'run2') AND name = 'gamma'", []string{"version_number"}, []string{"gamma/1", "gamma/3"}},
		{"run_id = 'run1'", []string{"name"}, []string{"Beta/2", "alpha/2", "gamma/2"}},
		{"source_path LIKE 's3://b/gamma/%' AND tags.round = '3'", nil, []string{"gamma/3"}},
		{"tags.round != '1' AND tags.round != '2'", []string{"name DESC"}, []string{"gamma/3", "alpha/3", "Beta/3"}},
		{"name = 'nope'", nil, nil},
	} {
		mvs, _, err := s.SearchModelVersions(ctx, RegistryQuery{Filter: c.filter, OrderBy: c.order})
		if err != nil {
			t.Fatalf("SearchModelVersions(%q) = %v", c.filter, err)
		}
		if got := versionsOf(mvs); !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("SearchModelVersions(%q, %v) = %v; want %v", c.filter, c.order, got, c.want)
		}
	}
	// Paging walks every version once, in order.
	var all []string
	tok := ""
	for pages := 0; ; pages++ {
		mvs, next, err := s.SearchModelVersions(ctx, RegistryQuery{OrderBy: []string{"name", "version_number ASC"}, MaxResults: 4, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, versionsOf(mvs)...)
		if next == "" {
			if pages != 2 {
				t.Errorf("%d pages of 4 for 9 versions; want 3", pages+1)
			}
			break
		}
		tok = next
	}
	want := []string{"Beta/1", "Beta/2", "Beta/3", "alpha/1", "alpha/2", "alpha/3", "gamma/1", "gamma/2", "gamma/3"}
	if !slices.Equal(all, want) {
		t.Fatalf("paged versions %v; want %v", all, want)
	}
	rms, next, err := s.SearchRegisteredModels(ctx, RegistryQuery{MaxResults: 2})
	if err != nil || len(rms) != 2 || next == "" {
		t.Fatalf("first page of models: %d, %q, %v", len(rms), next, err)
	}
	if rms, next, err = s.SearchRegisteredModels(ctx, RegistryQuery{MaxResults: 2, PageToken: next}); err != nil || len(rms) != 1 || rms[0].Name != "gamma" || next != "" {
		t.Fatalf("second page of models: %v, %q, %v", rms, next, err)
	}

	for _, c := range []struct{ filter, msg string }{
		{"metrics.acc > 1", "invalid entity"},
		{"version_number LIKE '1'", "invalid comparator LIKE for version_number"},
		{"version_number = 1.5", "not an integer"},
		{"name IN ('a')", "only the run_id attribute takes IN"},
		{"run_id NOT IN ('a')", "invalid comparator NOT IN"},
		{"tags.k = 3", "needs a quoted string"},
		{"stage = 'x'", "invalid attribute key"},
		{"name = 'a' OR name = 'b'", "OR is not supported"},
	} {
		if _, _, err := s.SearchModelVersions(ctx, RegistryQuery{Filter: c.filter}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("SearchModelVersions(%q) = %v; want ErrInvalid with %q", c.filter, err, c.msg)
		}
	}
	for _, order := range [][]string{{"run_id"}, {"name", "name DESC"}, {"tags.x"}} {
		if _, _, err := s.SearchModelVersions(ctx, RegistryQuery{OrderBy: order}); !errors.Is(err, ErrInvalid) {
			t.Errorf("order_by %v: %v; want ErrInvalid", order, err)
		}
	}
	if _, _, err := s.SearchRegisteredModels(ctx, RegistryQuery{Filter: "run_id = 'x'"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("models filtered by run_id: %v; want ErrInvalid", err)
	}
}

// FuzzRegistryFilter checks that any filter either is refused with
// ErrInvalid or runs, on both searches.
func FuzzRegistryFilter(f *testing.F) {
	for _, seed := range []string{
		"", "name = 'm'", "name LIKE 'a%' AND tags.`k` = 'v'", "version_number >= 2", "run_id IN ('a','b')",
		"source_path ILIKE '%x%'", "tags.k != 'v'", "name = ", "version_number = '3'", "tags.\"a b\" = \"c\"",
		"run_id IN ()", "version_number > 1e300",
	} {
		f.Add(seed)
	}
	s, _ := openStore(f)
	mustModel(f, s, "m", map[string]string{"k": "v"})
	mustVersion(f, s, CreateModelVersion{Name: "m", Source: "/x", RunID: "a", Tags: map[string]string{"k": "v"}})
	f.Fuzz(func(t *testing.T, filter string) {
		ctx := context.Background()
		if _, _, err := s.SearchModelVersions(ctx, RegistryQuery{Filter: filter}); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("SearchModelVersions(%q) = %v; want success or ErrInvalid", filter, err)
		}
		if _, _, err := s.SearchRegisteredModels(ctx, RegistryQuery{Filter: filter}); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("SearchRegisteredModels(%q) = %v; want success or ErrInvalid", filter, err)
		}
	})
}

// BenchmarkSearchModelVersions searches 10,000 model versions (20 models
// of 500, every fourth version tagged stage=prod). name+tag is the
// registry's usual query: one model's tagged versions, newest first (125
// rows, with their tags and aliases); tag is the same filter across every
// model (2,500 rows); page is the first 100 versions in MLflow's default
// order, unfiltered.
func BenchmarkSearchModelVersions(b *testing.B) {
	ctx := context.Background()
	s, _ := openStore(b)
	const models, perModel = 20, 500
	for m := range models {
		name := fmt.Sprintf("model-%02d", m)
		mustModel(b, s, name, nil)
		for v := range perModel {
			tags := map[string]string{"round": fmt.Sprint(v)}
			if v%4 == 0 {
				tags["stage"] = "prod"
			}
			mustVersion(b, s, CreateModelVersion{Name: name, Source: fmt.Sprintf("/artifacts/%s/%d", name, v), RunID: fmt.Sprintf("run-%d-%d", m, v), Tags: tags})
		}
	}
	for _, c := range []struct {
		name string
		q    RegistryQuery
		want int
	}{
		{"name+tag", RegistryQuery{Filter: "name = 'model-07' AND tags.stage = 'prod'", OrderBy: []string{"creation_timestamp DESC"}}, perModel / 4},
		{"tag", RegistryQuery{Filter: "tags.stage = 'prod'", OrderBy: []string{"creation_timestamp DESC"}}, models * perModel / 4},
		{"page", RegistryQuery{MaxResults: 100}, 100},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				mvs, _, err := s.SearchModelVersions(ctx, c.q)
				if err != nil {
					b.Fatal(err)
				}
				if len(mvs) != c.want {
					b.Fatalf("%d versions; want %d", len(mvs), c.want)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/search")
		})
	}
}
