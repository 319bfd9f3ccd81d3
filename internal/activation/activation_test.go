package activation

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// env is a lookup over fixed variables.
func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParse(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name    string
		env     func(string) (string, bool)
		want    []string
		wantErr error
		errHas  string
	}{
		{name: "nothing passed", env: env()},
		{name: "names without LISTEN_FDS are ignored", env: env(EnvFDNames, "grpc")},
		{name: "zero sockets", env: env(EnvFDs, "0", EnvFDNames, "")},
		{name: "named, no pid (Go's exec)", env: env(EnvFDs, "3", EnvFDNames, "grpc:raft:http"), want: []string{"grpc", "raft", "http"}},
		{name: "named, our pid", env: env(EnvFDs, "1", EnvFDNames, "grpc", EnvPID, "4242"), want: []string{"grpc"}},
		{name: "unnamed", env: env(EnvFDs, "2"), want: []string{"unknown", "unknown"}},
		{name: "systemd's unit name", env: env(EnvFDs, "1", EnvFDNames, "cohort-grpc.socket"), want: []string{"cohort-grpc.socket"}},
		{name: "another process's pid", env: env(EnvFDs, "1", EnvPID, "1"), wantErr: ErrOtherProcess, errHas: "LISTEN_PID=1, this process is 4242"},
		{name: "pid not a number", env: env(EnvFDs, "1", EnvPID, "me"), wantErr: ErrMalformed, errHas: `LISTEN_PID="me"`},
		{name: "empty pid", env: env(EnvFDs, "1", EnvPID, ""), wantErr: ErrMalformed, errHas: `LISTEN_PID=""`},
		{name: "pid 0", env: env(EnvFDs, "1", EnvPID, "0"), wantErr: ErrMalformed, errHas: `LISTEN_PID="0"`},
		{name: "count not a number", env: env(EnvFDs, "two"), wantErr: ErrMalformed, errHas: `LISTEN_FDS="two"`},
		{name: "empty count", env: env(EnvFDs, ""), wantErr: ErrMalformed, errHas: `LISTEN_FDS=""`},
		{name: "negative count", env: env(EnvFDs, "-1"), wantErr: ErrMalformed, errHas: `LISTEN_FDS="-1"`},
		{name: "signed count", env: env(EnvFDs, "+1"), wantErr: ErrMalformed, errHas: `LISTEN_FDS="+1"`},
		{name: "huge count", env: env(EnvFDs, "65537"), wantErr: ErrMalformed, errHas: "0 to 65536"},
		{name: "fewer names than sockets", env: env(EnvFDs, "2", EnvFDNames, "grpc"), wantErr: ErrMalformed, errHas: "names 1 sockets, LISTEN_FDS=2 passes 2"},
		{name: "more names than sockets", env: env(EnvFDs, "1", EnvFDNames, "grpc:raft"), wantErr: ErrMalformed, errHas: "names 2 sockets"},
		{name: "empty name", env: env(EnvFDs, "2", EnvFDNames, "grpc:"), wantErr: ErrMalformed, errHas: "socket 2 (descriptor 4): empty name"},
		{name: "control character", env: env(EnvFDs, "1", EnvFDNames, "gr\npc"), wantErr: ErrMalformed, errHas: "only printable ASCII"},
		{name: "non-ASCII", env: env(EnvFDs, "1", EnvFDNames, "grpç"), wantErr: ErrMalformed, errHas: "only printable ASCII"},
		{name: "long name", env: env(EnvFDs, "1", EnvFDNames, strings.Repeat("a", 256)), wantErr: ErrMalformed, errHas: "256 bytes: at most 255"},
		{name: "a name twice", env: env(EnvFDs, "3", EnvFDNames, "grpc:raft:grpc"), wantErr: ErrMalformed, errHas: `sockets 1 and 3 "grpc"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.env, pid)
			if !errors.Is(err, tt.wantErr) || (err != nil && !strings.Contains(err.Error(), tt.errHas)) {
				t.Fatalf("Parse = %v, want %v containing %q", err, tt.wantErr, tt.errHas)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse names (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParse checks that Parse never panics and that what it accepts is
// what a process can take by name: one name per socket, each valid and
// unique, the count what LISTEN_FDS says.
func FuzzParse(f *testing.F) {
	f.Add("3", "grpc:raft:http", "", false)
	f.Add("1", "", "4242", true)
	f.Add("2", "a:", "1", true)
	f.Add("0", "", "", false)
	f.Add("65536", "x", "-1", true)
	f.Fuzz(func(t *testing.T, fds, names, pid string, pidSet bool) {
		kv := []string{EnvFDs, fds, EnvFDNames, names}
		if pidSet {
			kv = append(kv, EnvPID, pid)
		}
		got, err := Parse(env(kv...), 4242)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrOtherProcess) {
				t.Fatalf("Parse error %v is neither ErrMalformed nor ErrOtherProcess", err)
			}
			return
		}
		if n, err := strconv.ParseUint(fds, 10, 32); err != nil || n != uint64(len(got)) {
			t.Fatalf("Parse(LISTEN_FDS=%q) = %d names", fds, len(got))
		}
		seen := map[string]bool{}
		for _, n := range got {
			if checkName(n) != nil || seen[n] {
				t.Fatalf("Parse accepted name %q of %q", n, names)
			}
			seen[n] = true
		}
	})
}

func TestListenersOtherProcess(t *testing.T) {
	t.Setenv(EnvFDs, "1")
	t.Setenv(EnvFDNames, "grpc")
	t.Setenv(EnvPID, "1")
	ls, err := Listeners()
	if !errors.Is(err, ErrOtherProcess) || ls != nil {
		t.Fatalf("Listeners = %v, %v; want ErrOtherProcess", ls, err)
	}
	for _, k := range []string{EnvPID, EnvFDs, EnvFDNames} {
		if v, ok := os.LookupEnv(k); ok {
			t.Errorf("after Listeners %s=%q, want it unset", k, v)
		}
	}
}

func TestListenersNothingPassed(t *testing.T) {
	os.Unsetenv(EnvFDs)
	ls, err := Listeners()
	if err != nil || ls != nil {
		t.Fatalf("Listeners = %v, %v; want none", ls, err)
	}
}

const childEnv = "ACTIVATION_TEST_CHILD"

// TestMain runs this test binary as the child of TestPass when childEnv
// is set.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

// child takes its sockets with Listeners, prints what is left of the
// variables, then accepts one connection on each socket, in the order of
// their names, and writes the socket's name on it.
func child() int {
	ls, err := Listeners()
	if err != nil {
		fmt.Println("error:", err)
		return 0
	}
	fmt.Printf("left: %q\n", os.Getenv(EnvFDs)+os.Getenv(EnvFDNames))
	for _, name := range slices.Sorted(maps.Keys(ls)) {
		c, err := ls[name].Accept()
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Fprintln(c, name)
		c.Close()
		ls[name].Close()
	}
	return 0
}

func loopback(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestPass(t *testing.T) {
	socks := map[string]net.Listener{"raft": loopback(t), "grpc": loopback(t)}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=1", EnvPID+"=1")
	if err := Pass(cmd, socks); err != nil {
		t.Fatal(err)
	}
	if got, want := cmd.Env[len(cmd.Env)-2:], []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=grpc:raft"}; !slices.Equal(got, want) {
		t.Errorf("Pass env = %q, want %q at the end", got, want)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	closeFiles(cmd.ExtraFiles)
	// Both connections first: the child accepts grpc, then raft.
	var conns []net.Conn
	for _, name := range []string{"raft", "grpc"} {
		c, err := net.Dial("tcp", socks[name].Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	for i, name := range []string{"raft", "grpc"} {
		line, err := bufio.NewReader(conns[i]).ReadString('\n')
		if got := strings.TrimSpace(line); err != nil || got != name {
			t.Errorf("the child on socket %s wrote %q, %v; want %q", name, line, err, name)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("child: %v", err)
	}
	if got := out.String(); got != "left: \"\"\n" {
		t.Errorf("child printed %q, want the variables unset", got)
	}
}

func TestListenersNotASocket(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "not-a-socket")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=1", EnvFDs+"=1", EnvFDNames+"=grpc")
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if want := `error: inherited socket "grpc" (descriptor 3): `; !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), "pass a listening stream socket") {
		t.Errorf("child printed %q, want %q… naming the fix", out, want)
	}
}

func TestPassRefusals(t *testing.T) {
	tests := []struct {
		name  string
		cmd   *exec.Cmd
		socks map[string]net.Listener
		want  string
	}{
		{"extra files", &exec.Cmd{ExtraFiles: []*os.File{os.Stdin}}, map[string]net.Listener{"grpc": loopback(t)}, "must be descriptors 3 on"},
		{"name with a colon", &exec.Cmd{}, map[string]net.Listener{"a:b": loopback(t)}, `passing socket "a:b"`},
		{"no descriptor", &exec.Cmd{}, map[string]net.Listener{"grpc": fdless{}}, "has no descriptor to pass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Pass(tt.cmd, tt.socks); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Pass = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// fdless is a listener with no descriptor.
type fdless struct{ net.Listener }
