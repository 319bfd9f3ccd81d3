package ha

import (
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// openDisk opens a one-voter raft on boltdb, file snapshots and TCP in dir.
func openDisk(t *testing.T, dir, addr string) (*raft.Raft, *FSM, func()) {
	t.Helper()
	store, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	trans, err := raft.NewTCPTransportWithLogger(addr, nil, 3, time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	conf := raft.DefaultConfig()
	conf.LocalID = "solo"
	conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	conf.Logger = hclog.NewNullLogger()
	ok, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		cfg := raft.Configuration{Servers: []raft.Server{{ID: conf.LocalID, Address: trans.LocalAddr()}}}
		if err := raft.BootstrapCluster(conf, store, store, snaps, trans, cfg); err != nil {
			t.Fatal(err)
		}
	}
	fsm := NewFSM()
	r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	return r, fsm, func() {
		if err := r.Shutdown().Error(); err != nil {
			t.Error(err)
		}
		_ = trans.Close()
		_ = store.Close()
	}
}

func waitLeader(t *testing.T, r *raft.Raft) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.Barrier(time.Second).Error(); err != nil {
		t.Fatal(err)
	}
}

func TestSingleNodeResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	r, _, closeFn := openDisk(t, dir, "127.0.0.1:0")
	waitLeader(t, r)
	addr := string(r.Leader()) // the port TCP picked, so the stored configuration matches
	if err := propose(r, Command{Type: CmdSubmitJob, JobID: "j"}); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 2; round++ {
		if err := commitModel(r, round); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Snapshot().Error(); err != nil { // round 2 in the file snapshot
		t.Fatal(err)
	}
	if err := commitModel(r, 3); err != nil { // round 3 in the log only
		t.Fatal(err)
	}
	closeFn()

	r, fsm, closeFn := openDisk(t, dir, addr)
	defer closeFn()
	waitLeader(t, r)
	last, d, err := fsm.LastRound("j", "a")
	if err != nil || last != 3 {
		t.Fatalf("LastRound after restart = %d, %v, want 3", last, err)
	}
	rc, err := fsm.OpenModel(d)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	if string(b) != "model of round 3" {
		t.Errorf("model after restart = %q", b)
	}
	if err := commitModel(r, 4); err != nil {
		t.Fatalf("round 4 after restart: %v", err)
	}
}
