package activation

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// The variables of the protocol.
const (
	EnvPID     = "LISTEN_PID"
	EnvFDs     = "LISTEN_FDS"
	EnvFDNames = "LISTEN_FDNAMES"
)

const (
	// FirstFD is the descriptor of the first passed socket
	// (SD_LISTEN_FDS_START).
	FirstFD = 3
	// maxFDs bounds LISTEN_FDS: a count above it is a malformed value,
	// not a process's sockets.
	maxFDs = 1 << 16
	// maxName is the longest name systemd gives a socket (FDNAME_MAX).
	maxName = 255
	// unnamed is the name of every socket when LISTEN_FDNAMES is unset,
	// as sd_listen_fds_with_names(3) reports it.
	unnamed = "unknown"
)

// ErrMalformed is returned when a LISTEN_* variable cannot be read: not a
// number, a count the names disagree with, a name systemd would not give.
var ErrMalformed = errors.New("malformed socket activation variables")

// ErrOtherProcess is returned when LISTEN_PID names another process: the
// sockets were passed to it, and this process inherited the variables.
var ErrOtherProcess = errors.New("socket activation variables are for another process")

// Parse returns the names of the sockets the LISTEN_* variables pass to
// process pid, the first for descriptor [FirstFD]; lookup reads a
// variable ([os.LookupEnv]). Without LISTEN_FDS, or with LISTEN_FDS=0, it
// returns none. LISTEN_PID, when set, must be pid (an exec from Go or a
// shell cannot know the child's pid, so an unset one is accepted).
// Without LISTEN_FDNAMES every socket is "unknown", as systemd reports
// it; with it, there is one name per socket, each of 1–255 printable
// ASCII characters without ':', and no name twice (a process takes its
// sockets by name).
func Parse(lookup func(key string) (string, bool), pid int) ([]string, error) {
	fds, ok := lookup(EnvFDs)
	if !ok {
		return nil, nil
	}
	n, err := strconv.ParseUint(fds, 10, 32)
	if err != nil || n > maxFDs {
		return nil, fmt.Errorf("%w: %s=%q: give the number of sockets passed from descriptor 3 on, 0 to %d", ErrMalformed, EnvFDs, fds, maxFDs)
	}
	if v, ok := lookup(EnvPID); ok {
		p, err := strconv.ParseUint(v, 10, 63)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("%w: %s=%q: give the pid of the process the sockets are for, or leave it unset", ErrMalformed, EnvPID, v)
		}
		if p != uint64(pid) {
			return nil, fmt.Errorf("%w: %s=%d, this process is %d: start it with exec (not as a child of the process the sockets were passed to), or unset %s", ErrOtherProcess, EnvPID, p, pid, EnvFDs)
		}
	}
	if n == 0 {
		return nil, nil
	}
	v, ok := lookup(EnvFDNames)
	if !ok {
		return slices.Repeat([]string{unnamed}, int(n)), nil
	}
	names := strings.Split(v, ":")
	if uint64(len(names)) != n {
		return nil, fmt.Errorf("%w: %s=%q names %d sockets, %s=%d passes %d: give one name per socket, separated by ':'", ErrMalformed, EnvFDNames, v, len(names), EnvFDs, n, n)
	}
	seen := make(map[string]int, len(names))
	for i, name := range names {
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("%w: %s: socket %d (descriptor %d): %v", ErrMalformed, EnvFDNames, i+1, FirstFD+i, err)
		}
		if j, dup := seen[name]; dup {
			return nil, fmt.Errorf("%w: %s names sockets %d and %d %q: give each its own name (systemd: FileDescriptorName=)", ErrMalformed, EnvFDNames, j+1, i+1, name)
		}
		seen[name] = i
	}
	return names, nil
}

// checkName reports why name is not a socket name systemd would give.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty name: name every socket")
	}
	if len(name) > maxName {
		return fmt.Errorf("name of %d bytes: at most %d", len(name), maxName)
	}
	for _, c := range []byte(name) {
		if c < 0x20 || c >= 0x7f || c == ':' {
			return fmt.Errorf("name %q: only printable ASCII without ':'", name)
		}
	}
	return nil
}

// Listeners returns the listening sockets the service manager passed
// this process, by name (see [Parse]), and unsets the LISTEN_* variables
// so that no child takes them for its own. It returns none when nothing
// was passed. The descriptors become listeners closed on exec; one that
// is not a listening stream socket is an error, and every passed
// descriptor is then closed. Call it once per process, before anything
// else uses descriptors 3 on (a second call finds nothing).
func Listeners() (map[string]net.Listener, error) {
	defer func() {
		for _, k := range []string{EnvPID, EnvFDs, EnvFDNames} {
			os.Unsetenv(k)
		}
	}()
	names, err := Parse(os.LookupEnv, os.Getpid())
	if err != nil {
		return nil, err
	}
	return listeners(names, FirstFD)
}

// listeners turns descriptors first, first+1, … into the listeners of
// names, closing every descriptor (the listeners hold duplicates).
func listeners(names []string, first int) (map[string]net.Listener, error) {
	if len(names) == 0 {
		return nil, nil
	}
	out := make(map[string]net.Listener, len(names))
	var errs []error
	for i, name := range names {
		f := os.NewFile(uintptr(first+i), name)
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("inherited socket %q (descriptor %d): %w: pass a listening stream socket", name, first+i, err))
			continue
		}
		out[name] = l
	}
	if err := errors.Join(errs...); err != nil {
		for _, l := range out {
			l.Close()
		}
		return nil, err
	}
	return out, nil
}

// Pass makes cmd inherit sockets as a service manager would: their
// descriptors from 3 on in the order of their names, and LISTEN_FDS and
// LISTEN_FDNAMES in its environment (cmd.Env, or this process's when it
// is nil). cmd must have no other ExtraFiles. LISTEN_PID is left unset:
// the child's pid is not known before it starts. The files Pass adds to
// cmd.ExtraFiles are duplicates: close them once cmd has started; the
// listeners stay open, and connections to them queue until the child (or
// whoever holds them next) accepts.
func Pass(cmd *exec.Cmd, sockets map[string]net.Listener) error {
	if len(cmd.ExtraFiles) > 0 {
		return errors.New("passing sockets: cmd has ExtraFiles already: the sockets must be descriptors 3 on")
	}
	names := slices.Sorted(maps.Keys(sockets))
	var files []*os.File
	for _, name := range names {
		if err := checkName(name); err != nil {
			closeFiles(files)
			return fmt.Errorf("passing socket %q: %w", name, err)
		}
		fl, ok := sockets[name].(interface{ File() (*os.File, error) })
		if !ok {
			closeFiles(files)
			return fmt.Errorf("passing socket %q: a %T has no descriptor to pass: give a *net.TCPListener or *net.UnixListener", name, sockets[name])
		}
		f, err := fl.File()
		if err != nil {
			closeFiles(files)
			return fmt.Errorf("passing socket %q: %w", name, err)
		}
		files = append(files, f)
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == EnvPID || k == EnvFDs || k == EnvFDNames
	})
	cmd.Env = append(env, EnvFDs+"="+strconv.Itoa(len(files)), EnvFDNames+"="+strings.Join(names, ":"))
	cmd.ExtraFiles = files
	return nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
