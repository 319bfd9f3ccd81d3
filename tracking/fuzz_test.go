package tracking

import (
	"errors"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzDecodePageToken checks that any token either decodes to an offset
// that encodes back to an equivalent token, or fails with ErrInvalid.
func FuzzDecodePageToken(f *testing.F) {
	for _, seed := range []string{
		"", encodePageToken(0), encodePageToken(1000), "eyJvZmZzZXQiOiAxMDB9", // MLflow's own {"offset": 100}
		"eyJvZmZzZXQiOiAtMX0=", "e30=", "bnVsbA==", "!!", "eyJvZmZzZXQiOiAxZTMwfQ==",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		off, err := decodePageToken(tok)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("decodePageToken(%q) = %v, want ErrInvalid", tok, err)
			}
			return
		}
		if off < 0 {
			t.Fatalf("decodePageToken(%q) = %d, want ≥ 0", tok, off)
		}
		again, err := decodePageToken(encodePageToken(off))
		if err != nil || again != off {
			t.Fatalf("decodePageToken(encodePageToken(%d)) = %d, %v; want %d", off, again, err, off)
		}
	})
}

// FuzzCleanArtifactPath checks that an accepted artifact path always stays
// inside the run's artifact directory.
func FuzzCleanArtifactPath(f *testing.F) {
	for _, seed := range []string{
		"a.txt", "plots/acc.svg", "../x", "/etc/passwd", "a/../../x", "a/./b//c", ".", "", "..a", "a..", "C:\\x", "a/..",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		for _, allowRoot := range []bool{false, true} {
			clean, err := cleanArtifactPath(p, allowRoot)
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("cleanArtifactPath(%q) = %v, want ErrInvalid", p, err)
				}
				continue
			}
			if clean == "." {
				if !allowRoot {
					t.Fatalf("cleanArtifactPath(%q, false) = \".\", want an error", p)
				}
				continue
			}
			if !filepath.IsLocal(clean) || path.Clean(clean) != clean || strings.Contains(clean, "..") && hasDotDotPart(clean) {
				t.Fatalf("cleanArtifactPath(%q) = %q, which is not a clean local path", p, clean)
			}
		}
	})
}

func hasDotDotPart(p string) bool {
	for part := range strings.SplitSeq(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

// FuzzValidateKey checks that an accepted key is a clean relative path of
// allowed length, as MLflow requires.
func FuzzValidateKey(f *testing.F) {
	for _, seed := range []string{"acc", "a/b", "a//b", "/a", "a/", "..", ".a", "énergie", "a\tb", strings.Repeat("k", 251)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := validateKey("metric", key)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("validateKey(%q) = %v, want ErrInvalid", key, err)
			}
			return
		}
		if key == "" || path.Clean(key) != key || path.IsAbs(key) || hasDotDotPart(key) || len([]rune(key)) > MaxKeyLength {
			t.Fatalf("validateKey(%q) = nil, want an error", key)
		}
	})
}
