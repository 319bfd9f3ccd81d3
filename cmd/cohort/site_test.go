package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPlaceGPUs(t *testing.T) {
	tests := []struct {
		name   string
		gpus   []int
		want   string
		placed bool
	}{
		{"omitted: every GPU, environment untouched", nil, "", false},
		{"empty: none", []int{}, "", true},
		{"one", []int{0}, "0", true},
		{"several in the config's order", []int{2, 0}, "2,0", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			got, placed := placeGPUs(tt.gpus, func(k, v string) error { env[k] = v; return nil })
			if got != tt.want || placed != tt.placed {
				t.Errorf("placeGPUs(%v) = %q, %v; want %q, %v", tt.gpus, got, placed, tt.want, tt.placed)
			}
			want := map[string]string{}
			if tt.placed {
				want["CUDA_VISIBLE_DEVICES"] = tt.want
			}
			if diff := cmp.Diff(want, env); diff != "" {
				t.Errorf("environment (-want +got):\n%s", diff)
			}
		})
	}
}
