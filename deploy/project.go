package deploy

import (
	"net"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// Project is a federation's project file, project.yaml: who takes part, from
// which [Provision] makes the CA, the certificates and the startup kits.
//
//	name: fl-study
//	coordinators:
//	  - {name: coord-1, address: "coord.example.org:7443"}
//	sites:
//	  - {name: kit, gpus: [0]}
//	  - {name: unibo}
//	admins:
//	  - {name: alice}
//	validity: 8760h
type Project struct {
	// Name names the project (and its CA). Required; DNS-label-like.
	Name string
	// Coordinators are one or more coordinators.
	Coordinators []ProjectCoordinator
	// Sites are the institutes' site agents.
	Sites []ProjectSite
	// Admins are the people who submit and manage jobs.
	Admins []ProjectAdmin
	// Validity is the lifetime of the certificates issued; default
	// [DefaultValidity] (one year).
	Validity time.Duration
}

// ProjectCoordinator is one coordinator of a [Project].
type ProjectCoordinator struct {
	// Name is the coordinator's name, its certificate's CN.
	Name string
	// Address is the host:port sites dial: the host goes into the
	// certificate's SANs (DNS name or IP), the port is where it listens.
	Address string
	// Raft is the host:port the coordinator's Raft transport listens on
	// when the project has several coordinators; default Address's host
	// with the port after Address's.
	Raft string
}

// ProjectSite is one site of a [Project].
type ProjectSite struct {
	// Name is the site's name, its certificate's CN.
	Name string
	// GPUs are written to the site's config as its gpus; nil (omitted)
	// means every visible GPU.
	GPUs []int
}

// ProjectAdmin is one admin of a [Project].
type ProjectAdmin struct {
	// Name is the admin's name, its certificate's CN.
	Name string
}

// DefaultValidity is the certificates' lifetime when the project sets none.
const DefaultValidity = 365 * 24 * time.Hour

// LoadProject reads, defaults and validates the project file at path. As
// with the config files, decoding is strict and every problem is reported
// at once, each a [*FieldError] naming file:line, the key and the fix.
// Names must be non-empty, unique across coordinators, sites and admins,
// and DNS-label-like; coordinator addresses host:port.
func LoadProject(path string) (*Project, error) {
	data, err := readFile("project", path)
	if err != nil {
		return nil, err
	}
	return parseProject(path, data)
}

func parseProject(file string, data []byte) (*Project, error) {
	d := newDecoder(file)
	root, err := d.Document(data, "start from the project.yaml in the deployment walk-through (examples/)")
	if err != nil {
		return nil, err
	}
	p := &Project{}
	d.mapping("", root, "name: fl-study", []field{
		{"name", func(path string, v *yaml.Node) { d.Str(path, v, &p.Name) }},
		{"coordinators", func(path string, v *yaml.Node) {
			d.List(path, v, `[{name: coord-1, address: "coord.example.org:7443"}]`, func(path string, v *yaml.Node) {
				var c ProjectCoordinator
				d.mapping(path, v, `{name: coord-1, address: "coord.example.org:7443"}`, []field{
					{"name", func(path string, v *yaml.Node) { d.Str(path, v, &c.Name) }},
					{"address", func(path string, v *yaml.Node) { d.Str(path, v, &c.Address) }},
					{"raft", func(path string, v *yaml.Node) { d.Str(path, v, &c.Raft) }},
				})
				p.Coordinators = append(p.Coordinators, c)
			})
		}},
		{"sites", func(path string, v *yaml.Node) {
			d.List(path, v, "[{name: kit, gpus: [0]}]", func(path string, v *yaml.Node) {
				var s ProjectSite
				d.mapping(path, v, "{name: kit, gpus: [0]}", []field{
					{"name", func(path string, v *yaml.Node) { d.Str(path, v, &s.Name) }},
					{"gpus", func(path string, v *yaml.Node) { d.Ints(path, v, "[0, 1]", &s.GPUs) }},
				})
				p.Sites = append(p.Sites, s)
			})
		}},
		{"admins", func(path string, v *yaml.Node) {
			d.List(path, v, "[{name: alice}]", func(path string, v *yaml.Node) {
				var a ProjectAdmin
				d.mapping(path, v, "{name: alice}", []field{
					{"name", func(path string, v *yaml.Node) { d.Str(path, v, &a.Name) }},
				})
				p.Admins = append(p.Admins, a)
			})
		}},
		{"validity", func(path string, v *yaml.Node) { d.Duration(path, v, &p.Validity) }},
	})
	if _, set := d.Keys["validity"]; !set {
		p.Validity = DefaultValidity
	}
	d.name("name", p.Name, "fl-study")
	if len(p.Coordinators) == 0 {
		d.Check("coordinators", "missing; list at least one, such as [{name: coord-1, address: \"coord.example.org:7443\"}]")
	}
	if p.Validity <= 0 {
		d.Check("validity", "must be positive, such as \"8760h\" (one year)")
	}
	seen := map[string]string{}
	names := func(role string, i int, name, example string) {
		path := role + "." + strconv.Itoa(i) + ".name"
		if name == "" {
			d.Check(path, "missing; every %s needs a name, such as %q", role[:len(role)-1], example)
			return
		}
		if err := checkName(name); err != nil {
			d.Check(path, "%v", err)
			return
		}
		if first, dup := seen[name]; dup {
			d.Check(path, "%q is already the name of %s; names are unique across coordinators, sites and admins (they are certificate CNs)", name, first)
			return
		}
		seen[name] = path[:len(path)-len(".name")]
	}
	for i, c := range p.Coordinators {
		names("coordinators", i, c.Name, "coord-1")
		ap := "coordinators." + strconv.Itoa(i) + ".address"
		if c.Address == "" {
			d.Check(ap, "missing; give the host:port sites dial, such as \"coord.example.org:7443\"")
		} else if err := checkAddress(c.Address, false); err != nil {
			d.Check(ap, "%v", err)
		}
		if c.Raft != "" {
			if err := checkAddress(c.Raft, false); err != nil {
				d.Check("coordinators."+strconv.Itoa(i)+".raft", "%v", err)
			}
		}
	}
	for i, s := range p.Sites {
		names("sites", i, s.Name, "kit")
		d.gpus("sites."+strconv.Itoa(i)+".gpus", s.GPUs)
	}
	for i, a := range p.Admins {
		names("admins", i, a.Name, "alice")
	}
	if err := d.Err(); err != nil {
		return nil, err
	}
	return p, nil
}

// coordinatorAddresses lists every coordinator's address.
func (p *Project) coordinatorAddresses() []string {
	out := make([]string, len(p.Coordinators))
	for i, c := range p.Coordinators {
		out[i] = c.Address
	}
	return out
}

// splitAddress returns host and port of a validated address.
func splitAddress(addr string) (host, port string) {
	host, port, _ = net.SplitHostPort(addr)
	return host, port
}
