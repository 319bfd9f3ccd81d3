// Package slurmtest brings up a real one-node Slurm cluster (munged,
// slurmctld, slurmd) for a test, every file in the test's temporary
// directory, for the tests of launch/slurm and of cohort launch slurm.
package slurmtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Start brings up a one-node Slurm cluster for t and returns the
// environment its client commands need (this process's, with SLURM_CONF
// set). It skips t, saying what to install, where munge or Slurm's daemons
// are missing, and stops the daemons at t's cleanup.
func Start(t testing.TB) []string {
	t.Helper()
	for _, bin := range []string{"slurmctld", "slurmd", "munged", "mungekey", "sbatch", "squeue", "scancel", "sinfo"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not on PATH: install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge) to run this test against a real Slurm", bin)
		}
	}
	if testing.Short() {
		t.Skip("-short: the real Slurm cluster takes seconds to start")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // munged wants its socket's directory searchable
		t.Fatal(err)
	}

	// munge, with a key of its own and a socket in dir.
	key, sock := filepath.Join(dir, "munge.key"), filepath.Join(dir, "munge.sock")
	if out, err := exec.CommandContext(ctx, "mungekey", "-c", "-k", key).CombinedOutput(); err != nil {
		t.Fatalf("mungekey: %v\n%s", err, out)
	}
	daemon(t, dir, "munged", "-F", "--force", "--key-file", key, "--socket", sock,
		"--pid-file", filepath.Join(dir, "munged.pid"), "--log-file", filepath.Join(dir, "munged.log"),
		"--seed-file", filepath.Join(dir, "munged.seed"))
	WaitFor(ctx, t, "munged's socket", func() (bool, string) {
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprint(err)
	})

	conf := writeSlurmConf(t, dir, sock)
	env := append(os.Environ(), "SLURM_CONF="+conf)
	daemon(t, dir, "slurmctld", "-D", "-f", conf)
	daemon(t, dir, "slurmd", "-D", "-f", conf)
	WaitFor(ctx, t, "the node idle in sinfo", func() (bool, string) {
		cmd := exec.CommandContext(ctx, "sinfo", "-h", "-o", "%t")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == "idle", string(out) + fmt.Sprint(err)
	})
	t.Logf("slurm cluster up in %s (SLURM_CONF=%s)", time.Since(start).Round(time.Millisecond), conf)
	return env
}

// writeSlurmConf writes a one-node cluster's slurm.conf under dir.
func writeSlurmConf(t testing.TB, dir, mungeSock string) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	slurmUser := u.Username
	if os.Geteuid() == 0 {
		slurmUser = "root"
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ = strings.Cut(host, ".")
	for _, d := range []string{"state", "spool"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `ClusterName=cohorttest
SlurmctldHost=%[1]s(127.0.0.1)
SlurmctldPort=%[2]d
SlurmdPort=%[3]d
SlurmUser=%[4]s
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=%[5]s
StateSaveLocation=%[6]s/state
SlurmdSpoolDir=%[6]s/spool
SlurmctldPidFile=%[6]s/slurmctld.pid
SlurmdPidFile=%[6]s/slurmd.pid
SlurmctldLogFile=%[6]s/slurmctld.log
SlurmdLogFile=%[6]s/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=5
NodeName=%[1]s NodeAddr=127.0.0.1 CPUs=%[7]d State=UNKNOWN
PartitionName=debug Nodes=%[1]s Default=YES MaxTime=INFINITE State=UP
`, host, freePort(t), freePort(t), slurmUser, mungeSock, dir, runtime.NumCPU())
	conf := filepath.Join(dir, "slurm.conf")
	if err := os.WriteFile(conf, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// daemon starts name in the foreground as a child and stops it, with its
// output logged, at cleanup.
func daemon(t testing.TB, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s's output:\n%s", name, out.String())
			for _, l := range []string{"slurmctld.log", "slurmd.log", "munged.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, l)); err == nil && strings.HasPrefix(l, name) {
					t.Logf("%s:\n%s", l, b)
				}
			}
		}
	})
}

// WaitFor polls cond, for daemons that give no notification of being ready,
// until it holds or ctx ends.
func WaitFor(ctx context.Context, t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, last := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v; last: %s", what, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
