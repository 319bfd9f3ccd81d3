package energy

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// raplDomain is one powercap RAPL zone the meter reads: a CPU package, or
// a package's DRAM.
type raplDomain struct {
	fsys     fs.FS
	name     string // package-0, package-0/dram, ...
	file     string // the zone's energy_uj, relative to fsys
	maxRange uint64 // max_energy_range_uj (0: unknown): the counter wraps past it
}

// openRAPL lists the readable RAPL package and DRAM domains of the powercap
// tree fsys (found at root, which only messages name), or says why there
// are none. Core, uncore (inside the package's figure) and psys (the whole
// platform, which contains the packages) are left out so that the domains
// can be summed.
func openRAPL(fsys fs.FS, root string) ([]raplDomain, string) {
	zones, _ := fs.Glob(fsys, "intel-rapl:*")
	sub, _ := fs.Glob(fsys, "intel-rapl:*/intel-rapl:*")
	zones = append(zones, sub...)
	if len(zones) == 0 {
		return nil, fmt.Sprintf("no RAPL zones under %s: not a Linux host with an Intel or AMD CPU and the intel_rapl powercap driver, or a VM that does not pass RAPL through (most do not)", root)
	}
	sort.Strings(zones)
	var (
		out    []raplDomain
		denied []string
		broken []string
	)
	for _, z := range zones {
		name, err := readName(fsys, z)
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				denied = append(denied, path.Join(root, z, "name"))
			}
			continue
		}
		nested := strings.Contains(path.Dir(z), "intel-rapl:")
		switch {
		case nested && name == "dram":
			parent, err := readName(fsys, path.Dir(z))
			if err != nil {
				continue
			}
			name = parent + "/dram"
		case nested:
			continue // core, uncore: inside the package's figure
		case !strings.HasPrefix(name, "package") && name != "dram":
			continue // psys: the whole platform, containing the packages
		}
		file := path.Join(z, "energy_uj")
		if _, err := readUint(fsys, file); err != nil {
			if errors.Is(err, fs.ErrPermission) {
				denied = append(denied, path.Join(root, file))
			} else {
				broken = append(broken, fmt.Sprintf("%s: %v", path.Join(root, file), err))
			}
			continue
		}
		maxRange, _ := readUint(fsys, path.Join(z, "max_energy_range_uj")) // 0: wraps are guessed
		out = append(out, raplDomain{fsys: fsys, name: name, file: file, maxRange: maxRange})
	}
	if len(out) > 0 {
		return out, ""
	}
	if len(denied) > 0 {
		return nil, fmt.Sprintf("permission denied reading %s: since Linux 5.10 (CVE-2020-8694) energy_uj is readable by root only. "+
			"Fix: run `sudo chmod a+r %s/intel-rapl:*/energy_uj %s/intel-rapl:*/intel-rapl:*/energy_uj` "+
			"(lost at reboot; a udev rule such as `SUBSYSTEM==\"powercap\", ACTION==\"add\", RUN+=\"/bin/chmod a+r /sys%%p/energy_uj\"` keeps it), "+
			"or give the site's user the CAP_DAC_READ_SEARCH capability",
			strings.Join(denied, ", "), root, root)
	}
	if len(broken) > 0 {
		return nil, "RAPL counters are unreadable: " + strings.Join(broken, "; ")
	}
	return nil, fmt.Sprintf("no RAPL package or DRAM zone under %s (only platform or core zones)", root)
}

func (d raplDomain) read() (uint64, error) { return readUint(d.fsys, d.file) }

func readName(fsys fs.FS, zone string) (string, error) {
	b, err := fs.ReadFile(fsys, path.Join(zone, "name"))
	if err != nil {
		return "", err
	}
	name := strings.TrimSpace(string(b))
	if name == "" {
		return "", fmt.Errorf("reading %s: empty zone name", path.Join(zone, "name"))
	}
	return name, nil
}

// readUint reads a sysfs file holding one unsigned decimal.
func readUint(fsys fs.FS, file string) (uint64, error) {
	b, err := fs.ReadFile(fsys, file)
	if err != nil {
		return 0, err
	}
	return parseUJ(b)
}

// parseUJ parses a powercap counter file's contents: an unsigned decimal
// and a newline.
func parseUJ(b []byte) (uint64, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing a powercap counter: %w", err)
	}
	return v, nil
}

// raplCounter accumulates one domain's energy across wrap-arounds. The
// hardware counter is 32 bits wide: at 100 W it wraps after about 45
// minutes on most parts (max_energy_range_uj says exactly), so it is read
// often enough (Options.CounterInterval) to see every wrap.
type raplCounter struct {
	d     raplDomain
	idx   int // d's index in Meter.rapl
	last  uint64
	total uint64 // µJ since the measurement started
	wraps int
	fails int // reads that failed after the first
	err   error
}

// update adds what the counter moved since the last read, given a new
// read of it.
func (c *raplCounter) update(r reading) {
	v, err := r.v, r.err
	if err != nil {
		c.fails++
		c.err = err
		return
	}
	c.total += raplDelta(c.last, v, c.d.maxRange)
	if v < c.last {
		c.wraps++
	}
	c.last = v
}

// raplDelta is how far a counter that wraps past maxRange moved from last
// to now, given that it wrapped at most once. With maxRange unknown (0) or
// inconsistent with last, the movement past the wrap is all that can be
// known.
func raplDelta(last, now, maxRange uint64) uint64 {
	switch {
	case now >= last:
		return now - last
	case maxRange > 0 && last <= maxRange:
		return maxRange - last + now + 1
	default:
		return now
	}
}
