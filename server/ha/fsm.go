package ha

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/cohortfl/cohort/server/blobs"
)

// JobStatus is where a job is in its life.
type JobStatus string

// The job statuses. Succeeded, failed and cancelled are terminal.
const (
	StatusQueued    JobStatus = "queued"
	StatusRunning   JobStatus = "running"
	StatusSucceeded JobStatus = "succeeded"
	StatusFailed    JobStatus = "failed"
	StatusCancelled JobStatus = "cancelled"
)

func (s JobStatus) terminal() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

func (s JobStatus) valid() bool {
	return s == StatusQueued || s == StatusRunning || s.terminal()
}

// RunIDs are a job's tracking runs, kept so that runs continue, not
// restart, after a failover.
type RunIDs struct {
	Experiment string                       `json:"experiment,omitempty"`
	Job        string                       `json:"job,omitempty"`
	Arms       map[string]string            `json:"arms,omitempty"`  // by arm
	Sites      map[string]map[string]string `json:"sites,omitempty"` // by arm, then site
}

// Commit is one committed round of an arm.
type Commit struct {
	Round  int    `json:"round"`
	Digest string `json:"digest"`
	At     int64  `json:"at"`
	// Totals are the job's cumulative counters (energy, bytes) as of this
	// round, so that they continue after a failover.
	Totals map[string]float64 `json:"totals,omitempty"`
}

// Job is one replicated job.
type Job struct {
	ID          string    `json:"id"`
	Spec        []byte    `json:"spec"`
	Status      JobStatus `json:"status"`
	Reason      string    `json:"reason,omitempty"`
	SubmittedAt int64     `json:"submitted_at"`
	UpdatedAt   int64     `json:"updated_at"`
	RunIDs      RunIDs    `json:"run_ids"`
	// Arms holds, per arm, its last committed rounds, oldest first (at most
	// [keepRounds]).
	Arms map[string][]Commit `json:"arms,omitempty"`
	// StartedAt is when the job first went running; 0 before (and in a
	// snapshot of an older version).
	StartedAt int64 `json:"started_at,omitempty"`
	// History is every arm's committed rounds in commit order, oldest
	// first, the oldest dropped past [KeepHistory]: what `cohort logs`
	// shows of the rounds after a failover. Empty in a snapshot of an
	// older version.
	History []RoundRecord `json:"history,omitempty"`
}

// RoundRecord is one committed round in a job's [Job.History].
type RoundRecord struct {
	Arm    string             `json:"arm"`
	Round  int                `json:"round"`
	At     int64              `json:"at"`
	Totals map[string]float64 `json:"totals,omitempty"`
}

// KeepHistory is how many committed rounds a job's History keeps.
const KeepHistory = 1000

// Site is one registered site.
type Site struct {
	Name         string `json:"name"`
	Capabilities []byte `json:"capabilities,omitempty"`
	LastSeen     int64  `json:"last_seen"`
}

type blob struct {
	// Data is the blob's bytes when they are held in memory: a node
	// without a blob store (or a blob read from an old log or snapshot
	// before it is moved into the store).
	Data   []byte `json:"data"`
	Sealed bool   `json:"sealed"`
	// External is a blob recorded by digest only: its bytes are not held.
	External bool  `json:"external,omitempty"`
	At       int64 `json:"at"` // last chunk or seal
	// Committed is set once a round references the blob: when no round
	// does any more, it goes at once (no grace).
	Committed bool `json:"committed,omitempty"`
	// Stored is a blob whose bytes are in the node's blob store
	// ([Config.Blobs]), Size of them; Data is then empty.
	Stored bool  `json:"stored,omitempty"`
	Size   int64 `json:"size,omitempty"`
}

// state is everything the FSM replicates; its JSON is the snapshot.
type state struct {
	Jobs  map[string]*Job  `json:"jobs"`
	Sites map[string]*Site `json:"sites"`
	Blobs map[string]*blob `json:"blobs"`
	// ClusterID is set once, by the first leader, to the hash of its peer
	// list; see [CmdSetCluster].
	ClusterID string `json:"cluster_id,omitempty"`
}

// maxPrealloc bounds the capacity a blob's first chunk reserves.
const maxPrealloc = 4 << 30

// keepRounds is how many committed rounds per arm keep their blob.
const keepRounds = 2

// blobGrace is how long (by command clocks) an unreferenced blob survives.
const blobGrace int64 = 3600e9

// FSM is Cohort's raft.FSM. Apply, Snapshot and Restore are called by raft
// from one goroutine; the read accessors may be called concurrently with
// them from any goroutine.
type FSM struct {
	mu      sync.RWMutex
	st      state
	changed chan struct{} // closed and replaced at every change of st

	// store, when set, holds the blobs' bytes instead of st; fetch copies
	// a blob the store lacks from a peer into it (from: the peer to try
	// first; cold: not to be read now, see [blobs.Store.CreateCold]). Both
	// are set by [New] before raft starts and never change.
	store *blobs.Store
	fetch func(d blobs.Digest, size int64, from string, cold bool) error
	log   hclog.Logger
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an empty FSM.
func NewFSM() *FSM {
	return &FSM{st: newState(), changed: make(chan struct{}), log: hclog.NewNullLogger()}
}

// Changed returns a channel closed at the FSM's next applied command or
// restore, for readers that wait on the state rather than poll it. Safe
// for concurrent use.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// notifyLocked wakes Changed's waiters; f.mu is held for writing.
func (f *FSM) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func newState() state {
	return state{Jobs: map[string]*Job{}, Sites: map[string]*Site{}, Blobs: map[string]*blob{}}
}

// Apply applies one log entry and returns nil or the error that refused
// it. It is deterministic: the same entries give the same state on every
// node. Called by raft only.
func (f *FSM) Apply(l *raft.Log) any {
	c, err := Decode(l.Data)
	if err != nil {
		return fmt.Errorf("applying log entry %d: %w", l.Index, err)
	}
	if c.Type == CmdSealBlob && c.Stored {
		// Outside the lock: readers go on while a lagging node fetches.
		f.ensureStored(c.Digest, c.Size, c.From)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.notifyLocked()
	return f.apply(c)
}

func (f *FSM) apply(c Command) error {
	switch c.Type {
	case CmdSubmitJob:
		if c.JobID == "" {
			return fmt.Errorf("submitting a job without an id: %w", ErrInvalid)
		}
		if _, ok := f.st.Jobs[c.JobID]; ok {
			return fmt.Errorf("submitting job %s: %w", c.JobID, ErrJobExists)
		}
		f.st.Jobs[c.JobID] = &Job{ID: c.JobID, Spec: c.Spec, Status: StatusQueued, SubmittedAt: c.At, UpdatedAt: c.At}
	case CmdSetJobStatus:
		j, err := f.liveJob(c.JobID)
		if err != nil {
			return err
		}
		if !c.Status.valid() {
			return fmt.Errorf("job %s: status %q: %w", c.JobID, c.Status, ErrInvalid)
		}
		j.Status, j.Reason, j.UpdatedAt = c.Status, c.Reason, c.At
		if c.Status == StatusRunning && j.StartedAt == 0 {
			j.StartedAt = c.At
		}
	case CmdSetRunIDs:
		j, err := f.liveJob(c.JobID)
		if err != nil {
			return err
		}
		if c.RunIDs == nil {
			return fmt.Errorf("job %s: no run ids: %w", c.JobID, ErrInvalid)
		}
		return mergeRunIDs(j, *c.RunIDs)
	case CmdPutBlobChunk:
		if !validDigest(c.Digest) {
			return fmt.Errorf("blob chunk: digest %q: %w", c.Digest, ErrInvalid)
		}
		b := f.st.Blobs[c.Digest]
		if b != nil && b.Sealed {
			return nil // already held: a duplicate upload
		}
		if c.Offset == 0 || b == nil {
			if c.Offset != 0 {
				return fmt.Errorf("blob %s: chunk at %d of an upload not started: %w", c.Digest, c.Offset, ErrBlobCorrupt)
			}
			b = &blob{}
			if c.Size > 0 && c.Size <= maxPrealloc {
				b.Data = make([]byte, 0, c.Size) // the blob's whole size, announced by its first chunk
			}
			f.st.Blobs[c.Digest] = b
		}
		if c.Offset != int64(len(b.Data)) {
			return fmt.Errorf("blob %s: chunk at %d, blob ends at %d: %w", c.Digest, c.Offset, len(b.Data), ErrBlobCorrupt)
		}
		b.Data = append(b.Data, c.Data...)
		b.At = c.At
	case CmdSealBlob:
		b := f.st.Blobs[c.Digest]
		if c.Stored {
			if !validDigest(c.Digest) || c.Size < 0 {
				return fmt.Errorf("recording stored blob %q of %d bytes: %w", c.Digest, c.Size, ErrInvalid)
			}
			if b == nil || !b.Sealed || b.External {
				f.st.Blobs[c.Digest] = &blob{Sealed: true, Stored: true, Size: c.Size, At: c.At}
			}
			f.gc(c.At)
			return nil
		}
		if c.External {
			if !validDigest(c.Digest) || c.Size < 0 {
				return fmt.Errorf("recording blob %q of %d bytes: %w", c.Digest, c.Size, ErrInvalid)
			}
			if b == nil || !b.Sealed {
				f.st.Blobs[c.Digest] = &blob{Sealed: true, External: true, At: c.At}
			}
			f.gc(c.At)
			return nil
		}
		if b == nil {
			return fmt.Errorf("sealing blob %s: %w", c.Digest, ErrBlobMissing)
		}
		if b.Sealed {
			return nil
		}
		sum := sha256.Sum256(b.Data)
		if int64(len(b.Data)) != c.Size || hex.EncodeToString(sum[:]) != c.Digest {
			delete(f.st.Blobs, c.Digest)
			return fmt.Errorf("sealing blob %s: %d bytes received, %d announced, or digest mismatch: %w", c.Digest, len(b.Data), c.Size, ErrBlobCorrupt)
		}
		b.Sealed, b.At = true, c.At
		f.moveToStore(c.Digest, b)
		f.gc(c.At)
	case CmdCommitRound:
		j, err := f.liveJob(c.JobID)
		if err != nil {
			return err
		}
		if c.Arm == "" {
			return fmt.Errorf("job %s: commit without an arm: %w", c.JobID, ErrInvalid)
		}
		hist := j.Arms[c.Arm]
		last := 0
		if len(hist) > 0 {
			last = hist[len(hist)-1].Round
		}
		if c.Round != last+1 {
			return &RoundConflictError{JobID: c.JobID, Arm: c.Arm, Last: last, Round: c.Round}
		}
		b := f.st.Blobs[c.Digest]
		if b == nil || !b.Sealed {
			return fmt.Errorf("job %s arm %s round %d: model %s: %w", c.JobID, c.Arm, c.Round, c.Digest, ErrBlobMissing)
		}
		b.Committed = true
		hist = append(hist, Commit{Round: c.Round, Digest: c.Digest, At: c.At, Totals: c.Totals})
		if len(hist) > keepRounds {
			hist = append([]Commit(nil), hist[len(hist)-keepRounds:]...)
		}
		if j.Arms == nil {
			j.Arms = map[string][]Commit{}
		}
		j.Arms[c.Arm] = hist
		j.History = append(j.History, RoundRecord{Arm: c.Arm, Round: c.Round, At: c.At, Totals: c.Totals})
		if len(j.History) > KeepHistory {
			j.History = append([]RoundRecord(nil), j.History[len(j.History)-KeepHistory:]...)
		}
		j.UpdatedAt = c.At
		f.gc(c.At)
	case CmdRegisterSite:
		if c.Site == nil || c.Site.Name == "" {
			return fmt.Errorf("registering a site without a name: %w", ErrInvalid)
		}
		s := *c.Site
		s.LastSeen = c.At
		f.st.Sites[s.Name] = &s
	case CmdSetCluster:
		if c.ClusterID == "" {
			return fmt.Errorf("setting an empty cluster id: %w", ErrInvalid)
		}
		if f.st.ClusterID != "" && f.st.ClusterID != c.ClusterID {
			return fmt.Errorf("setting cluster id %s on cluster %s: %w", c.ClusterID, f.st.ClusterID, ErrClusterMismatch)
		}
		f.st.ClusterID = c.ClusterID
	default:
		return fmt.Errorf("command type %d: %w", c.Type, ErrUnsupportedVersion)
	}
	return nil
}

func (f *FSM) liveJob(id string) (*Job, error) {
	j, ok := f.st.Jobs[id]
	if !ok {
		return nil, fmt.Errorf("job %s: %w", id, ErrUnknownJob)
	}
	if j.Status.terminal() {
		return nil, fmt.Errorf("job %s is %s: %w", id, j.Status, ErrJobFinished)
	}
	return j, nil
}

func setOnce(dst *string, v, what string) error {
	if v == "" || *dst == v {
		return nil
	}
	if *dst != "" {
		return fmt.Errorf("%s run is %s, not %s: %w", what, *dst, v, ErrRunIDConflict)
	}
	*dst = v
	return nil
}

// mergeRunIDs sets the ids in add that are unset in j; an id set to
// another value refuses the whole command, leaving j unchanged.
func mergeRunIDs(j *Job, add RunIDs) error {
	// Check every id first, so that a conflict leaves j unchanged; then
	// set them in place. Copying the ids for each command made a job's
	// site runs cost O(sites²) (5,000 sites: 2.3 s of a round's CPU);
	// readers never share these maps (cloneJob and Snapshot encode them).
	cur := &j.RunIDs
	try := func(have, v, what string) error { return setOnce(&have, v, what) }
	if err := try(cur.Experiment, add.Experiment, "experiment"); err != nil {
		return err
	}
	if err := try(cur.Job, add.Job, "job"); err != nil {
		return err
	}
	for a, v := range add.Arms {
		if err := try(cur.Arms[a], v, "arm "+a); err != nil {
			return err
		}
	}
	for a, m := range add.Sites {
		for s, v := range m {
			if err := try(cur.Sites[a][s], v, "arm "+a+" site "+s); err != nil {
				return err
			}
		}
	}
	_ = setOnce(&cur.Experiment, add.Experiment, "experiment") // checked above
	_ = setOnce(&cur.Job, add.Job, "job")
	if cur.Arms == nil {
		cur.Arms = map[string]string{}
	}
	if cur.Sites == nil {
		cur.Sites = map[string]map[string]string{}
	}
	for a, v := range add.Arms {
		x := cur.Arms[a]
		_ = setOnce(&x, v, "")
		cur.Arms[a] = x
	}
	for a, m := range add.Sites {
		if cur.Sites[a] == nil {
			cur.Sites[a] = map[string]string{}
		}
		for s, v := range m {
			x := cur.Sites[a][s]
			_ = setOnce(&x, v, "")
			cur.Sites[a][s] = x
		}
	}
	return nil
}

// gc drops blobs no arm's last keepRounds commits reference: at once for
// a blob a round committed once, else once it is blobGrace old by the
// command clock (so a model put but not yet committed survives; one whose
// round failed goes in the end). Deterministic: it reads only state and
// now.
func (f *FSM) gc(now int64) {
	ref := map[string]bool{}
	for _, j := range f.st.Jobs {
		for _, hist := range j.Arms {
			for _, c := range hist {
				ref[c.Digest] = true
			}
		}
	}
	for d, b := range f.st.Blobs {
		if !ref[d] && (b.Committed || now-b.At > blobGrace) {
			delete(f.st.Blobs, d)
		}
	}
}

func validDigest(d string) bool {
	if len(d) != 64 {
		return false
	}
	_, err := hex.DecodeString(d)
	return err == nil
}

// Job returns a copy of job id. Safe for concurrent use.
func (f *FSM) Job(id string) (Job, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	j, ok := f.st.Jobs[id]
	if !ok {
		return Job{}, fmt.Errorf("job %s: %w", id, ErrUnknownJob)
	}
	return cloneJob(j), nil
}

// Jobs returns copies of every job, by submission time then id. Safe for
// concurrent use.
func (f *FSM) Jobs() []Job {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]Job, 0, len(f.st.Jobs))
	for _, j := range f.st.Jobs {
		out = append(out, cloneJob(j))
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].SubmittedAt != out[b].SubmittedAt {
			return out[a].SubmittedAt < out[b].SubmittedAt
		}
		return out[a].ID < out[b].ID
	})
	return out
}

func cloneJob(j *Job) Job {
	b, _ := json.Marshal(j) // a Job always marshals
	var c Job
	_ = json.Unmarshal(b, &c)
	return c
}

// LastRound returns the last committed round of a job's arm and its
// model's digest; 0 and "" before the first commit. Safe for concurrent use.
func (f *FSM) LastRound(jobID, arm string) (int, string, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	j, ok := f.st.Jobs[jobID]
	if !ok {
		return 0, "", fmt.Errorf("job %s: %w", jobID, ErrUnknownJob)
	}
	hist := j.Arms[arm]
	if len(hist) == 0 {
		return 0, "", nil
	}
	c := hist[len(hist)-1]
	return c.Round, c.Digest, nil
}

// ClusterID returns the cluster's id, "" until the first leader sets it.
// Safe for concurrent use.
func (f *FSM) ClusterID() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.ClusterID
}

// Sites returns the registered sites by name. Safe for concurrent use.
func (f *FSM) Sites() []Site {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]Site, 0, len(f.st.Sites))
	for _, s := range f.st.Sites {
		out = append(out, *s)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// OpenModel returns a reader of the sealed blob digest. Safe for
// concurrent use; the reader stays valid after the blob is collected.
//
// A blob in the node's blob store is opened from its file (an
// *os.File); one the store lacks — a fetch at apply or restore failed —
// is fetched from the peers first.
func (f *FSM) OpenModel(digest string) (io.ReadCloser, error) {
	f.mu.RLock()
	b := f.st.Blobs[digest]
	if b == nil || !b.Sealed {
		f.mu.RUnlock()
		return nil, fmt.Errorf("model %s: %w", digest, ErrBlobMissing)
	}
	if b.External {
		f.mu.RUnlock()
		return nil, fmt.Errorf("model %s is recorded by its digest only, its bytes kept by the coordinator that put it: %w", digest, ErrBlobMissing)
	}
	if !b.Stored {
		defer f.mu.RUnlock()
		return io.NopCloser(bytes.NewReader(b.Data)), nil
	}
	size := b.Size
	f.mu.RUnlock()
	if f.store == nil {
		return nil, fmt.Errorf("model %s is in the coordinators' blob stores and this node has none: configure its blob store: %w", digest, ErrBlobMissing)
	}
	d := blobs.Digest(digest)
	if !f.store.Has(d) && f.fetch != nil {
		if err := f.fetch(d, size, "", false); err != nil { // read next
			return nil, fmt.Errorf("model %s is not in this node's blob store and fetching it from the peers failed: %w: %w", digest, err, ErrBlobMissing)
		}
	}
	file, err := f.store.Open(d)
	if err != nil {
		return nil, fmt.Errorf("opening model %s: %w: %w", digest, err, ErrBlobMissing)
	}
	return file, nil
}

// ensureStored makes sure the store holds blob d (size bytes), put by
// node from, fetching it if not: a node whose copy could not be fetched
// logs why and goes on (the state records the blob all the same, so that
// every node's state stays the same); OpenModel fetches it again.
func (f *FSM) ensureStored(digest string, size int64, from string) {
	if f.store == nil || !validDigest(digest) {
		return
	}
	d := blobs.Digest(digest)
	if f.store.Has(d) || f.fetch == nil {
		return
	}
	if err := f.fetch(d, size, from, true); errors.Is(err, ErrClosed) {
		// A spare follower still fetching the last model when the
		// coordinator stops: no fault.
		f.log.Info("the node closed while it fetched a committed blob; it is fetched again when read", "digest", digest, "size", size, "from", from)
	} else if err != nil {
		f.log.Error("a committed blob could not be fetched from the peers; it is fetched again when read", "digest", digest, "size", size, "from", from, "error", err)
	}
}

// moveToStore writes b's bytes (read from an old log or snapshot) into
// the store, and keeps only its size in memory. Without a store, or when
// the write fails (logged), b keeps its bytes.
func (f *FSM) moveToStore(digest string, b *blob) {
	if f.store == nil || b.Stored || b.External || !b.Sealed {
		return
	}
	if err := putBytes(f.store, blobs.Digest(digest), b.Data); err != nil {
		f.log.Error("moving a blob of an old log entry or snapshot into the blob store failed; it stays in memory", "digest", digest, "error", err)
		return
	}
	b.Stored, b.Size, b.Data = true, int64(len(b.Data)), nil
}

// putBytes stores data as blob d.
func putBytes(s *blobs.Store, d blobs.Digest, data []byte) error {
	if s.Has(d) {
		return nil
	}
	w, err := s.Create(context.Background())
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		_ = w.Abort()
		return err
	}
	_, err = w.Commit(d)
	return err
}

// keepBlob reports whether the state still references blob d: the blob
// store's collector keeps it.
func (f *FSM) keepBlob(d blobs.Digest) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, ok := f.st.Blobs[string(d)]
	return ok
}

// A snapshot (version 3) is a version byte, the length of a JSON header
// (8 bytes, big-endian), the header — jobs, sites, the cluster id and the
// blobs' metadata in digest order — then the bytes of the blobs held in
// memory in that order, raw, and a CRC-32C of everything before it. A
// blob in the blob store ([Config.Blobs]) carries its digest and size
// only (Stored). Version 2 (the same, every blob with its bytes) and
// version 1 (the state as one JSON document, blobs in base64) are still
// read; their blobs' bytes go into the store on restore.
type snapshotHeader struct {
	Jobs      map[string]*Job  `json:"jobs"`
	Sites     map[string]*Site `json:"sites"`
	ClusterID string           `json:"cluster_id,omitempty"`
	Blobs     []snapshotBlob   `json:"blobs"`
}

type snapshotBlob struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Sealed bool   `json:"sealed"`
	At     int64  `json:"at"`
	// Committed is the blob's Committed.
	Committed bool `json:"committed,omitempty"`
	// External is the blob's External (Size is then 0).
	External bool `json:"external,omitempty"`
	// Stored is the blob's Stored (version 3): no bytes follow for it,
	// Size is its size in the store.
	Stored bool `json:"stored,omitempty"`
}

const (
	snapshotVersion2 = 2
	snapshotVersion3 = 3
)

// Snapshot captures the state for raft: the header is encoded now, the
// blobs' bytes are referenced (a blob only ever grows past what is
// captured) and written by Persist. Called by raft only, never
// concurrently with Apply; the snapshot shares nothing mutable with later
// Applies.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := snapshotHeader{Jobs: f.st.Jobs, Sites: f.st.Sites, ClusterID: f.st.ClusterID}
	digests := make([]string, 0, len(f.st.Blobs))
	for d := range f.st.Blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	data := make([][]byte, 0, len(digests))
	for _, d := range digests {
		b := f.st.Blobs[d]
		if b.Stored {
			h.Blobs = append(h.Blobs, snapshotBlob{Digest: d, Size: b.Size, Sealed: b.Sealed, At: b.At, Committed: b.Committed, Stored: true})
			continue
		}
		h.Blobs = append(h.Blobs, snapshotBlob{Digest: d, Size: int64(len(b.Data)), Sealed: b.Sealed, At: b.At, Committed: b.Committed, External: b.External})
		data = append(data, b.Data[:len(b.Data):len(b.Data)])
	}
	hdr, err := json.Marshal(h) // maps marshal in key order: deterministic
	if err != nil {
		return nil, fmt.Errorf("encoding snapshot: %w", err)
	}
	return &fsmSnapshot{header: hdr, blobs: data}, nil
}

// Restore replaces the state with a snapshot written by Snapshot. A
// damaged snapshot is an error wrapping [ErrBadSnapshot] and leaves the
// state as it was. Called by raft only, never concurrently with Apply.
//
// With a blob store, Restore fetches from the peers, before it returns,
// every blob the snapshot records by digest that the store lacks, and
// writes into the store the bytes an older snapshot carries. A blob it
// cannot fetch is logged and recorded all the same: [FSM.OpenModel]
// fetches it when it is read.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("reading snapshot: %w", err)
	}
	var st state
	switch {
	case len(b) < 5:
		return fmt.Errorf("restoring a snapshot of %d bytes: %w", len(b), ErrBadSnapshot)
	case b[0] == snapshotVersion:
		st, err = decodeSnapshotV1(b)
	case b[0] == snapshotVersion2, b[0] == snapshotVersion3:
		st, err = decodeSnapshotV2(b)
	default:
		return fmt.Errorf("restoring snapshot version %d (this node reads 1 to 3): %w", b[0], ErrUnsupportedVersion)
	}
	if err != nil {
		return err
	}
	for d, bl := range st.Blobs {
		sum := sha256.Sum256(bl.Data)
		if bl.Sealed && !bl.External && !bl.Stored && hex.EncodeToString(sum[:]) != d {
			return fmt.Errorf("restoring snapshot: blob %s does not match its digest: %w", d, ErrBadSnapshot)
		}
	}
	digests := make([]string, 0, len(st.Blobs))
	for d := range st.Blobs {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	for _, d := range digests {
		bl := st.Blobs[d]
		if bl.Stored {
			f.ensureStored(d, bl.Size, "")
		} else {
			f.moveToStore(d, bl)
		}
	}
	f.mu.Lock()
	f.st = st
	f.notifyLocked()
	f.mu.Unlock()
	return nil
}

func decodeSnapshotV1(b []byte) (state, error) {
	st := newState()
	p := b[5:]
	if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(b[1:5]) {
		return st, fmt.Errorf("restoring snapshot: checksum mismatch: %w", ErrBadSnapshot)
	}
	if err := json.Unmarshal(p, &st); err != nil {
		return st, fmt.Errorf("restoring snapshot: %v: %w", err, ErrBadSnapshot)
	}
	return st, nil
}

func decodeSnapshotV2(b []byte) (state, error) {
	st := newState()
	bad := func(why string) (state, error) {
		return st, fmt.Errorf("restoring snapshot: %s: %w", why, ErrBadSnapshot)
	}
	if len(b) < 13 {
		return bad(fmt.Sprintf("%d bytes is too short", len(b)))
	}
	body, sum := b[:len(b)-4], b[len(b)-4:]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(sum) {
		return bad("checksum mismatch")
	}
	n := binary.BigEndian.Uint64(body[1:9])
	rest := body[9:]
	if n > uint64(len(rest)) {
		return bad("header length past the end")
	}
	var h snapshotHeader
	if err := json.Unmarshal(rest[:n], &h); err != nil {
		return bad(err.Error())
	}
	rest = rest[n:]
	if h.Jobs != nil {
		st.Jobs = h.Jobs
	}
	if h.Sites != nil {
		st.Sites = h.Sites
	}
	st.ClusterID = h.ClusterID
	for _, bl := range h.Blobs {
		if bl.Stored {
			if b[0] < snapshotVersion3 || bl.Size < 0 || bl.External || !validDigest(bl.Digest) {
				return bad(fmt.Sprintf("stored blob %.80q of %d bytes in a version %d snapshot", bl.Digest, bl.Size, b[0]))
			}
			st.Blobs[bl.Digest] = &blob{Sealed: bl.Sealed, At: bl.At, Committed: bl.Committed, Stored: true, Size: bl.Size}
			continue
		}
		if bl.Size < 0 || bl.Size > int64(len(rest)) {
			return bad(fmt.Sprintf("blob %s of %d bytes past the end", bl.Digest, bl.Size))
		}
		st.Blobs[bl.Digest] = &blob{Data: rest[:bl.Size:bl.Size], Sealed: bl.Sealed, At: bl.At, Committed: bl.Committed, External: bl.External}
		rest = rest[bl.Size:]
	}
	if len(rest) != 0 {
		return bad(fmt.Sprintf("%d bytes after the last blob", len(rest)))
	}
	return st, nil
}

type fsmSnapshot struct {
	header []byte
	blobs  [][]byte
}

// Persist streams the snapshot to sink. Called by raft, concurrently with
// Apply.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	crc := crc32.New(castagnoli)
	w := bufio.NewWriterSize(io.MultiWriter(sink, crc), 1<<20)
	var pre [9]byte
	pre[0] = snapshotVersion3
	binary.BigEndian.PutUint64(pre[1:], uint64(len(s.header)))
	err := writeAll(w, pre[:], s.header)
	for _, b := range s.blobs {
		if err == nil {
			_, err = w.Write(b)
		}
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		_, err = sink.Write(crc.Sum(nil)) // big-endian, as crc32.Checksum is compared
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return sink.Close()
}

func writeAll(w io.Writer, bs ...[]byte) error {
	for _, b := range bs {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// Release does nothing. Called by raft.
func (s *fsmSnapshot) Release() {}
