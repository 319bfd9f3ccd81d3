package job

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func nan() float64 { return math.NaN() }

// FuzzParse checks that Parse never panics, that whatever it accepts is
// valid and stable under ApplyDefaults, and that every rejection says why.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/*.yaml", "../examples/fashion-mnist/*.yaml", "../examples/robust/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			if s != nil {
				t.Errorf("Parse returned a spec with error %v", err)
			}
			if err.Error() == "" {
				t.Error("Parse returned an empty error message")
			}
			for _, p := range Problems(err) {
				if p.Msg == "" {
					t.Errorf("problem %+v has no message", p)
				}
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Errorf("Parse accepted a spec that Validate rejects: %v", err)
		}
		before := *s
		s.ApplyDefaults()
		if diff := cmp.Diff(&before, s, cmpopts.IgnoreUnexported(Spec{})); diff != "" {
			t.Errorf("ApplyDefaults changed a parsed spec (-before +after):\n%s", diff)
		}
		_ = s.Flatten()
		for _, a := range s.Arms {
			_ = s.ArmTrain(a)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	data, err := os.ReadFile("testdata/design.good.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
