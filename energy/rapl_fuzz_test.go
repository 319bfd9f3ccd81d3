package energy

import (
	"strconv"
	"testing"
)

// FuzzParseUJ: a powercap counter file parses to the decimal it holds, or
// to an error; never a panic.
func FuzzParseUJ(f *testing.F) {
	for _, s := range []string{"262143328850\n", "0\n", "18446744073709551615\n", "-1\n", "", " 12 ", "1e3", "12\n13\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseUJ(b)
		if err != nil {
			return
		}
		if back, err := parseUJ([]byte(strconv.FormatUint(v, 10))); err != nil || back != v {
			t.Fatalf("parseUJ(%q) = %d, which does not parse back (%d, %v)", b, v, back, err)
		}
	})
}

// FuzzRAPLDelta: a counter's movement across at most one wrap never
// exceeds the range, and is exact without a wrap.
func FuzzRAPLDelta(f *testing.F) {
	f.Add(uint64(1000), uint64(500), uint64(262143328850))
	f.Add(uint64(0), uint64(0), uint64(0))
	f.Add(uint64(5), uint64(4), uint64(3))
	f.Fuzz(func(t *testing.T, last, now, maxRange uint64) {
		d := raplDelta(last, now, maxRange)
		switch {
		case now >= last && d != now-last:
			t.Fatalf("raplDelta(%d, %d, %d) = %d, want %d", last, now, maxRange, d, now-last)
		case now < last && maxRange > 0 && last <= maxRange && d > maxRange+1:
			t.Fatalf("raplDelta(%d, %d, %d) = %d, more than the range", last, now, maxRange, d)
		}
	})
}
