package energy

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
)

// procKey names a process across PID reuse: its PID and its start time
// (clock ticks after boot, /proc/<pid>/stat field 22).
type procKey struct {
	pid   int
	start uint64
}

// procStat is what the meter reads of /proc/<pid>/stat.
type procStat struct {
	pid   int
	ppid  int
	ticks uint64 // utime + stime, in clock ticks
	start uint64 // starttime, in clock ticks after boot
}

func (p procStat) key() procKey { return procKey{p.pid, p.start} }

// errStat is wrapped by parseStat's errors.
var errStat = errors.New("malformed /proc/<pid>/stat")

// parseStat decodes a /proc/<pid>/stat line: "pid (comm) state ppid …",
// where comm may hold spaces and parentheses, so the fields start after
// the last ')'.
func parseStat(b []byte) (procStat, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 1 || end < open {
		return procStat{}, fmt.Errorf("%w: no (comm)", errStat)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil || pid <= 0 {
		return procStat{}, fmt.Errorf("%w: pid %q", errStat, bytes.TrimSpace(b[:open]))
	}
	// Fields after comm, from field 3 (state): ppid is field 4, utime 14,
	// stime 15, starttime 22.
	f := bytes.Fields(b[end+1:])
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("%w: %d fields after comm, want at least 20", errStat, len(f))
	}
	num := func(i int) (uint64, error) {
		v, err := strconv.ParseUint(string(f[i]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: field %d: %v", errStat, i+3, err)
		}
		return v, nil
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return procStat{}, fmt.Errorf("%w: ppid: %v", errStat, err)
	}
	utime, err := num(11)
	if err != nil {
		return procStat{}, err
	}
	stime, err := num(12)
	if err != nil {
		return procStat{}, err
	}
	start, err := num(19)
	if err != nil {
		return procStat{}, err
	}
	return procStat{pid: pid, ppid: ppid, ticks: utime + stime, start: start}, nil
}

// readStat reads one process's stat from a /proc tree.
func readStat(proc fs.FS, pid int) (procStat, error) {
	b, err := fs.ReadFile(proc, strconv.Itoa(pid)+"/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// procSnap is every process of a /proc tree by PID.
type procSnap map[int]procStat

// snapshot reads every process of a /proc tree; processes that vanish or
// cannot be read are left out.
func snapshot(proc fs.FS) procSnap {
	ents, _ := fs.ReadDir(proc, ".")
	s := make(procSnap, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		if p, err := readStat(proc, pid); err == nil && p.pid == pid {
			s[pid] = p
		}
	}
	return s
}

// alive reports whether the process k names is in s (same PID, same start).
func (s procSnap) alive(k procKey) bool {
	p, ok := s[k.pid]
	return ok && p.start == k.start
}
