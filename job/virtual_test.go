package job

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestVirtualDefaults: a simulation of virtual clients has workers
// worker-1 … worker-N as its sites, all of them needed each round.
func TestVirtualDefaults(t *testing.T) {
	tests := []struct {
		sites string
		want  Sites
	}{
		{"{virtual: 20000000, per_round: 1000}", Sites{Virtual: 20_000_000, ClientsPerRound: 1000, Workers: 1,
			Count: 1, Names: []string{"worker-1"}, MinPerRound: 1, Fraction: 1}},
		{"{virtual: 20000000, per_round: 1000, workers: 3, min_per_round: 2, samples_per_client: 20}", Sites{Virtual: 20_000_000,
			ClientsPerRound: 1000, Workers: 3, SamplesPerClient: 20,
			Count: 3, Names: []string{"worker-1", "worker-2", "worker-3"}, MinPerRound: 2, Fraction: 1}},
	}
	for _, tt := range tests {
		src := "name: v\ndata: {dataset: fashion-mnist, partition: {kind: dirichlet, alpha: 0.5}}\nmodel: {kind: logreg}\nrounds: 2\n" +
			"arms: [{name: fedavg, strategy: fedavg}]\nsites: " + tt.sites + "\n"
		s, err := Parse([]byte(src))
		if err != nil {
			t.Fatalf("Parse(sites: %s) = %v", tt.sites, err)
		}
		if diff := cmp.Diff(tt.want, s.Sites); diff != "" {
			t.Errorf("Parse(sites: %s).Sites mismatch (-want +got):\n%s", tt.sites, diff)
		}
		if !s.SimulatedSites() {
			t.Errorf("Parse(sites: %s).SimulatedSites() = false, want true", tt.sites)
		}
	}
}
