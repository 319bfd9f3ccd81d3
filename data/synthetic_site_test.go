package data

import (
	"slices"
	"testing"
)

func TestSyntheticSite(t *testing.T) {
	cfg := SyntheticConfig{Alpha: 1, Beta: 1, SamplesPerDevice: 40}
	a, err := SyntheticSite(cfg, 7, "kit")
	if err != nil {
		t.Fatal(err)
	}
	if a.N != 40 || a.Features != 60 || a.Classes != 10 {
		t.Fatalf("SyntheticSite() = %d samples of %d features, %d classes; want 40, 60, 10", a.N, a.Features, a.Classes)
	}
	tests := []struct {
		name string
		seed int64
		site string
		same bool
	}{
		{"same seed and site", 7, "kit", true},
		{"another site", 7, "unibo", false},
		{"another seed", 8, "kit", false},
	}
	for _, tc := range tests {
		b, err := SyntheticSite(cfg, tc.seed, tc.site)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Equal(a.X, b.X) && slices.Equal(a.Y, b.Y); got != tc.same {
			t.Errorf("%s: same samples = %v, want %v", tc.name, got, tc.same)
		}
	}
	if _, err := SyntheticSite(SyntheticConfig{Alpha: -1}, 7, "kit"); err == nil {
		t.Error("SyntheticSite() with alpha -1 = nil error")
	}
}
