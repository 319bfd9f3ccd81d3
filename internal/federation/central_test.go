package federation

import (
	"slices"
	"testing"

	"github.com/cohortfl/cohort/job"
)

func TestCentralSites(t *testing.T) {
	tests := []struct {
		arms string
		want []string
	}{
		{"[{name: f, strategy: fedavg}]", nil},
		{"[{name: c, centralized: {}}]", []string{"central"}},
		{"[{name: c, centralized: {site: pooled}}, {name: d, centralized: {}}]", []string{"pooled", "central"}},
		{"[{name: c, centralized: {site: a}}]", nil}, // a federated site trains it on its own data
	}
	for _, tt := range tests {
		s, err := job.Parse([]byte("name: x\ndata: {dataset: fashion-mnist}\nmodel: {kind: logreg}\nsites: {names: [a, b]}\nrounds: 1\narms: " + tt.arms + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got := centralSites(s); !slices.Equal(got, tt.want) {
			t.Errorf("centralSites(%s) = %v, want %v", tt.arms, got, tt.want)
		}
	}
}
