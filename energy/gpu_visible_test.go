package energy

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var visibleGPUs = []gpuID{
	{uuid: "GPU-0aa1-1111"},
	{uuid: "GPU-0aa2-2222", migs: []string{"MIG-7c1d-aaaa", "MIG-7c2e-bbbb"}},
	{uuid: "GPU-9fff-3333"},
}

func TestSelectVisible(t *testing.T) {
	tests := []struct {
		spec     string
		want     []selected
		wantStop string // a substring of the reason the list stopped, "" for none
	}{
		{"", []selected{}, ""},
		{"0,2", []selected{{pos: 0}, {pos: 2}}, ""},
		{" 2 , 0 ", []selected{{pos: 0}, {pos: 2}}, ""},
		{"1,1", []selected{{pos: 1}}, ""},
		{"GPU-9f", []selected{{pos: 2}}, ""},
		{"9fff", []selected{{pos: 2}}, ""}, // without GPU-
		{"GPU-0aa", []selected{}, `"GPU-0aa" matches more than one device`},
		{"MIG-7c2", []selected{{pos: 1, migs: []string{"MIG-7c2e-bbbb"}}}, ""},
		{"MIG-7c1d-aaaa,MIG-7c2e-bbbb", []selected{{pos: 1, migs: []string{"MIG-7c1d-aaaa", "MIG-7c2e-bbbb"}}}, ""},
		{"MIG-GPU-0aa2-2222/1/0", []selected{{pos: 1, migs: []string{"MIG-GPU-0aa2-2222/1/0"}}}, ""},
		{"0,-1,2", []selected{{pos: 0}}, `"-1" is not a GPU index (this machine has 3)`},
		{"0,3", []selected{{pos: 0}}, `"3" is not a GPU index`},
		{"2,NoDevFiles,0", []selected{{pos: 2}}, `"NoDevFiles" matches no GPU`},
		{"MIG-ffff", []selected{}, "matches no GPU or MIG device"},
	}
	for _, tt := range tests {
		got, stop := selectVisible(tt.spec, visibleGPUs)
		if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(selected{})); diff != "" {
			t.Errorf("selectVisible(%q) (-want +got):\n%s", tt.spec, diff)
		}
		if (tt.wantStop == "") != (stop == "") || !strings.Contains(stop, tt.wantStop) {
			t.Errorf("selectVisible(%q) stop reason = %q, want %q", tt.spec, stop, tt.wantStop)
		}
	}
}

func TestResolveVisible(t *testing.T) {
	t.Setenv("CUDA_VISIBLE_DEVICES", "1")
	tests := []struct {
		opt, env  string
		unset     bool
		wantSpec  string
		wantLimit bool
	}{
		{"", "1", false, "1", true},
		{"", "", false, "", true}, // set but empty: CUDA sees no GPU
		{"", "", true, "", false}, // unset: every GPU
		{"all", "1", false, "", false},
		{"GPU-ab", "1", false, "GPU-ab", true},
	}
	for _, tt := range tests {
		t.Setenv("CUDA_VISIBLE_DEVICES", tt.env)
		if tt.unset {
			unsetenv(t, "CUDA_VISIBLE_DEVICES")
		}
		spec, limited := resolveVisible(tt.opt)
		if spec != tt.wantSpec || limited != tt.wantLimit {
			t.Errorf("resolveVisible(%q) with CUDA_VISIBLE_DEVICES=%q (unset %v) = %q, %v; want %q, %v",
				tt.opt, tt.env, tt.unset, spec, limited, tt.wantSpec, tt.wantLimit)
		}
	}
}

// FuzzSelectVisible: any specification selects GPUs that exist, once
// each, in NVML order, and never panics.
func FuzzSelectVisible(f *testing.F) {
	for _, s := range []string{"", "0", "0,1,2", "GPU-0aa2", "MIG-7c1d", "MIG-GPU-0aa2-2222/0/0", "-1", "1,,2", "ü,9", "GPU-", "MIG-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		got, _ := selectVisible(spec, visibleGPUs)
		pos := make([]int, len(got))
		for i, s := range got {
			pos[i] = s.pos
			if s.pos < 0 || s.pos >= len(visibleGPUs) {
				t.Fatalf("selectVisible(%q) picked position %d of %d", spec, s.pos, len(visibleGPUs))
			}
		}
		if !slices.IsSorted(pos) || len(slices.Compact(slices.Clone(pos))) != len(pos) {
			t.Fatalf("selectVisible(%q) = %v, want unique positions in NVML order", spec, pos)
		}
	})
}

// unsetenv removes key for the rest of the test (after t.Setenv, which
// restores it).
func unsetenv(t *testing.T, key string) {
	t.Helper()
	if err := os.Unsetenv(key); err != nil {
		t.Fatal(err)
	}
}
