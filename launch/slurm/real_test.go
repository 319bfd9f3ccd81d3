package slurm

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

// TestSlurmRealCluster brings up a one-node Slurm cluster of its own (munged,
// slurmctld and slurmd from Debian's munge and slurm-wlm packages, every file
// in a temporary directory, ports picked free), submits a two-task array
// from [Script] through [Client.Submit] (a fake cohort as the agent, one kit
// path with a space and a quote), follows it with [Client.Wait], checks each task's
// output and cancels a sleeping job with [Client.Cancel].
func TestSlurmRealCluster(t *testing.T) {
	for _, bin := range []string{"slurmctld", "slurmd", "munged", "mungekey", "sbatch", "squeue", "scancel", "sinfo"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not on PATH: install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge) to run this test against a real Slurm", bin)
		}
	}
	if testing.Short() {
		t.Skip("-short: the real Slurm cluster takes seconds to start")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
	waitFor(ctx, t, "munged's socket", func() (bool, string) {
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprint(err)
	})

	conf := writeSlurmConf(t, dir, sock)
	env := append(os.Environ(), "SLURM_CONF="+conf)
	daemon(t, dir, "slurmctld", "-D", "-f", conf)
	daemon(t, dir, "slurmd", "-D", "-f", conf)
	c := &Client{Env: env}
	waitFor(ctx, t, "the node idle in sinfo", func() (bool, string) {
		out, stderr, err := c.run(ctx, nil, "sinfo", "-h", "-o", "%t")
		return err == nil && strings.TrimSpace(string(out)) == "idle", string(out) + string(stderr) + fmt.Sprint(err)
	})
	t.Logf("cluster up in %s", time.Since(start).Round(time.Millisecond))

	// Script's array of two site agents, each from its kit (one with a space
	// and a quote in its path), the agent a fake cohort that records its
	// arguments in its kit.
	outDir := filepath.Join(dir, "out")
	kits := []string{filepath.Join(dir, "sites", "a"), filepath.Join(dir, "sites", "b's kit")}
	for _, d := range append(kits, outDir) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fake := filepath.Join(dir, "cohort")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s\\n' \"$*\" > \"$(dirname \"$3\")/ran\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := Script(Options{Kits: kits, Cohort: fake, JobName: "cohort-test", Time: "5", Output: outDir})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Submit(ctx, script)
	if err != nil {
		t.Fatalf("Submit = %v", err)
	}
	states, err := c.Wait(ctx, id, 100*time.Millisecond, func(s []string) { t.Logf("job %s: %v", id, s) })
	if err != nil {
		t.Fatalf("Wait(%s) = %v", id, err)
	}
	if fmt.Sprint(states) != "[COMPLETED COMPLETED]" {
		t.Errorf("array %s ended %v, want [COMPLETED COMPLETED]", id, states)
	}
	for _, k := range kits {
		b, err := os.ReadFile(filepath.Join(k, "ran"))
		if want := "site -c " + k + "/site.yaml\n"; err != nil || string(b) != want {
			t.Errorf("the agent of kit %s ran with %q, %v, want %q", k, b, err, want)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(outDir, "cohort-site-"+id+"_*.out"))
	if len(logs) != 2 {
		t.Errorf("task logs %v, want two cohort-site-%s_*.out in %s", logs, id, outDir)
	}

	// A sleeping job, cancelled: its SIGTERM reaches the exec'd command.
	sleeper := fmt.Sprintf("#!/bin/bash\n#SBATCH --output=%s/sleeper.log\ntrap 'echo got TERM > %s/term; exit 0' TERM\nsleep 300 & wait\n", outDir, Quote(outDir))
	sid, err := c.Submit(ctx, []byte(sleeper))
	if err != nil {
		t.Fatalf("Submit(sleeper) = %v", err)
	}
	waitFor(ctx, t, "the sleeper running", func() (bool, string) {
		s, err := c.State(ctx, sid)
		return err == nil && fmt.Sprint(s) == "[RUNNING]", fmt.Sprint(s, err)
	})
	if err := c.Cancel(ctx, sid); err != nil {
		t.Fatalf("Cancel(%s) = %v", sid, err)
	}
	states, err = c.Wait(ctx, sid, 100*time.Millisecond, nil)
	if err != nil || fmt.Sprint(states) != "[CANCELLED]" {
		t.Errorf("after Cancel, Wait(%s) = %v, %v, want [CANCELLED]", sid, states, err)
	}
	if b, err := os.ReadFile(filepath.Join(outDir, "term")); err != nil || string(b) != "got TERM\n" {
		t.Errorf("the cancelled job's trap wrote %q, %v, want \"got TERM\\n\": scancel's SIGTERM did not reach it", b, err)
	}

	// A refusal: a partition the cluster does not have.
	_, err = c.Submit(ctx, []byte("#!/bin/bash\n#SBATCH --partition=nosuch\ntrue\n"))
	if err == nil || !strings.Contains(err.Error(), "invalid partition") {
		t.Errorf("Submit to partition nosuch = %v, want sbatch's refusal naming the partition", err)
	}
	t.Logf("real cluster test took %s", time.Since(start).Round(time.Millisecond))
}

// writeSlurmConf writes a one-node cluster's slurm.conf under dir.
func writeSlurmConf(t *testing.T, dir, mungeSock string) string {
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
func daemon(t *testing.T, dir, name string, args ...string) {
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

// waitFor polls cond, for daemons that give no notification of being ready,
// until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, string)) {
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

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
