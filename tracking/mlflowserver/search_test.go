package mlflowserver

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// searchFixture logs five runs r0…r4 into a new experiment:
//
//	run  acc   loss  algo     site  status    start
//	r0   0.9   0.1   fedavg   kit   FINISHED  1000
//	r1   0.7   NaN   fedprox  unibo RUNNING   2000
//	r2   0.4   0.5   fedavg   KIT   FAILED    3000
//	r3   —     0.2   central  —     FINISHED  4000
//	r4   0.55  —     fedavg   kit2  RUNNING   5000
func searchFixture(t *testing.T) (*fixture, string, map[string]string) {
	f := newFixture(t, Config{})
	exp := f.must("POST", api+"experiments/create", map[string]any{"name": "search"})["experiment_id"].(string)
	type row struct {
		acc, loss  any
		algo, site string
		status     string
	}
	rows := []row{
		{0.9, 0.1, "fedavg", "kit", "FINISHED"},
		{0.7, "NaN", "fedprox", "unibo", "RUNNING"},
		{0.4, 0.5, "fedavg", "KIT", "FAILED"},
		{nil, 0.2, "central", "", "FINISHED"},
		{0.55, nil, "fedavg", "kit2", "RUNNING"},
	}
	names := map[string]string{}
	for i, r := range rows {
		name := fmt.Sprintf("r%d", i)
		out := f.must("POST", api+"runs/create", map[string]any{"experiment_id": exp, "run_name": name, "start_time": (i + 1) * 1000})
		id := get(out, "run", "info", "run_id").(string)
		names[id] = name
		var ms []any
		if r.acc != nil {
			ms = append(ms, map[string]any{"key": "acc", "value": r.acc, "timestamp": 1})
		}
		if r.loss != nil {
			ms = append(ms, map[string]any{"key": "loss", "value": r.loss, "timestamp": 1})
		}
		tags := []any{}
		if r.site != "" {
			tags = append(tags, map[string]any{"key": "site", "value": r.site})
		}
		f.must("POST", api+"runs/log-batch", map[string]any{"run_id": id, "metrics": ms, "tags": tags,
			"params": []any{map[string]any{"key": "algo", "value": r.algo}}})
		f.must("POST", api+"runs/update", map[string]any{"run_id": id, "status": r.status, "end_time": (i+1)*1000 + 500})
	}
	return f, exp, names
}

func searchNames(t *testing.T, f *fixture, body map[string]any, names map[string]string) ([]string, string) {
	t.Helper()
	st, out := f.call("POST", api+"runs/search", body)
	if st != 200 {
		t.Fatalf("search %v = %d %v", body, st, out)
	}
	var got []string
	runs, _ := out["runs"].([]any)
	for _, r := range runs {
		got = append(got, names[get(r.(map[string]any), "info", "run_id").(string)])
	}
	tok, _ := out["next_page_token"].(string)
	return got, tok
}

func TestSearchRunsFilter(t *testing.T) {
	f, exp, names := searchFixture(t)
	var ids = map[string]string{}
	for id, n := range names {
		ids[n] = id
	}
	for _, c := range []struct {
		filter string
		want   []string // in the default order, start_time DESC
	}{
		{"", []string{"r4", "r3", "r2", "r1", "r0"}},
		{"metrics.acc > 0.5", []string{"r4", "r1", "r0"}},
		{"metrics.acc >= 0.7", []string{"r1", "r0"}},
		{"metrics.acc < 0.5", []string{"r2"}},
		{"metrics.acc <= 0.4", []string{"r2"}},
		{"metrics.acc = 0.9", []string{"r0"}},
		{"metrics.acc != 0.9", []string{"r4", "r2", "r1"}},
		{"metric.loss > 0", []string{"r3", "r2", "r0"}}, // NaN matches no comparison
		{"metrics.acc > 0.5 and params.algo = 'fedavg'", []string{"r4", "r0"}},
		{"metrics.acc > 0.5 AND params.algo = \"fedavg\" AND tags.site = 'kit'", []string{"r0"}},
		{"params.algo != 'fedavg'", []string{"r3", "r1"}},
		{"param.algo LIKE 'fed%'", []string{"r4", "r2", "r1", "r0"}},
		{"parameters.algo LIKE 'FED%'", nil}, // LIKE is case-sensitive
		{"params.algo ILIKE 'FED%'", []string{"r4", "r2", "r1", "r0"}},
		{"params.algo IN ('central', 'fedprox')", []string{"r3", "r1"}},
		{"params.algo NOT IN ('fedavg')", []string{"r3", "r1"}},
		{"tags.site = 'kit'", []string{"r0"}},
		{"tags.site LIKE 'kit_'", []string{"r4"}},
		{"tags.site ILIKE 'kit'", []string{"r2", "r0"}},
		{"tags.`site` = 'unibo'", []string{"r1"}},
		{"tags.\"site\" = 'unibo'", []string{"r1"}},
		{"tags.`mlflow.runName` = 'r3'", []string{"r3"}},
		{"attributes.status = 'FINISHED'", []string{"r3", "r0"}},
		{"status != 'RUNNING'", []string{"r3", "r2", "r0"}},
		{"attribute.run_name = 'r2'", []string{"r2"}},
		{"run_name LIKE 'r%'", []string{"r4", "r3", "r2", "r1", "r0"}},
		{"attributes.start_time > 2000", []string{"r4", "r3", "r2"}},
		{"attributes.start_time >= 2000 and attributes.start_time < 4000", []string{"r2", "r1"}},
		{"attributes.end_time <= 1500", []string{"r0"}},
		{"attributes.run_id IN ('" + ids["r1"] + "', '" + ids["r3"] + "')", []string{"r3", "r1"}},
		{"attributes.run_id NOT IN ('" + ids["r1"] + "')", []string{"r4", "r3", "r2", "r0"}},
		{"attributes.run_id = '" + ids["r2"] + "'", []string{"r2"}},
		{"metrics.missing > 0", nil},
	} {
		t.Run(c.filter, func(t *testing.T) {
			got, _ := searchNames(t, f, map[string]any{"experiment_ids": []string{exp}, "filter": c.filter}, names)
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("filter %q (-want +got):\n%s", c.filter, diff)
			}
		})
	}
}

func TestSearchRunsOrderAndPaging(t *testing.T) {
	f, exp, names := searchFixture(t)
	for _, c := range []struct {
		order []string
		want  []string
	}{
		{nil, []string{"r4", "r3", "r2", "r1", "r0"}},
		{[]string{"metrics.acc DESC"}, []string{"r0", "r1", "r4", "r2", "r3"}}, // a run without acc last
		{[]string{"metrics.acc"}, []string{"r2", "r4", "r1", "r0", "r3"}},
		{[]string{"metrics.loss ASC"}, []string{"r0", "r3", "r2", "r1", "r4"}}, // NaN after numbers, missing last
		{[]string{"params.algo ASC"}, []string{"r3", "r4", "r2", "r0", "r1"}},  // ties by start_time DESC
		{[]string{"tags.site DESC"}, []string{"r1", "r4", "r0", "r2", "r3"}},
		{[]string{"attributes.start_time ASC"}, []string{"r0", "r1", "r2", "r3", "r4"}},
		{[]string{"run_name DESC"}, []string{"r4", "r3", "r2", "r1", "r0"}},
		{[]string{"params.algo DESC", "metrics.acc ASC"}, []string{"r1", "r2", "r4", "r0", "r3"}},
	} {
		t.Run(fmt.Sprint(c.order), func(t *testing.T) {
			got, _ := searchNames(t, f, map[string]any{"experiment_ids": []string{exp}, "order_by": c.order}, names)
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("order_by %q (-want +got):\n%s", c.order, diff)
			}
		})
	}
	// Filtered and ordered by the same metric: the index-driven search.
	for _, c := range []struct {
		filter string
		order  []string
		want   []string
	}{
		{"metrics.acc > 0.5", []string{"metrics.acc DESC"}, []string{"r0", "r1", "r4"}},
		{"metrics.acc > 0.5", []string{"metrics.acc ASC"}, []string{"r4", "r1", "r0"}},
		{"metrics.acc > 0.5 and params.algo = 'fedavg'", []string{"metrics.acc DESC"}, []string{"r0", "r4"}},
		{"params.algo = 'fedavg' AND metrics.acc != 0.9", []string{"metrics.acc DESC", "start_time ASC"}, []string{"r4", "r2"}},
		{"metrics.loss >= 0 and tags.site LIKE 'k%'", []string{"metrics.loss DESC"}, []string{"r0"}},
		{"metrics.acc > 'x'", []string{"metrics.acc DESC"}, nil},
	} {
		st, out := f.call("POST", api+"runs/search", map[string]any{"experiment_ids": []string{exp}, "filter": c.filter, "order_by": c.order})
		if c.want == nil {
			if st != 400 {
				t.Errorf("filter %q order %q = %d %v; want 400", c.filter, c.order, st, out)
			}
			continue
		}
		got, _ := searchNames(t, f, map[string]any{"experiment_ids": []string{exp}, "filter": c.filter, "order_by": c.order}, names)
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("filter %q order %q (-want +got):\n%s", c.filter, c.order, diff)
		}
	}
	// Paging: pages of 2 cover all five, in order, once.
	var all []string
	tok := ""
	for range 4 {
		page, next := searchNames(t, f, map[string]any{"experiment_ids": []string{exp}, "max_results": 2, "page_token": tok, "order_by": []string{"metrics.acc DESC"}}, names)
		all = append(all, page...)
		if tok = next; tok == "" {
			break
		}
	}
	if diff := cmp.Diff([]string{"r0", "r1", "r4", "r2", "r3"}, all); diff != "" {
		t.Errorf("paged (-want +got):\n%s", diff)
	}
	// view types
	var r3 string
	for id, n := range names {
		if n == "r3" {
			r3 = id
		}
	}
	f.must("POST", api+"runs/delete", map[string]any{"run_id": r3})
	for _, c := range []struct {
		view string
		want []string
	}{
		{"ACTIVE_ONLY", []string{"r4", "r2", "r1", "r0"}},
		{"DELETED_ONLY", []string{"r3"}},
		{"ALL", []string{"r4", "r3", "r2", "r1", "r0"}},
	} {
		got, _ := searchNames(t, f, map[string]any{"experiment_ids": []string{exp}, "run_view_type": c.view}, names)
		if !slices.Equal(got, c.want) {
			t.Errorf("run_view_type %s = %v, want %v", c.view, got, c.want)
		}
	}
}
