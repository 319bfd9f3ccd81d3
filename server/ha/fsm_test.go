package ha

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
)

func entry(t testing.TB, i uint64, c Command) *raft.Log {
	t.Helper()
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: i, Data: b}
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// script is a log: a job, a model in two chunks, rounds 1..3 of arm a.
func script(t testing.TB) []*raft.Log {
	m1, m2 := []byte("model-one-bytes"), []byte("model-two")
	cmds := []Command{
		{Type: CmdSubmitJob, At: 1, JobID: "j1", Spec: []byte("name: x\n")},
		{Type: CmdSetJobStatus, At: 2, JobID: "j1", Status: StatusRunning},
		{Type: CmdSetRunIDs, At: 3, JobID: "j1", RunIDs: &RunIDs{Job: "r0", Arms: map[string]string{"a": "r1"}, Sites: map[string]map[string]string{"a": {"s1": "r2"}}}},
		{Type: CmdRegisterSite, At: 4, Site: &Site{Name: "s1", Capabilities: []byte{1, 2}}},
		{Type: CmdPutBlobChunk, At: 5, Digest: digestOf(m1), Offset: 0, Data: m1[:5]},
		{Type: CmdPutBlobChunk, At: 6, Digest: digestOf(m1), Offset: 5, Data: m1[5:]},
		{Type: CmdSealBlob, At: 7, Digest: digestOf(m1), Size: int64(len(m1))},
		{Type: CmdCommitRound, At: 8, JobID: "j1", Arm: "a", Round: 1, Digest: digestOf(m1)},
		{Type: CmdPutBlobChunk, At: 9, Digest: digestOf(m2), Data: m2},
		{Type: CmdSealBlob, At: 10, Digest: digestOf(m2), Size: int64(len(m2))},
		{Type: CmdCommitRound, At: 11, JobID: "j1", Arm: "a", Round: 2, Digest: digestOf(m2)},
		{Type: CmdCommitRound, At: 12, JobID: "j1", Arm: "a", Round: 3, Digest: digestOf(m1)},
	}
	var out []*raft.Log
	for i, c := range cmds {
		out = append(out, entry(t, uint64(i+1), c))
	}
	return out
}

func applyAll(t *testing.T, f *FSM, logs []*raft.Log) {
	t.Helper()
	for _, l := range logs {
		if r := f.Apply(l); r != nil {
			t.Fatalf("Apply(entry %d) = %v, want nil", l.Index, r)
		}
	}
}

type memSink struct {
	bytes.Buffer
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { return nil }
func (s *memSink) Close() error  { return nil }

func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := s.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	s.Release()
	return sink.Bytes()
}

func TestApplySequence(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, script(t))
	r, d, err := f.LastRound("j1", "a")
	if err != nil || r != 3 || d != digestOf([]byte("model-one-bytes")) {
		t.Fatalf("LastRound(j1, a) = %d, %s, %v, want 3, digest of model one, nil", r, d, err)
	}
	j, err := f.Job("j1")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != StatusRunning || j.RunIDs.Sites["a"]["s1"] != "r2" || len(j.Arms["a"]) != keepRounds {
		t.Errorf("Job(j1) = %+v", j)
	}
	rc, err := f.OpenModel(digestOf([]byte("model-two")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	if string(b) != "model-two" {
		t.Errorf("OpenModel = %q, want model-two", b)
	}
	if got := f.Sites(); len(got) != 1 || got[0].LastSeen != 4 {
		t.Errorf("Sites() = %+v", got)
	}
}

func TestRefusals(t *testing.T) {
	m := []byte("m")
	tests := []struct {
		name string
		cmd  Command
		want error
	}{
		{"round committed twice", Command{Type: CmdCommitRound, JobID: "j1", Arm: "a", Round: 3, Digest: digestOf([]byte("model-two"))}, ErrRoundConflict},
		{"round skipped", Command{Type: CmdCommitRound, JobID: "j1", Arm: "a", Round: 5, Digest: digestOf([]byte("model-two"))}, ErrRoundConflict},
		{"new arm starts at 1", Command{Type: CmdCommitRound, JobID: "j1", Arm: "b", Round: 2, Digest: digestOf([]byte("model-two"))}, ErrRoundConflict},
		{"unsealed model", Command{Type: CmdCommitRound, JobID: "j1", Arm: "a", Round: 4, Digest: digestOf(m)}, ErrBlobMissing},
		{"unknown job", Command{Type: CmdCommitRound, JobID: "nope", Arm: "a", Round: 1}, ErrUnknownJob},
		{"job exists", Command{Type: CmdSubmitJob, JobID: "j1"}, ErrJobExists},
		{"run id changed", Command{Type: CmdSetRunIDs, JobID: "j1", RunIDs: &RunIDs{Job: "other"}}, ErrRunIDConflict},
		{"chunk gap", Command{Type: CmdPutBlobChunk, Digest: digestOf(m), Offset: 3, Data: m}, ErrBlobCorrupt},
		{"bad status", Command{Type: CmdSetJobStatus, JobID: "j1", Status: "done"}, ErrInvalid},
		{"unknown command", Command{Type: 99}, ErrUnsupportedVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFSM()
			applyAll(t, f, script(t))
			before := snapshotBytes(t, f)
			r := f.Apply(entry(t, 100, tt.cmd))
			err, _ := r.(error)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Apply(%+v) = %v, want %v", tt.cmd, r, tt.want)
			}
			if !bytes.Equal(before, snapshotBytes(t, f)) {
				t.Errorf("a refused command changed the state")
			}
		})
	}
	var rc *RoundConflictError
	f := NewFSM()
	applyAll(t, f, script(t))
	err, _ := f.Apply(entry(t, 100, Command{Type: CmdCommitRound, JobID: "j1", Arm: "a", Round: 3})).(error)
	if !errors.As(err, &rc) || rc.Last != 3 || rc.Round != 3 {
		t.Errorf("errors.As(%v, RoundConflictError) = %+v", err, rc)
	}
}

func TestSealRefusesWrongDigest(t *testing.T) {
	f := NewFSM()
	d := digestOf([]byte("right"))
	applyAll(t, f, []*raft.Log{entry(t, 1, Command{Type: CmdPutBlobChunk, Digest: d, Data: []byte("wrong")})})
	err, _ := f.Apply(entry(t, 2, Command{Type: CmdSealBlob, Digest: d, Size: 5})).(error)
	if !errors.Is(err, ErrBlobCorrupt) {
		t.Fatalf("sealing a blob with the wrong bytes = %v, want ErrBlobCorrupt", err)
	}
	if _, err := f.OpenModel(d); !errors.Is(err, ErrBlobMissing) {
		t.Errorf("OpenModel after a failed seal = %v, want ErrBlobMissing", err)
	}
}

func TestTerminalJobRefusesCommits(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, script(t))
	applyAll(t, f, []*raft.Log{entry(t, 50, Command{Type: CmdSetJobStatus, JobID: "j1", Status: StatusFailed, Reason: "x"})})
	err, _ := f.Apply(entry(t, 51, Command{Type: CmdSetJobStatus, JobID: "j1", Status: StatusRunning})).(error)
	if !errors.Is(err, ErrJobFinished) {
		t.Errorf("reviving a failed job = %v, want ErrJobFinished", err)
	}
}

func TestGarbageCollection(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, script(t))
	// model two is still referenced (round 2 is within keepRounds);
	// an orphan blob goes once blobGrace has passed by the command clock.
	orphan := []byte("orphan")
	applyAll(t, f, []*raft.Log{
		entry(t, 20, Command{Type: CmdPutBlobChunk, At: 20, Digest: digestOf(orphan), Data: orphan}),
		entry(t, 21, Command{Type: CmdSealBlob, At: 21, Digest: digestOf(orphan), Size: int64(len(orphan))}),
	})
	m3 := []byte("model-three")
	later := 21 + blobGrace + 1
	applyAll(t, f, []*raft.Log{
		entry(t, 22, Command{Type: CmdPutBlobChunk, At: later, Digest: digestOf(m3), Data: m3}),
		entry(t, 23, Command{Type: CmdSealBlob, At: later, Digest: digestOf(m3), Size: int64(len(m3))}),
		entry(t, 24, Command{Type: CmdCommitRound, At: later, JobID: "j1", Arm: "a", Round: 4, Digest: digestOf(m3)}),
	})
	for d, want := range map[string]bool{
		digestOf(orphan):                    false,
		digestOf([]byte("model-two")):       false, // round 2 fell out of the last two
		digestOf([]byte("model-one-bytes")): true,  // round 3
		digestOf(m3):                        true,
	} {
		_, err := f.OpenModel(d)
		if got := err == nil; got != want {
			t.Errorf("blob %s held = %v, want %v", d[:8], got, want)
		}
	}
}

func TestDeterminismAndSnapshotRoundTrip(t *testing.T) {
	a, b := NewFSM(), NewFSM()
	applyAll(t, a, script(t))
	applyAll(t, b, script(t))
	sa, sb := snapshotBytes(t, a), snapshotBytes(t, b)
	if !bytes.Equal(sa, sb) {
		t.Fatalf("two FSMs fed the same log differ after Snapshot")
	}
	c := NewFSM()
	if err := c.Restore(io.NopCloser(bytes.NewReader(sa))); err != nil {
		t.Fatalf("Restore = %v", err)
	}
	if diff := cmp.Diff(a.Jobs(), c.Jobs()); diff != "" {
		t.Errorf("restored jobs (-want +got):\n%s", diff)
	}
	if !bytes.Equal(sa, snapshotBytes(t, c)) {
		t.Errorf("snapshot of the restored FSM differs")
	}
	rc, err := c.OpenModel(digestOf([]byte("model-two")))
	if err != nil {
		t.Fatalf("restored blob: %v", err)
	}
	rc.Close()
}

func TestCorruption(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, script(t))
	snap := snapshotBytes(t, f)
	for name, mutate := range map[string]func([]byte) []byte{
		"flipped byte": func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
		"truncated":    func(b []byte) []byte { return b[:len(b)/2] },
		"empty":        func(b []byte) []byte { return nil },
		"version":      func(b []byte) []byte { b[0] = 9; return b },
	} {
		t.Run("snapshot "+name, func(t *testing.T) {
			g := NewFSM()
			err := g.Restore(io.NopCloser(bytes.NewReader(mutate(append([]byte(nil), snap...)))))
			if !errors.Is(err, ErrBadSnapshot) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Errorf("Restore(%s) = %v, want ErrBadSnapshot or ErrUnsupportedVersion", name, err)
			}
		})
		t.Run("entry "+name, func(t *testing.T) {
			l := script(t)[0]
			l.Data = mutate(l.Data)
			err, _ := NewFSM().Apply(l).(error)
			if !errors.Is(err, ErrBadCommand) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Errorf("Apply(%s entry) = %v, want ErrBadCommand or ErrUnsupportedVersion", name, err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := Encode(Command{Type: CmdSubmitJob, JobID: "j"})
	f.Add(b)
	b, _ = Encode(Command{Type: CmdPutBlobChunk, Digest: digestOf([]byte("xy")), Size: 2, Data: []byte("xy")})
	f.Add(b)
	b, _ = Encode(Command{Type: CmdSealBlob, Digest: digestOf([]byte("xy")), Size: 2, Stored: true, From: "a"})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		_ = NewFSM().apply(c)
		// What decodes encodes back to a command that decodes the same.
		b2, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode(Decode(b)) = %v", err)
		}
		c2, err := Decode(b2)
		if err != nil || !bytes.Equal(c2.Data, c.Data) || c2.Type != c.Type || c2.Digest != c.Digest {
			t.Errorf("round trip: %+v, %v; want %+v", c2, err, c)
		}
	})
}

// TestRestoreVersion1: a snapshot written before version 2 (the state as
// one JSON document) still restores.
func TestRestoreVersion1(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, script(t))
	f.mu.RLock()
	p, err := json.Marshal(f.st)
	f.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	v1 := make([]byte, 5, 5+len(p))
	v1[0] = 1
	binary.BigEndian.PutUint32(v1[1:5], crc32.Checksum(p, castagnoli))
	v1 = append(v1, p...)
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(v1))); err != nil {
		t.Fatalf("Restore(version 1) = %v", err)
	}
	if !bytes.Equal(snapshotBytes(t, f), snapshotBytes(t, g)) {
		t.Error("a version-1 snapshot restores to another state")
	}
}

// FuzzRestore: any bytes restore or are refused as a bad or newer
// snapshot; none panics.
func FuzzRestore(f *testing.F) {
	fsm := NewFSM()
	for _, l := range script(f) {
		fsm.Apply(l)
	}
	s, _ := fsm.Snapshot()
	var sink memSink
	_ = s.Persist(&sink)
	f.Add(sink.Bytes())
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 2, '{', '}', 0, 0, 0, 0})
	// A version 3 snapshot recording a blob in the store by digest.
	fsm.Apply(entry(f, 1000, Command{Type: CmdSealBlob, At: 1, Digest: digestOf([]byte("stored")), Size: 6, Stored: true}))
	s, _ = fsm.Snapshot()
	var sink3 memSink
	_ = s.Persist(&sink3)
	f.Add(sink3.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		err := NewFSM().Restore(io.NopCloser(bytes.NewReader(b)))
		if err != nil && !errors.Is(err, ErrBadSnapshot) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Errorf("Restore = %v, want nil, ErrBadSnapshot or ErrUnsupportedVersion", err)
		}
	})
}

// TestCommittedBlobsGoAtOnce: a model whose round fell out of the last
// keepRounds is dropped at once, not after blobGrace — a job with a
// round every few seconds must not hold an hour of models.
func TestCommittedBlobsGoAtOnce(t *testing.T) {
	f := NewFSM()
	applyAll(t, f, []*raft.Log{entry(t, 1, Command{Type: CmdSubmitJob, At: 1, JobID: "j"})})
	var digests []string
	for r := 1; r <= 5; r++ {
		m := []byte(fmt.Sprintf("model of round %d", r))
		i := uint64(10 * r)
		applyAll(t, f, []*raft.Log{
			entry(t, i, Command{Type: CmdPutBlobChunk, At: int64(i), Digest: digestOf(m), Size: int64(len(m)), Data: m}),
			entry(t, i+1, Command{Type: CmdSealBlob, At: int64(i), Digest: digestOf(m), Size: int64(len(m))}),
			entry(t, i+2, Command{Type: CmdCommitRound, At: int64(i), JobID: "j", Arm: "a", Round: r, Digest: digestOf(m)}),
		})
		digests = append(digests, digestOf(m))
	}
	for r, d := range digests {
		_, err := f.OpenModel(d)
		if held, want := err == nil, r >= 3; held != want {
			t.Errorf("model of round %d held = %v, want %v", r+1, held, want)
		}
	}
	g := NewFSM() // and a restored FSM keeps collecting so
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	m := []byte("model of round 6")
	applyAll(t, g, []*raft.Log{
		entry(t, 60, Command{Type: CmdPutBlobChunk, At: 60, Digest: digestOf(m), Size: int64(len(m)), Data: m}),
		entry(t, 61, Command{Type: CmdSealBlob, At: 60, Digest: digestOf(m), Size: int64(len(m))}),
		entry(t, 62, Command{Type: CmdCommitRound, At: 60, JobID: "j", Arm: "a", Round: 6, Digest: digestOf(m)}),
	})
	if _, err := g.OpenModel(digests[3]); err == nil {
		t.Error("restored FSM kept the model of round 4 after round 6 committed")
	}
}
