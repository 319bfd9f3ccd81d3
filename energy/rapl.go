package energy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// raplDomain is one powercap RAPL zone: a package or one of its
// subdomains (dram, core, uncore).
type raplDomain struct {
	name     string // package-0, package-0/dram, ...
	path     string // the zone's folder
	maxRange uint64 // max_energy_range_uj: the counter wraps past it
}

// openRAPL lists the readable RAPL domains under root, or says why there
// are none. Only packages and DRAM are kept: core and uncore are inside the
// package figure and would count twice.
func openRAPL(root string) ([]raplDomain, string) {
	zones, _ := filepath.Glob(filepath.Join(root, "intel-rapl:*"))
	more, _ := filepath.Glob(filepath.Join(root, "intel-rapl:*", "intel-rapl:*"))
	zones = append(zones, more...)
	if len(zones) == 0 {
		return nil, fmt.Sprintf("no RAPL zones under %s (not an Intel/AMD host with powercap, or a VM that hides it)", root)
	}
	sort.Strings(zones)
	var out []raplDomain
	var denied []string
	for _, z := range zones {
		nameB, err := os.ReadFile(filepath.Join(z, "name"))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(nameB))
		sub := strings.Count(filepath.Base(z), ":") == 2
		if sub && name != "dram" {
			continue
		}
		if sub {
			parent, _ := os.ReadFile(filepath.Join(filepath.Dir(z), "name"))
			name = strings.TrimSpace(string(parent)) + "/" + name
		}
		if _, err := readUint(filepath.Join(z, "energy_uj")); err != nil {
			if errors.Is(err, fs.ErrPermission) {
				denied = append(denied, filepath.Join(z, "energy_uj"))
			}
			continue
		}
		maxR, err := readUint(filepath.Join(z, "max_energy_range_uj"))
		if err != nil || maxR == 0 {
			maxR = 0
		}
		out = append(out, raplDomain{name: name, path: z, maxRange: maxR})
	}
	if len(out) == 0 {
		if len(denied) > 0 {
			return nil, fmt.Sprintf("RAPL counters are not readable (%s): since Linux 5.10 energy_uj is root-only; run the site as root or `chmod a+r %s/intel-rapl:*/energy_uj %s/intel-rapl:*/intel-rapl:*/energy_uj` (a udev rule makes it last)",
				strings.Join(denied, ", "), root, root)
		}
		return nil, fmt.Sprintf("no readable RAPL package or DRAM zone under %s", root)
	}
	return out, ""
}

func (d raplDomain) read() (uint64, error) { return readUint(filepath.Join(d.path, "energy_uj")) }

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// raplCounter accumulates one domain's energy across wrap-arounds.
type raplCounter struct {
	d     raplDomain
	last  uint64
	total uint64 // µJ
	wraps int
	err   error
}

func (c *raplCounter) update() {
	v, err := c.d.read()
	if err != nil {
		c.err = err
		return
	}
	if v >= c.last {
		c.total += v - c.last
	} else if c.d.maxRange > 0 && c.last <= c.d.maxRange {
		c.total += c.d.maxRange - c.last + v + 1
		c.wraps++
	} else {
		c.total += v // an unknown range: count from zero
		c.wraps++
	}
	c.last = v
}
