package energy

import (
	"strconv"
	"strings"
	"testing"
)

// statLine is a /proc/<pid>/stat line with the given fields.
func statLine(pid int, comm string, ppid int, utime, stime, start uint64) string {
	f := make([]string, 50)
	for i := range f {
		f[i] = "0"
	}
	f[0] = strconv.Itoa(pid)
	f[1] = "(" + comm + ")"
	f[2] = "S"
	f[3] = strconv.Itoa(ppid)
	f[13] = strconv.FormatUint(utime, 10)
	f[14] = strconv.FormatUint(stime, 10)
	f[21] = strconv.FormatUint(start, 10)
	return strings.Join(f, " ") + "\n"
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		line string
		want procStat
	}{
		{statLine(42, "python3", 7, 100, 20, 9999), procStat{pid: 42, ppid: 7, ticks: 120, start: 9999}},
		{statLine(43, "a b) (c", 1, 1, 2, 3), procStat{pid: 43, ppid: 1, ticks: 3, start: 3}},
		{statLine(44, ")", 2, 0, 0, 5), procStat{pid: 44, ppid: 2, start: 5}},
	} {
		got, err := parseStat([]byte(tc.line))
		if err != nil || got != tc.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "42 python 7", "x (a) S 1", "42 (a) S 1 2 3", statLine(0, "a", 1, 1, 1, 1)} {
		if got, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) = %+v, want an error", bad, got)
		}
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte(statLine(42, "python3", 7, 100, 20, 9999)))
	f.Add([]byte(statLine(43, "a b) (c", 1, 1, 2, 3)))
	f.Add([]byte("1 (systemd) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 9 10 11"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseStat(b)
		if err != nil {
			return
		}
		if p.pid <= 0 {
			t.Errorf("parseStat(%q) accepted pid %d", b, p.pid)
		}
		// Whatever comm holds, the fields come from after its last ')'.
		again, err := parseStat([]byte(statLine(p.pid, "x) (y", p.ppid, p.ticks, 0, p.start)))
		if err != nil || again != p {
			t.Errorf("round trip of %+v = %+v, %v", p, again, err)
		}
	})
}
