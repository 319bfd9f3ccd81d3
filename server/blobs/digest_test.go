package blobs

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDigest(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		in      string
		wantErr string // "" means valid
	}{
		{good, ""},
		{Sum(nil).String(), ""},
		{"", "0 characters"},
		{good[:63], "63 characters"},
		{good + "0", "65 characters"},
		{"sha256:" + good[:57], "not a hex digit"},
		{strings.ToUpper(good), "upper-case"},
		{good[:10] + "g" + good[11:], "'g' at 10"},
		{good[:63] + "\x00", "at 63"},
	}
	for _, tt := range tests {
		d, err := ParseDigest(tt.in)
		if tt.wantErr == "" {
			if err != nil || string(d) != tt.in {
				t.Errorf("ParseDigest(%q) = %q, %v, want the digest", tt.in, d, err)
			}
			continue
		}
		if !errors.Is(err, ErrBadDigest) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseDigest(%q) error = %v, want ErrBadDigest saying %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestSum(t *testing.T) {
	// The SHA-256 of "abc" (FIPS 180-2, appendix B.1).
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := Sum([]byte("abc")); got != want {
		t.Errorf("Sum(abc) = %s, want %s", got, want)
	}
}

func FuzzParseDigest(f *testing.F) {
	f.Add(strings.Repeat("ab", 32))
	f.Add(strings.Repeat("AB", 32))
	f.Add("")
	f.Add("sha256:" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			if !errors.Is(err, ErrBadDigest) || d != "" {
				t.Fatalf("ParseDigest(%q) = %q, %v: want \"\" and ErrBadDigest", s, d, err)
			}
			return
		}
		if string(d) != s || len(s) != 64 || strings.Trim(s, "0123456789abcdef") != "" {
			t.Fatalf("ParseDigest(%q) accepted %q", s, d)
		}
	})
}
