package archtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/cohortfl/cohort"

// Package is one package as `go list -json` describes it: its imports,
// those of its in-package test files and those of its external (_test
// package) test files.
type Package struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// layer is one row of DESIGN.md's Layout table: the folder, the module
// folders its code (tests included) may import, and the third-party
// module prefixes its non-test code may import. Tests may import any
// third-party package (go-cmp, goleak, bufconn, chromedp).
type layer struct {
	dir string
	// may lists the module folders (with their subfolders) it may import
	// besides its own layer; all lets it import any package of the module.
	may []string
	all bool
	// third lists the third-party module prefixes its non-test code may
	// import; anyThird lets it import any.
	third    []string
	anyThird bool
	// stdlib, when not nil, is the only standard library it may import
	// (server/round: the pure state machine does no I/O).
	stdlib []string
}

var (
	grpcMods  = []string{"google.golang.org/grpc", "google.golang.org/protobuf", "google.golang.org/genproto"}
	gonum     = []string{"gonum.org/v1/gonum"}
	yamlMod   = []string{"go.yaml.in/yaml/v3"}
	raftMods  = []string{"github.com/hashicorp/raft", "github.com/hashicorp/raft-boltdb", "github.com/hashicorp/raft-wal", "go.etcd.io/bbolt", "github.com/hashicorp/go-hclog"}
	roundStd  = []string{"cmp", "errors", "fmt", "iter", "maps", "math", "math/bits", "math/rand/v2", "slices", "sort", "strconv", "strings", "time"}
	ioExample = "net, os, grpc, protobuf, tracking, database"
)

// layers states DESIGN.md's Layout: each folder and what it may import.
// The longest folder that holds a package is its layer; a package may
// import its own layer's packages, those of the folders its layer lists
// and the exceptions below. A package in no layer fails the test.
var layers = []layer{
	{dir: "proto/cohort/v1", third: grpcMods},
	{dir: "model", third: gonum},
	{dir: "aggregators", may: []string{"model"}, third: gonum},
	{dir: "privacy"}, // differential privacy's math: a leaf, like aggregators
	{dir: "energy", third: []string{"github.com/NVIDIA/go-nvml"}},
	{dir: "tracking", third: []string{"modernc.org/sqlite", "github.com/jackc/pgx", "gonum.org/v1/plot", "golang.org/x/crypto"}},
	{dir: "job", third: yamlMod},
	{dir: "deploy", third: yamlMod},
	{dir: "server", may: []string{"proto", "model", "aggregators", "job", "tracking", "server/ha", "server/round", "server/blobs", "internal/bulk"},
		third: append([]string{"golang.org/x/time/rate", "golang.org/x/sync"}, append(yamlMod, grpcMods...)...)},
	{dir: "server/round", stdlib: roundStd},
	// server/ha keeps models in server/blobs' store, out of the raft log.
	{dir: "server/ha", may: []string{"server/blobs"}, third: raftMods},
	{dir: "server/blobs"}, // the content-addressed blob store on disk: standard library only
	{dir: "server/prepare", may: []string{"server", "proto", "model", "job", "train", "data"}},
	{dir: "train", may: []string{"model", "energy"}, third: append([]string{"golang.org/x/sys"}, gonum...)},
	{dir: "data"},
	{dir: "client", may: []string{"proto", "model", "aggregators", "energy", "job", "train", "data", "internal/bulk"}, third: append([]string{"golang.org/x/sync"}, grpcMods...)},
	{dir: "cmd", all: true, anyThird: true},
	{dir: "internal/federation", may: []string{"proto", "model", "aggregators", "privacy", "energy", "tracking", "job", "server", "train", "data", "client"}, anyThird: true},
	{dir: "internal/hclogslog", third: []string{"github.com/hashicorp/go-hclog"}},
	{dir: "internal/strictyaml", third: yamlMod},
	// the gRPC codec that moves model chunks without protobuf's copies;
	// its tests send Cohort's messages.
	{dir: "internal/bulk", may: []string{"proto"}, third: grpcMods},
	{dir: "launch/slurm"},        // sbatch scripts and Slurm's commands: stdlib only; cmd wires it
	{dir: "internal/activation"}, // systemd socket activation: stdlib only; cmd wires it
	{dir: "internal/archtest"},
}

// exception is an import edge the Layout table does not list but the code
// needs, with the reason.
type exception struct {
	from, to, why string
	// pending marks an exception for code still being written; it is not
	// reported unused.
	pending bool
}

var exceptions = []exception{
	{from: "train", to: "data", why: "a trainer trains and evaluates on a data.Dataset; data imports neither"},
	{from: "server", to: "energy", why: "the recorder turns joules into CO2 with energy.CO2Grams, the formula's one home"},
	{from: "server", to: "privacy", why: "differential privacy's clipping and accountant are server-side strategy math, a leaf like aggregators"},
	{from: "server/ha", to: "internal/hclogslog", why: "raft logs through hclog; the adapter hands its lines to slog", pending: true},
	{from: "job", to: "internal/strictyaml", why: "one strict-YAML decoder with file:line:col errors for every config file"},
	{from: "deploy", to: "internal/strictyaml", why: "one strict-YAML decoder with file:line:col errors for every config file"},
}

// leaves are packages that must stay at the bottom of their layer: each
// may import the standard library and exactly the module packages listed
// (its tests too), and its non-test code no third-party package, so that
// every package of the layer can import it without a cycle.
var leaves = map[string]struct {
	may []string
	why string
}{
	"tracking/mlflowwire": {may: []string{"tracking"}, why: "MLflow's REST JSON, imported by both the REST client and the server"},
}

// checkLeaf checks the imports of a package listed in leaves.
func checkLeaf(p Package, rel string) []string {
	leaf, ok := leaves[rel]
	if !ok {
		return nil
	}
	var problems []string
	for i, imps := range [][]string{p.Imports, p.TestImports, p.XTestImports} {
		for _, imp := range imps {
			irel, inModule := relative(imp)
			switch {
			case inModule && irel != rel && !slices.Contains(leaf.may, irel):
			case !inModule && i == 0 && !isStdlib(imp):
			default:
				continue
			}
			problems = append(problems, fmt.Sprintf("%s imports %s: %s is a leaf (%s); it may import only the standard library and %s", rel, strings.TrimPrefix(imp, module+"/"), rel, leaf.why, strings.Join(leaf.may, ", ")))
		}
	}
	return problems
}

// check returns one message per forbidden import in pkgs, each naming the
// rule it breaks, and one per exception no package uses.
func check(pkgs []Package) []string {
	var problems []string
	used := make(map[exception]bool)
	for _, p := range pkgs {
		rel, ok := relative(p.ImportPath)
		if !ok {
			continue
		}
		l, ok := layerOf(rel)
		if !ok {
			problems = append(problems, fmt.Sprintf("%s is in no layer: add its folder to layers in internal/archtest with what it may import (DESIGN.md, Layout)", rel))
			continue
		}
		problems = append(problems, checkLeaf(p, rel)...)
		for _, imp := range p.Imports {
			problems = append(problems, checkEdge(rel, l, imp, "", used)...)
		}
		for _, imp := range p.TestImports {
			problems = append(problems, checkEdge(rel, l, imp, " (in a test file)", used)...)
		}
		for _, imp := range p.XTestImports {
			problems = append(problems, checkEdge(rel, l, imp, " (in a test file)", used)...)
		}
	}
	for _, e := range exceptions {
		if !used[e] && !e.pending {
			problems = append(problems, fmt.Sprintf("the exception %s → %s (%s) is no longer used: drop it from internal/archtest", e.from, e.to, e.why))
		}
	}
	slices.Sort(problems)
	return slices.Compact(problems)
}

// checkEdge checks the import imp of package rel in layer l; where says
// whether the import is a test file's.
func checkEdge(rel string, l layer, imp, where string, used map[exception]bool) []string {
	test := where != ""
	if irel, ok := relative(imp); ok {
		il, ok := layerOf(irel)
		switch {
		case ok && il.dir == l.dir, l.all:
			return nil
		case slices.ContainsFunc(l.may, func(m string) bool { return under(irel, m) }):
			return nil
		}
		for _, e := range exceptions {
			if e.from == l.dir && under(irel, e.to) {
				used[e] = true
				return nil
			}
		}
		return []string{fmt.Sprintf("%s imports %s%s: %s may import only %s (DESIGN.md, Layout); an upward or sideways import — move what both need down, or list an exception with its reason", rel, irel, where, l.dir, mayList(l))}
	}
	if isStdlib(imp) {
		if l.stdlib == nil || test || slices.Contains(l.stdlib, imp) {
			return nil
		}
		return []string{fmt.Sprintf("%s imports %s: %s is the pure round state machine and does no I/O (no %s); it may import only %s", rel, imp, l.dir, ioExample, strings.Join(l.stdlib, ", "))}
	}
	if test || l.anyThird || slices.ContainsFunc(l.third, func(m string) bool { return under(imp, m) }) {
		return nil
	}
	allowed := "no third-party package"
	if len(l.third) > 0 {
		allowed = "only the third-party " + strings.Join(l.third, ", ")
	}
	if l.stdlib != nil {
		return []string{fmt.Sprintf("%s imports %s: %s is the pure round state machine and does no I/O (no %s); it may import no third-party package", rel, imp, l.dir, ioExample)}
	}
	return []string{fmt.Sprintf("%s imports %s: %s may import %s (DESIGN.md, Layout)", rel, imp, l.dir, allowed)}
}

func mayList(l layer) string {
	var out []string
	out = append(out, l.dir)
	out = append(out, l.may...)
	for _, e := range exceptions {
		if e.from == l.dir {
			out = append(out, e.to)
		}
	}
	return strings.Join(out, ", ")
}

// relative returns a module package's path relative to the module.
func relative(path string) (string, bool) {
	if path == module {
		return "", true
	}
	rel, ok := strings.CutPrefix(path, module+"/")
	return rel, ok
}

// layerOf returns the layer of a module-relative package path: the one
// with the longest folder holding it.
func layerOf(rel string) (layer, bool) {
	var best layer
	found := false
	for _, l := range layers {
		if under(rel, l.dir) && (!found || len(l.dir) > len(best.dir)) {
			best, found = l, true
		}
	}
	return best, found
}

// isStdlib reports whether an import path is the standard library's (its
// first element has no dot).
func isStdlib(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// listModule runs `go list -json` over the module.
func listModule(t *testing.T) []Package {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []Package
	for {
		var p Package
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestImportRules checks the module's real import graph, test files
// included, against the layering.
func TestImportRules(t *testing.T) {
	pkgs := listModule(t)
	if len(pkgs) < 15 {
		t.Fatalf("go list found %d packages; want the whole module", len(pkgs))
	}
	// The checker saw the test imports: some package's tests import
	// go-cmp, which no production code does.
	if !slices.ContainsFunc(pkgs, func(p Package) bool {
		return slices.Contains(p.TestImports, "github.com/google/go-cmp/cmp") || slices.Contains(p.XTestImports, "github.com/google/go-cmp/cmp")
	}) {
		t.Fatal("no package's test files import go-cmp; go list's TestImports and XTestImports are not being read")
	}
	for _, p := range check(pkgs) {
		t.Error(p)
	}
}

// TestCheckCatchesViolations feeds the checker a fake module and wants
// each violation reported with the rule it breaks, and nothing else.
func TestCheckCatchesViolations(t *testing.T) {
	m := func(rel string) string { return module + "/" + rel }
	tests := []struct {
		name string
		pkg  Package
		want []string // each message's fragments; nil: no violation
	}{
		{"upward: model imports server", Package{ImportPath: m("model"), Imports: []string{m("server")}},
			[]string{"model imports server: model may import only model (DESIGN.md, Layout); an upward or sideways import"}},
		{"sideways: server imports client", Package{ImportPath: m("server"), Imports: []string{m("client")}},
			[]string{"server imports client: server may import only server, proto, model, aggregators, job, tracking, server/ha, server/round, server/blobs, internal/bulk, energy, privacy"}},
		{"sideways: client imports server", Package{ImportPath: m("client"), Imports: []string{m("server")}},
			[]string{"client imports server: client may import only"}},
		{"in a test file only", Package{ImportPath: m("client"), XTestImports: []string{m("server")}},
			[]string{"client imports server (in a test file): client may import only"}},
		{"in an in-package test file", Package{ImportPath: m("data"), TestImports: []string{m("train")}},
			[]string{"data imports train (in a test file): data may import only data"}},
		{"train imports proto", Package{ImportPath: m("train"), Imports: []string{m("proto/cohort/v1")}},
			[]string{"train imports proto/cohort/v1: train may import only train, model, energy, data"}},
		{"round does network I/O", Package{ImportPath: m("server/round"), Imports: []string{"net"}},
			[]string{"server/round imports net: server/round is the pure round state machine and does no I/O (no net, os, grpc, protobuf, tracking, database); it may import only cmp, errors"}},
		{"round opens files", Package{ImportPath: m("server/round"), Imports: []string{"os", "database/sql"}},
			[]string{"server/round imports database/sql: server/round is the pure round state machine", "server/round imports os: server/round is the pure round state machine"}},
		{"round imports grpc", Package{ImportPath: m("server/round"), Imports: []string{"google.golang.org/grpc"}},
			[]string{"server/round imports google.golang.org/grpc: server/round is the pure round state machine and does no I/O"}},
		{"round imports tracking", Package{ImportPath: m("server/round"), Imports: []string{m("tracking")}},
			[]string{"server/round imports tracking: server/round may import only server/round"}},
		{"round imports its parent", Package{ImportPath: m("server/round"), Imports: []string{m("server")}},
			[]string{"server/round imports server: server/round may import only server/round"}},
		{"round's tests may read testdata", Package{ImportPath: m("server/round"), Imports: []string{"time", "slices"}, XTestImports: []string{"os", "github.com/google/go-cmp/cmp", m("server/round")}}, nil},
		{"gorgonia is gone from the module", Package{ImportPath: m("train"), Imports: []string{"gorgonia.org/gorgonia"}},
			[]string{"train imports gorgonia.org/gorgonia: train may import only the third-party golang.org/x/sys, gonum.org/v1/gonum"}},
		{"data imports a third party", Package{ImportPath: m("data"), Imports: []string{"gonum.org/v1/gonum/mat"}},
			[]string{"data imports gonum.org/v1/gonum/mat: data may import no third-party package"}},
		{"a package in no layer", Package{ImportPath: m("util")},
			[]string{"util is in no layer: add its folder to layers in internal/archtest"}},
		{"the MLflow wire package is a leaf", Package{ImportPath: m("tracking/mlflowwire"), Imports: []string{"encoding/json", m("tracking")}, XTestImports: []string{"github.com/google/go-cmp/cmp"}}, nil},
		{"it may not import its users", Package{ImportPath: m("tracking/mlflowwire"), Imports: []string{m("tracking/mlflowserver")}},
			[]string{"tracking/mlflowwire imports tracking/mlflowserver: tracking/mlflowwire is a leaf (MLflow's REST JSON, imported by both the REST client and the server); it may import only the standard library and tracking"}},
		{"nor a database driver", Package{ImportPath: m("tracking/mlflowwire"), Imports: []string{"modernc.org/sqlite"}},
			[]string{"tracking/mlflowwire imports modernc.org/sqlite: tracking/mlflowwire is a leaf"}},
		{"a subpackage is its layer's", Package{ImportPath: m("tracking/ui"), Imports: []string{m("tracking"), m("tracking/plot")}}, nil},
		{"job may use the strict-YAML package", Package{ImportPath: m("job"), Imports: []string{m("internal/strictyaml"), "go.yaml.in/yaml/v3"}}, nil},
		{"deploy may use the strict-YAML package", Package{ImportPath: m("deploy"), Imports: []string{m("internal/strictyaml")}}, nil},
		{"but not the harness", Package{ImportPath: m("deploy"), Imports: []string{m("internal/federation")}},
			[]string{"deploy imports internal/federation: deploy may import only deploy, internal/strictyaml"}},
		{"prepare wires train into the coordinator", Package{ImportPath: m("server/prepare"), Imports: []string{m("server"), m("train"), m("data")}}, nil},
		{"server itself may not", Package{ImportPath: m("server"), Imports: []string{m("train")}},
			[]string{"server imports train: server may import only"}},
		{"nor reach into prepare", Package{ImportPath: m("server"), Imports: []string{m("server/prepare")}},
			[]string{"server imports server/prepare: server may import only"}},
		{"cmd wires everything", Package{ImportPath: m("cmd/cohort"), Imports: []string{m("server"), m("client"), m("internal/federation"), "github.com/anything/else"}}, nil},
		{"tests may import any third party", Package{ImportPath: m("model"), XTestImports: []string{"github.com/google/go-cmp/cmp", m("model")}}, nil},
		{"a package outside the module is not checked", Package{ImportPath: "example.com/other", Imports: []string{m("server")}}, nil},
	}
	// The exceptions a fake list does not use are reported too; they are
	// checked apart below.
	unused := func(s string) bool { return strings.Contains(s, "is no longer used") }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := slices.DeleteFunc(check([]Package{tt.pkg}), unused)
			if len(got) != len(tt.want) {
				t.Fatalf("check(%+v) = %q; want %d problems: %q", tt.pkg, got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("check(%+v)[%d] = %q, want it to contain %q", tt.pkg, i, got[i], w)
				}
			}
		})
	}
}

// TestCheckReportsUnusedExceptions: an exception no import needs any more
// (a dependency that is gone) is reported, naming it; a pending one is not.
func TestCheckReportsUnusedExceptions(t *testing.T) {
	m := func(rel string) string { return module + "/" + rel }
	// Every exception in use but server → privacy.
	var pkgs []Package
	for _, e := range exceptions {
		if e.from != "server" || e.to != "privacy" {
			pkgs = append(pkgs, Package{ImportPath: m(e.from), Imports: []string{m(e.to)}})
		}
	}
	got := check(pkgs)
	want := []string{"the exception server → privacy (differential privacy's clipping and accountant are server-side strategy math, a leaf like aggregators) is no longer used: drop it from internal/archtest"}
	if !slices.Equal(got, want) {
		t.Errorf("check(every exception but server → privacy) = %q, want %q", got, want)
	}
}

func TestUnder(t *testing.T) {
	tests := []struct {
		path, prefix string
		want         bool
	}{
		{"server", "server", true},
		{"server/round", "server", true},
		{"serverless", "server", false},
		{"client/agent", "client", true},
		{"cmd/cohort", "client", false},
	}
	for _, tt := range tests {
		if got := under(tt.path, tt.prefix); got != tt.want {
			t.Errorf("under(%q, %q) = %v, want %v", tt.path, tt.prefix, got, tt.want)
		}
	}
}

func TestLayerOf(t *testing.T) {
	tests := []struct {
		rel, want string
		ok        bool
	}{
		{"server", "server", true},
		{"server/round", "server/round", true},
		{"server/prepare", "server/prepare", true},
		{"server/other", "server", true},
		{"tracking/mlflowclient", "tracking", true},
		{"internal/federation", "internal/federation", true},
		{"internal/other", "", false},
		{"util", "", false},
	}
	for _, tt := range tests {
		l, ok := layerOf(tt.rel)
		if ok != tt.ok || l.dir != tt.want {
			t.Errorf("layerOf(%q) = %q, %v; want %q, %v", tt.rel, l.dir, ok, tt.want, tt.ok)
		}
	}
}
