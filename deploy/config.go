package deploy

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cohortfl/cohort/internal/strictyaml"
	"go.yaml.in/yaml/v3"
)

// SiteConfig is a site agent's config file, site.yaml:
//
//	name: kit
//	coordinators: ["coord.example.org:7443"]
//	tls: {cert: site.crt, key: site.key, ca: ca.crt}
//	data: {fashion-mnist: /srv/data/fashion-mnist}
//	gpus: [0]
//	exec: {allow: false, workdir: ""}
//	log: {format: text, level: info}
type SiteConfig struct {
	// Name is the site's name; with TLS it must be its certificate's CN.
	// Required.
	Name string
	// Coordinators are the coordinators' host:port addresses, tried in
	// turn. At least one is required.
	Coordinators []string
	// TLS names the site's certificate, key and CA. nil means plaintext,
	// allowed only when every coordinator is on loopback ([IsLoopback]).
	TLS *TLSFiles
	// Data maps a dataset name to its path on this site (relative paths are
	// resolved against the config file's folder); a dataset not listed uses
	// the default search (the job's data.path, $COHORT_DATA, …).
	Data map[string]string
	// GPUs are the device indices the site's trainers see (as
	// CUDA_VISIBLE_DEVICES) and the energy meter measures. nil (the key
	// omitted) means every visible GPU; empty (gpus: []) means none.
	GPUs []int
	// Exec says whether jobs may run external trainer commands here.
	Exec ExecConfig
	// Log sets the agent's log output.
	Log LogConfig
}

// ExecConfig is a site's policy for external trainer commands.
type ExecConfig struct {
	// Allow lets jobs with model.kind exec run their command on this site.
	// Default false: such jobs are refused here.
	Allow bool
	// Workdir is the folder trainer commands run in (relative paths are
	// resolved against the config file's folder), against which a
	// command's relative paths resolve; "" means the site process's
	// working directory.
	Workdir string
}

// LogConfig sets a process's log output.
type LogConfig struct {
	// Format is "text" (the default) or "json".
	Format string
	// Level is "debug", "info" (the default), "warn" or "error".
	Level string
}

// Logger returns a logger writing to w as l says; l must be valid (as the
// loaders leave it).
func (l LogConfig) Logger(w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(l.Level))
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// CoordinatorConfig is a coordinator's config file, coordinator.yaml:
//
//	name: coord-1
//	listen: "0.0.0.0:7443"
//	tls: {cert: coordinator.crt, key: coordinator.key, ca: ca.crt}
//	state_dir: ./state
//	data: {fashion-mnist: /srv/data/fashion-mnist}
//	tracking: {uri: "sqlite:cohort.db"}
//	site_wait: 10m
//	session_timeout: 30s
//	max_model_bytes: 8GiB
//	memory_limit: 2GiB
//	rate_limits: {join: {rate: 1, burst: 10}, admin: {rate: 20, burst: 50}}
//	log: {format: text, level: info}
type CoordinatorConfig struct {
	// Name is the coordinator's name (its certificate's CN). Required.
	Name string
	// Listen is the host:port the gRPC server listens on. Required.
	Listen string
	// TLS names the coordinator's certificate, key and CA. nil means
	// plaintext, allowed only when Listen is loopback ([IsLoopback]).
	TLS *TLSFiles
	// StateDir is where job state persists; default "./state", resolved
	// against the config file's folder.
	StateDir string
	// Data maps a dataset name to its path, for the coordinator's own
	// test-set evaluation (relative paths resolved as StateDir).
	Data map[string]string
	// Tracking is the default tracking for jobs that name none.
	Tracking TrackingConfig
	// SiteWait is how long a job waits for its sites to join before it
	// fails; default 10m.
	SiteWait time.Duration
	// SessionTimeout ends the session of a site that sent nothing, not
	// even a heartbeat (every 5s), for this long; default 30s.
	SessionTimeout time.Duration
	// MaxModelBytes refuses, at submit, a job whose model's parameters ×
	// sites × 4 bytes exceed it; 0 (the key omitted) is the coordinator's
	// default, a quarter of the machine's memory. YAML takes a number of
	// bytes or a size such as "8GiB".
	MaxModelBytes int64
	// MemoryLimit is the Go runtime's soft memory limit for the
	// coordinator process (runtime/debug.SetMemoryLimit): past it the
	// garbage collector runs more often rather than let the heap grow to
	// twice what is live. 0 (the key omitted) sets none (GOMEMLIMIT, if
	// set, applies). Leave room above the coordinator's live memory —
	// about three times the model — or it collects without end. YAML
	// takes a number of bytes or a size such as "2GiB".
	MemoryLimit int64
	// RateLimits bound each site's Join calls and each admin's calls; a
	// zero field is the coordinator's default.
	RateLimits RateLimits
	// Cluster lists the coordinators that replicate the job state with
	// Raft. nil (the key omitted) is a one-voter cluster of this
	// coordinator alone, which resumes its jobs after a restart.
	Cluster *ClusterConfig
	// Log sets the coordinator's log output.
	Log LogConfig
}

// RateLimits is the rate_limits: section of coordinator.yaml. Each is a
// token bucket per caller (its certificate's CN; without TLS, a site's
// name or an admin's address); calls over it are refused with
// RESOURCE_EXHAUSTED. The defaults, 1/s burst 10 for Join and 20/s burst
// 50 for admin calls, never bother a real deployment.
type RateLimits struct {
	// Join bounds each site's Join calls.
	Join RateLimit
	// Admin bounds each admin's job calls (submit, cancel, list, get,
	// watch, upload weights, cluster status).
	Admin RateLimit
}

// RateLimit is one token bucket: Rate calls a second on average, Burst at
// once. Zero fields take the coordinator's defaults; a negative rate turns
// the limit off.
type RateLimit struct {
	Rate  float64
	Burst int
}

// ClusterConfig is the cluster: section of coordinator.yaml:
//
//	cluster:
//	  id: coord-1   # this node, one of the peers; default: name
//	  peers:
//	    - {id: coord-1, raft: "10.0.0.1:7444", grpc: "10.0.0.1:7443"}
//	    - {id: coord-2, raft: "10.0.0.2:7444", grpc: "10.0.0.2:7443"}
//	    - {id: coord-3, raft: "10.0.0.3:7444", grpc: "10.0.0.3:7443"}
//	  heartbeat_timeout: 1s
//	  election_timeout: 1s
//
// Every coordinator of a cluster lists the same peers. The nodes talk
// Raft over mutual TLS with the coordinators' certificates when tls: is
// set.
type ClusterConfig struct {
	// ID is this node's id among Peers; default the coordinator's name.
	ID string
	// Peers are the cluster's voters, this node included.
	Peers []ClusterPeer
	// HeartbeatTimeout and ElectionTimeout are Raft's (default 1s each):
	// a follower that hears nothing for this long calls an election.
	HeartbeatTimeout, ElectionTimeout time.Duration
}

// ClusterPeer is one coordinator of a cluster.
type ClusterPeer struct {
	// ID is the node's id (conventionally the coordinator's name).
	ID string
	// Raft is the host:port the node's Raft transport listens on and the
	// other nodes dial.
	Raft string
	// GRPC is the host:port sites and admins dial (its listen address as
	// reachable from them): followers name it when they redirect.
	GRPC string
}

// TrackingConfig names a tracking store.
type TrackingConfig struct {
	// URI is "sqlite:FILE" (the embedded store) or an http(s) MLflow
	// server; default "sqlite:cohort.db", a relative FILE being relative
	// to the process's working directory.
	URI string
}

// AdminConfig is an admin's config file, admin.yaml, for the commands that
// talk to a coordinator (submit, jobs, status, cancel, logs):
//
//	name: alice
//	coordinators: ["coord.example.org:7443"]
//	tls: {cert: admin.crt, key: admin.key, ca: ca.crt}
type AdminConfig struct {
	// Name is the admin's name (the certificate's CN). Required.
	Name string
	// Coordinators are the coordinators' host:port addresses, tried in
	// turn. At least one is required.
	Coordinators []string
	// TLS names the admin's certificate, key and CA; nil means plaintext,
	// allowed only when every coordinator is on loopback.
	TLS *TLSFiles
}

// Defaults filled in by the loaders.
const (
	DefaultStateDir    = "./state"
	DefaultTrackingURI = "sqlite:cohort.db"
	DefaultSiteWait    = 10 * time.Minute
	// DefaultSessionTimeout is six of a site's 5s heartbeats.
	DefaultSessionTimeout = 30 * time.Second
	DefaultLogFormat      = "text"
	DefaultLogLevel       = "info"
)

// LoadSiteConfig reads, defaults and validates the site config at path.
// Decoding is strict (unknown keys, wrong types and impossible values are
// errors); every problem is reported at once, each a [*FieldError] naming
// file:line, the key and the fix. Relative paths (tls files, data, exec
// workdir) are resolved against the file's folder.
func LoadSiteConfig(path string) (*SiteConfig, error) {
	data, err := readFile("site config", path)
	if err != nil {
		return nil, err
	}
	return parseSiteConfig(path, data)
}

// LoadCoordinatorConfig reads, defaults and validates the coordinator config
// at path, as [LoadSiteConfig] does.
func LoadCoordinatorConfig(path string) (*CoordinatorConfig, error) {
	data, err := readFile("coordinator config", path)
	if err != nil {
		return nil, err
	}
	return parseCoordinatorConfig(path, data)
}

// LoadAdminConfig reads and validates the admin config at path, as
// [LoadSiteConfig] does.
func LoadAdminConfig(path string) (*AdminConfig, error) {
	data, err := readFile("admin config", path)
	if err != nil {
		return nil, err
	}
	return parseAdminConfig(path, data)
}

func (d *decoder) tls(path string, n *yaml.Node, out **TLSFiles) {
	t := &TLSFiles{}
	d.mapping(path, n, "{cert: site.crt, key: site.key, ca: ca.crt}", []field{
		{"cert", func(p string, v *yaml.Node) { d.Str(p, v, &t.Cert) }},
		{"key", func(p string, v *yaml.Node) { d.Str(p, v, &t.Key) }},
		{"ca", func(p string, v *yaml.Node) { d.Str(p, v, &t.CA) }},
	})
	*out = t
}

func (d *decoder) log(path string, n *yaml.Node, out *LogConfig) {
	d.mapping(path, n, "{format: text, level: info}", []field{
		{"format", func(p string, v *yaml.Node) { d.Str(p, v, &out.Format) }},
		{"level", func(p string, v *yaml.Node) { d.Str(p, v, &out.Level) }},
	})
}

func parseSiteConfig(file string, data []byte) (*SiteConfig, error) {
	d := newDecoder(file)
	root, err := d.Document(data, "start from the site.yaml in the site's startup kit (cohort provision writes it)")
	if err != nil {
		return nil, err
	}
	c := &SiteConfig{}
	d.mapping("", root, "name: kit", []field{
		{"name", func(p string, v *yaml.Node) { d.Str(p, v, &c.Name) }},
		{"coordinators", func(p string, v *yaml.Node) {
			d.Strs(p, v, `["coord.example.org:7443"]`, &c.Coordinators)
		}},
		{"tls", func(p string, v *yaml.Node) { d.tls(p, v, &c.TLS) }},
		{"data", func(p string, v *yaml.Node) {
			d.StrMap(p, v, "{fashion-mnist: /srv/data/fashion-mnist}", "fashion-mnist", &c.Data)
		}},
		{"gpus", func(p string, v *yaml.Node) { d.Ints(p, v, "[0, 1]", &c.GPUs) }},
		{"exec", func(p string, v *yaml.Node) {
			d.mapping(p, v, `{allow: false, workdir: ""}`, []field{
				{"allow", func(p string, v *yaml.Node) { d.Bool(p, v, &c.Exec.Allow) }},
				{"workdir", func(p string, v *yaml.Node) { d.Str(p, v, &c.Exec.Workdir) }},
			})
		}},
		{"log", func(p string, v *yaml.Node) { d.log(p, v, &c.Log) }},
	})
	defaultLog(&c.Log)
	d.name("name", c.Name, "kit")
	d.addresses("coordinators", c.Coordinators, c.TLS == nil, "site")
	d.tlsFiles("tls", c.TLS)
	d.dataPaths("data", c.Data)
	d.gpus("gpus", c.GPUs)
	d.logValues("log", c.Log)
	if err := d.Err(); err != nil {
		return nil, err
	}
	dir := filepath.Dir(file)
	c.TLS = c.TLS.resolve(dir)
	c.Data = resolveMap(dir, c.Data)
	if c.Exec.Workdir != "" {
		c.Exec.Workdir = resolve(dir, c.Exec.Workdir)
	}
	return c, nil
}

func parseCoordinatorConfig(file string, data []byte) (*CoordinatorConfig, error) {
	d := newDecoder(file)
	root, err := d.Document(data, "start from the coordinator.yaml in the coordinator's startup kit (cohort provision writes it)")
	if err != nil {
		return nil, err
	}
	c := &CoordinatorConfig{}
	d.mapping("", root, "name: coord-1", []field{
		{"name", func(p string, v *yaml.Node) { d.Str(p, v, &c.Name) }},
		{"listen", func(p string, v *yaml.Node) { d.Str(p, v, &c.Listen) }},
		{"tls", func(p string, v *yaml.Node) { d.tls(p, v, &c.TLS) }},
		{"state_dir", func(p string, v *yaml.Node) { d.Str(p, v, &c.StateDir) }},
		{"data", func(p string, v *yaml.Node) {
			d.StrMap(p, v, "{fashion-mnist: /srv/data/fashion-mnist}", "fashion-mnist", &c.Data)
		}},
		{"tracking", func(p string, v *yaml.Node) {
			d.mapping(p, v, `{uri: "sqlite:cohort.db"}`, []field{
				{"uri", func(p string, v *yaml.Node) { d.Str(p, v, &c.Tracking.URI) }},
			})
		}},
		{"site_wait", func(p string, v *yaml.Node) { d.Duration(p, v, &c.SiteWait) }},
		{"session_timeout", func(p string, v *yaml.Node) { d.Duration(p, v, &c.SessionTimeout) }},
		{"max_model_bytes", func(p string, v *yaml.Node) { d.byteSize(p, v, &c.MaxModelBytes) }},
		{"memory_limit", func(p string, v *yaml.Node) { d.byteSize(p, v, &c.MemoryLimit) }},
		{"rate_limits", func(p string, v *yaml.Node) {
			d.mapping(p, v, "{join: {rate: 1, burst: 10}, admin: {rate: 20, burst: 50}}", []field{
				{"join", func(p string, v *yaml.Node) { d.rateLimit(p, v, &c.RateLimits.Join) }},
				{"admin", func(p string, v *yaml.Node) { d.rateLimit(p, v, &c.RateLimits.Admin) }},
			})
		}},
		{"cluster", func(p string, v *yaml.Node) { d.cluster(p, v, &c.Cluster) }},
		{"log", func(p string, v *yaml.Node) { d.log(p, v, &c.Log) }},
	})
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Tracking.URI == "" {
		c.Tracking.URI = DefaultTrackingURI
	}
	if _, set := d.Keys["site_wait"]; !set {
		c.SiteWait = DefaultSiteWait
	}
	if _, set := d.Keys["session_timeout"]; !set {
		c.SessionTimeout = DefaultSessionTimeout
	}
	defaultLog(&c.Log)
	d.name("name", c.Name, "coord-1")
	switch {
	case c.Listen == "":
		d.Check("listen", "missing; set the host:port to listen on, such as \"0.0.0.0:7443\"")
	default:
		if err := checkAddress(c.Listen, true); err != nil {
			d.Check("listen", "%v", err)
		} else if c.TLS == nil && !IsLoopback(c.Listen) {
			d.Check("listen", "%s is not a loopback address, so tls is required; add tls: {cert: coordinator.crt, key: coordinator.key, ca: ca.crt} from the startup kit (cohort provision), or listen on 127.0.0.1", c.Listen)
		}
	}
	d.tlsFiles("tls", c.TLS)
	d.dataPaths("data", c.Data)
	if c.Cluster != nil && c.Cluster.ID == "" {
		c.Cluster.ID = c.Name
	}
	d.clusterValues("cluster", c.Cluster, c.TLS == nil)
	if c.SiteWait <= 0 {
		d.Check("site_wait", "must be positive, such as \"10m\"")
	}
	if c.SessionTimeout < 0 {
		d.Check("session_timeout", "must be positive, such as \"30s\", or 0 to end a session only when its stream breaks")
	} else if c.SessionTimeout > 0 && c.SessionTimeout < 10*time.Second {
		d.Check("session_timeout", "%s is under two heartbeats (sites heartbeat every 5s); use at least \"10s\", such as \"30s\"", c.SessionTimeout)
	}
	if c.MemoryLimit < 0 {
		d.Check("memory_limit", "must be positive, such as \"2GiB\"; omit it for no limit")
	}
	if c.MaxModelBytes < 0 {
		d.Check("max_model_bytes", "must be positive, such as \"8GiB\"; omit it for a quarter of the machine's memory")
	}
	for _, l := range []struct {
		key string
		l   RateLimit
	}{{"rate_limits.join", c.RateLimits.Join}, {"rate_limits.admin", c.RateLimits.Admin}} {
		if l.l.Burst < 0 {
			d.Check(l.key+".burst", "must be at least 1, such as 10")
		}
	}
	if u := c.Tracking.URI; !strings.HasPrefix(u, "sqlite:") && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		d.Check("tracking.uri", "%q is not a tracking URI; use \"sqlite:FILE\" or an http(s):// MLflow server", u)
	}
	d.logValues("log", c.Log)
	if err := d.Err(); err != nil {
		return nil, err
	}
	dir := filepath.Dir(file)
	c.TLS = c.TLS.resolve(dir)
	c.StateDir = resolve(dir, c.StateDir)
	c.Data = resolveMap(dir, c.Data)
	return c, nil
}

func (d *decoder) cluster(path string, n *yaml.Node, out **ClusterConfig) {
	c := &ClusterConfig{}
	const peerExample = `{id: coord-1, raft: "10.0.0.1:7444", grpc: "10.0.0.1:7443"}`
	d.mapping(path, n, "{id: coord-1, peers: [...]}", []field{
		{"id", func(p string, v *yaml.Node) { d.Str(p, v, &c.ID) }},
		{"peers", func(p string, v *yaml.Node) {
			d.List(p, v, "["+peerExample+", ...]", func(p string, v *yaml.Node) {
				var peer ClusterPeer
				d.mapping(p, v, peerExample, []field{
					{"id", func(p string, v *yaml.Node) { d.Str(p, v, &peer.ID) }},
					{"raft", func(p string, v *yaml.Node) { d.Str(p, v, &peer.Raft) }},
					{"grpc", func(p string, v *yaml.Node) { d.Str(p, v, &peer.GRPC) }},
				})
				c.Peers = append(c.Peers, peer)
			})
		}},
		{"heartbeat_timeout", func(p string, v *yaml.Node) { d.Duration(p, v, &c.HeartbeatTimeout) }},
		{"election_timeout", func(p string, v *yaml.Node) { d.Duration(p, v, &c.ElectionTimeout) }},
	})
	*out = c
}

// rateLimit decodes {rate: 1, burst: 10}.
func (d *decoder) rateLimit(path string, n *yaml.Node, out *RateLimit) {
	d.mapping(path, n, "{rate: 1, burst: 10}", []field{
		{"rate", func(p string, v *yaml.Node) {
			if !d.Scalar(p, v, "calls a second, such as 1 or 0.5") {
				return
			}
			f, err := strconv.ParseFloat(v.Value, 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.Fail(p, v, "%s is not a number of calls a second, such as 1 or 0.5 (-1 turns the limit off)", strictyaml.Describe(v))
				return
			}
			out.Rate = f
		}},
		{"burst", func(p string, v *yaml.Node) { d.Int(p, v, &out.Burst) }},
	})
}

// byteSize decodes a number of bytes, or a size with a binary unit:
// "512MiB", "8GiB", "1TiB".
func (d *decoder) byteSize(path string, n *yaml.Node, out *int64) {
	const want = "a number of bytes or a size such as \"8GiB\" or \"512MiB\""
	if !d.Scalar(path, n, want) {
		return
	}
	v := strings.TrimSpace(n.Value)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}} {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	x, err := strconv.ParseInt(v, 10, 64)
	if err != nil || x > math.MaxInt64/mult {
		d.Fail(path, n, "%s is not %s", strictyaml.Describe(n), want)
		return
	}
	*out = x * mult
}

// clusterValues checks a cluster: section (its id defaulted already).
func (d *decoder) clusterValues(path string, c *ClusterConfig, plaintext bool) {
	if c == nil {
		return
	}
	if len(c.Peers) == 0 {
		d.Check(strictyaml.Join(path, "peers"), "missing; list every coordinator of the cluster, this one included, such as [{id: coord-1, raft: \"10.0.0.1:7444\", grpc: \"10.0.0.1:7443\"}, ...], or remove cluster: for a single coordinator")
		return
	}
	ids, rafts, self := map[string]bool{}, map[string]bool{}, false
	for i, p := range c.Peers {
		pp := strictyaml.Join(strictyaml.Join(path, "peers"), strconv.Itoa(i))
		if p.ID == "" {
			d.Check(strictyaml.Join(pp, "id"), "missing; name the node, such as \"coord-%d\"", i+1)
		} else if ids[p.ID] {
			d.Check(strictyaml.Join(pp, "id"), "node id %q is listed twice; every node needs its own id", p.ID)
		}
		ids[p.ID] = true
		self = self || p.ID == c.ID
		for _, a := range []struct{ key, addr, example string }{{"raft", p.Raft, "10.0.0.1:7444"}, {"grpc", p.GRPC, "10.0.0.1:7443"}} {
			switch err := checkAddress(a.addr, false); {
			case a.addr == "":
				d.Check(strictyaml.Join(pp, a.key), "missing; set the node's %s host:port, such as %q", a.key, a.example)
			case err != nil:
				d.Check(strictyaml.Join(pp, a.key), "%v", err)
			case plaintext && !IsLoopback(a.addr):
				d.Check(strictyaml.Join(pp, a.key), "%s is not a loopback address, so tls is required; add tls: from the coordinator's startup kit", a.addr)
			}
		}
		if p.Raft != "" && rafts[p.Raft] {
			d.Check(strictyaml.Join(pp, "raft"), "%s is listed twice; every node needs its own raft address", p.Raft)
		}
		rafts[p.Raft] = true
	}
	if !self {
		d.Check(strictyaml.Join(path, "id"), "%q is not among the peers; set cluster.id to this node's id (default: the coordinator's name) or add this node to peers", c.ID)
	}
	if c.HeartbeatTimeout < 0 || c.ElectionTimeout < 0 {
		d.Check(path, "timeouts must be positive, such as \"1s\"")
	}
}

func parseAdminConfig(file string, data []byte) (*AdminConfig, error) {
	d := newDecoder(file)
	root, err := d.Document(data, "start from the admin.yaml in the admin's startup kit (cohort provision writes it)")
	if err != nil {
		return nil, err
	}
	c := &AdminConfig{}
	d.mapping("", root, "name: alice", []field{
		{"name", func(p string, v *yaml.Node) { d.Str(p, v, &c.Name) }},
		{"coordinators", func(p string, v *yaml.Node) {
			d.Strs(p, v, `["coord.example.org:7443"]`, &c.Coordinators)
		}},
		{"tls", func(p string, v *yaml.Node) { d.tls(p, v, &c.TLS) }},
	})
	d.name("name", c.Name, "alice")
	d.addresses("coordinators", c.Coordinators, c.TLS == nil, "admin")
	d.tlsFiles("tls", c.TLS)
	if err := d.Err(); err != nil {
		return nil, err
	}
	c.TLS = c.TLS.resolve(filepath.Dir(file))
	return c, nil
}

func defaultLog(l *LogConfig) {
	if l.Format == "" {
		l.Format = DefaultLogFormat
	}
	if l.Level == "" {
		l.Level = DefaultLogLevel
	}
}

// name checks a name: required, and DNS-label-like (it becomes a
// certificate's CN and a folder name).
func (d *decoder) name(path, name, example string) {
	if name == "" {
		d.Check(path, "missing; set a name such as %q", example)
		return
	}
	if err := checkName(name); err != nil {
		d.Check(path, "%v", err)
	}
}

// checkName reports why name is not a DNS label: 1 to 63 lowercase letters,
// digits and '-', starting with a letter and not ending with '-'.
func checkName(name string) error {
	ok := len(name) <= 63 && name[0] >= 'a' && name[0] <= 'z' && name[len(name)-1] != '-'
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			ok = false
		}
	}
	if ok {
		return nil
	}
	msg := fmt.Sprintf("%q is not a valid name: use 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'", name)
	if s := suggestName(name); s != "" && s != name {
		msg += fmt.Sprintf(", such as %q", s)
	}
	return fmt.Errorf("%s", msg)
}

// suggestName turns name into a valid one where that is simple, or "".
func suggestName(name string) string {
	s := strings.Map(func(r rune) rune {
		switch {
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			return r
		case r == '_' || r == '.' || r == ' ':
			return '-'
		}
		return -1
	}, name)
	s = strings.Trim(s, "-")
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-")
	}
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return ""
	}
	return s
}

// addresses checks a list of coordinator addresses of a site or admin.
func (d *decoder) addresses(path string, addrs []string, plaintext bool, who string) {
	if len(addrs) == 0 {
		d.Check(path, "missing; list the coordinators' host:port addresses, such as [\"coord.example.org:7443\"]")
		return
	}
	seen := map[string]bool{}
	for i, a := range addrs {
		p := strictyaml.Join(path, strconv.Itoa(i))
		if err := checkAddress(a, false); err != nil {
			d.Check(p, "%v", err)
			continue
		}
		if seen[a] {
			d.Check(p, "%q is listed twice; remove one", a)
		}
		seen[a] = true
		if plaintext && !IsLoopback(a) {
			d.Check(p, "%s is not a loopback address, so tls is required; add tls: {cert: %s.crt, key: %[2]s.key, ca: ca.crt} from the %[2]s's startup kit (cohort provision)", a, who)
		}
	}
}

// checkAddress reports why addr is not host:port (host may be empty when
// listening).
func checkAddress(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port, such as \"coord.example.org:7443\"", addr)
	}
	if host == "" && !listen {
		return fmt.Errorf("%q has no host; write host:port, such as \"coord.example.org:7443\"", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", addr, port)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
			return fmt.Errorf("%q: %q is neither an IP address nor a DNS name", addr, host)
		}
	}
	return nil
}

// validHostname reports whether h is a DNS name (labels of letters, digits,
// '-' and '_', dot-separated).
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// IsLoopback reports whether addr (host:port, or a bare host) is on the
// loopback interface: an IP in 127.0.0.0/8 or ::1, or the name localhost.
// Plaintext (no tls) is allowed only there.
func IsLoopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func (d *decoder) tlsFiles(path string, t *TLSFiles) {
	if t == nil {
		return
	}
	for _, f := range []struct{ key, val, example string }{
		{"cert", t.Cert, "site.crt"}, {"key", t.Key, "site.key"}, {"ca", t.CA, "ca.crt"},
	} {
		if f.val == "" {
			d.Check(strictyaml.Join(path, f.key), "missing; name the file from the startup kit, such as %s", f.example)
		}
	}
}

func (d *decoder) dataPaths(path string, m map[string]string) {
	for _, k := range sortedKeys(m) {
		if m[k] == "" {
			d.Check(strictyaml.Join(path, k), "the path is empty; give the dataset's folder, or remove the entry to use the default search")
		}
	}
}

func (d *decoder) gpus(path string, gpus []int) {
	seen := map[int]bool{}
	for i, g := range gpus {
		p := strictyaml.Join(path, strconv.Itoa(i))
		if g < 0 {
			d.Check(p, "%d is negative; GPU indices start at 0 (as nvidia-smi lists them)", g)
		}
		if seen[g] {
			d.Check(p, "GPU %d is listed twice; remove one", g)
		}
		seen[g] = true
	}
}

func (d *decoder) logValues(path string, l LogConfig) {
	if l.Format != "text" && l.Format != "json" {
		d.Check(strictyaml.Join(path, "format"), "%q is not a log format; use text or json", l.Format)
	}
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		msg := fmt.Sprintf("%q is not a log level; use debug, info, warn or error", l.Level)
		if c := closest(l.Level, []string{"debug", "info", "warn", "error"}); c != "" {
			msg = fmt.Sprintf("%q is not a log level (did you mean %q?)", l.Level, c)
		}
		d.Check(strictyaml.Join(path, "level"), "%s", msg)
	}
}

func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

func resolveMap(dir string, m map[string]string) map[string]string {
	for k, v := range m {
		m[k] = resolve(dir, v)
	}
	return m
}

func (t *TLSFiles) resolve(dir string) *TLSFiles {
	if t == nil {
		return nil
	}
	return &TLSFiles{Cert: resolve(dir, t.Cert), Key: resolve(dir, t.Key), CA: resolve(dir, t.CA)}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
