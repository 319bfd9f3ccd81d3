package mlflowclient

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// The spool is a directory of append-only segment files, seg-<n>.log.
// A segment starts with segMagic; then come frames, each a little-endian
// uint32 payload length, the CRC-32C of the payload and the payload: one
// JSON record. A record is a write to send (op, with a sequence number),
// an ack (every op up to its sequence number reached the server, or was
// refused and reported) or a map (a placeholder run ID and the server's
// run ID). Every append is fsync'd. A segment begins with a snapshot of
// the maps and the ack, so a segment whose ops were all acked can be
// deleted once a later one exists. At open, a frame that is cut short or
// fails its checksum ends its segment: the rest of it is cut off and
// reported, and the spool goes on with the next segment.

const (
	segMagic     = "COHSPL1\n"
	frameHeader  = 8
	maxFrameBody = 1 << 30
	lockName     = "LOCK"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record types.
const (
	recOp  = "op"
	recAck = "ack"
	recMap = "map"
)

// record is one frame's payload.
type record struct {
	Type string     `json:"t"`
	Seq  uint64     `json:"s,omitempty"`
	Op   *op        `json:"op,omitempty"`
	Map  *idMapping `json:"m,omitempty"`
}

// Kinds of op.
const (
	opCreate   = "create"
	opUpdate   = "update"
	opBatch    = "batch"
	opInputs   = "inputs"
	opArtifact = "artifact"
	// opExperiment gets or creates an experiment by Name, for the
	// placeholder experiment ID in RunID.
	opExperiment = "experiment"
)

// op is one spooled write, kept as the request it becomes; RunID (and a
// parent run ID among the tags) may be a placeholder, replaced when sent.
type op struct {
	Kind     string                `json:"k"`
	RunID    string                `json:"r"`
	Create   *mlflowwire.CreateRun `json:"c,omitempty"`
	Update   *mlflowwire.UpdateRun `json:"u,omitempty"`
	Batch    *mlflowwire.LogBatch  `json:"b,omitempty"`
	Inputs   *mlflowwire.LogInputs `json:"i,omitempty"`
	Path     string                `json:"p,omitempty"`
	Name     string                `json:"n,omitempty"` // of an experiment
	Artifact []byte                `json:"a,omitempty"`
}

// idMapping records what became of a placeholder run or experiment ID.
type idMapping struct {
	Placeholder string `json:"p"`
	RunID       string `json:"r,omitempty"` // the server's run or experiment ID
	ArtifactURI string `json:"a,omitempty"`
	Failed      string `json:"f,omitempty"` // why the create was refused
}

// errCorruptFrame and errTruncatedFrame are what decodeFrame finds wrong.
var (
	errCorruptFrame   = errors.New("corrupt spool record")
	errTruncatedFrame = errors.New("truncated spool record")
)

// encodeFrame frames rec.
func encodeFrame(rec record) ([]byte, error) {
	payload, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encoding spool record: %w", err)
	}
	if len(payload) > maxFrameBody {
		return nil, fmt.Errorf("encoding spool record: %d bytes is over the %d-byte limit of one record", len(payload), maxFrameBody)
	}
	b := make([]byte, frameHeader, frameHeader+len(payload))
	binary.LittleEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(payload, castagnoli))
	return append(b, payload...), nil
}

// decodeFrame decodes the frame at the start of b and returns its record
// and length.
func decodeFrame(b []byte) (record, int, error) {
	if len(b) < frameHeader {
		return record{}, 0, errTruncatedFrame
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	if n > maxFrameBody {
		return record{}, 0, fmt.Errorf("%w: length %d", errCorruptFrame, n)
	}
	if uint64(len(b)) < frameHeader+uint64(n) {
		return record{}, 0, errTruncatedFrame
	}
	payload := b[frameHeader : frameHeader+int(n)]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(b[4:8]) {
		return record{}, 0, fmt.Errorf("%w: checksum mismatch", errCorruptFrame)
	}
	var rec record
	if err := json.Unmarshal(payload, &rec); err != nil {
		return record{}, 0, fmt.Errorf("%w: %w", errCorruptFrame, err)
	}
	switch {
	case rec.Type == recOp && rec.Op != nil && rec.Seq > 0,
		rec.Type == recAck,
		rec.Type == recMap && rec.Map != nil && rec.Map.Placeholder != "":
	default:
		return record{}, 0, fmt.Errorf("%w: record of type %q is incomplete", errCorruptFrame, rec.Type)
	}
	return rec, frameHeader + int(n), nil
}

// scannedFrame is a record decoded from a segment, with its place.
type scannedFrame struct {
	rec record
	off int64
	n   int
}

// decodeSegment decodes a whole segment file. It returns the records
// before the first bad frame, the length of that good prefix, and the
// error that ended it (nil when the whole segment is good).
func decodeSegment(b []byte) ([]scannedFrame, int64, error) {
	if len(b) < len(segMagic) || string(b[:len(segMagic)]) != segMagic {
		if len(b) < len(segMagic) && segMagic[:len(b)] == string(b) {
			return nil, 0, errTruncatedFrame
		}
		return nil, 0, fmt.Errorf("%w: not a spool segment (bad magic)", errCorruptFrame)
	}
	var out []scannedFrame
	off := len(segMagic)
	for off < len(b) {
		rec, n, err := decodeFrame(b[off:])
		if err != nil {
			return out, int64(off), err
		}
		out = append(out, scannedFrame{rec, int64(off), n})
		off += n
	}
	return out, int64(off), nil
}

type segment struct {
	num    uint64
	path   string
	f      *os.File
	size   int64
	base   int64  // bytes of the magic and snapshot it starts with
	maxSeq uint64 // of the ops in it; 0 when none
}

// entry is where a pending op lies.
type entry struct {
	seq uint64
	seg *segment
	off int64
	n   int
}

// spool is the on-disk buffer. It is not safe for concurrent use: the
// Client holds its mutex around every call.
type spool struct {
	dir     string
	max     int64
	segMax  int64
	log     *slog.Logger
	lock    *os.File
	segs    []*segment // by number; the last one is appended to
	size    int64
	nextSeq uint64
	acked   uint64
	maps    map[string]idMapping
}

// recovery is what opening the spool found.
type recovery struct {
	pending      []entry
	corruptBytes int64
	problems     []error
}

func segName(n uint64) string { return fmt.Sprintf("seg-%016d.log", n) }

// openSpool opens (creating) the spool in dir and replays it.
func openSpool(dir string, maxBytes, segMax int64, log *slog.Logger) (*spool, recovery, error) {
	var rec recovery
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, rec, fmt.Errorf("opening spool %s: %w", dir, err)
	}
	lock, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		return nil, rec, fmt.Errorf("opening spool %s: %w", dir, err)
	}
	s := &spool{dir: dir, max: maxBytes, segMax: segMax, log: log, lock: lock, nextSeq: 1, maps: map[string]idMapping{}}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, rec, fmt.Errorf("opening spool %s: %w", dir, err)
	}
	var nums []uint64
	for _, d := range names {
		name := d.Name()
		if !strings.HasPrefix(name, "seg-") || !strings.HasSuffix(name, ".log") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "seg-"), ".log"), 10, 64)
		if err != nil {
			continue
		}
		nums = append(nums, n)
	}
	slices.Sort(nums)
	var ops []entry
	for _, n := range nums {
		seg, entries, err := s.replaySegment(n, &rec)
		if err != nil {
			return nil, rec, err
		}
		if seg != nil {
			s.segs = append(s.segs, seg)
			ops = append(ops, entries...)
		}
	}
	for _, e := range ops {
		if e.seq > s.acked {
			rec.pending = append(rec.pending, e)
		}
	}
	if len(rec.pending) == 0 {
		// Nothing left names a placeholder of the last process.
		s.maps = map[string]idMapping{}
	}
	next := uint64(1)
	if len(s.segs) > 0 {
		next = s.segs[len(s.segs)-1].num + 1
	}
	if err := s.startSegment(next); err != nil {
		return nil, rec, err
	}
	s.dropSent()
	ok = true
	return s, rec, nil
}

// replaySegment reads segment n into s's state, cutting off a bad tail.
func (s *spool) replaySegment(n uint64, rec *recovery) (*segment, []entry, error) {
	path := filepath.Join(s.dir, segName(n))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening spool segment %s: %w", path, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("reading spool segment %s: %w", path, err)
	}
	frames, good, derr := decodeSegment(data)
	if derr != nil {
		bad := int64(len(data)) - good
		rec.corruptBytes += bad
		rec.problems = append(rec.problems, fmt.Errorf("spool segment %s: %w at byte %d; the last %d bytes are cut off (writes in them are lost)", path, derr, good, bad))
		if good == 0 {
			// Not even the magic survived: set the file aside.
			f.Close()
			if err := os.Rename(path, path+".corrupt"); err != nil {
				return nil, nil, fmt.Errorf("setting corrupt spool segment %s aside: %w", path, err)
			}
			return nil, nil, nil
		}
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("cutting the corrupt tail off spool segment %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("syncing spool segment %s: %w", path, err)
		}
	}
	seg := &segment{num: n, path: path, f: f, size: good}
	s.size += good
	var entries []entry
	for _, fr := range frames {
		switch r := fr.rec; r.Type {
		case recOp:
			entries = append(entries, entry{seq: r.Seq, seg: seg, off: fr.off, n: fr.n})
			seg.maxSeq = max(seg.maxSeq, r.Seq)
			s.nextSeq = max(s.nextSeq, r.Seq+1)
		case recAck:
			s.acked = max(s.acked, r.Seq)
			s.nextSeq = max(s.nextSeq, r.Seq+1)
		case recMap:
			s.maps[r.Map.Placeholder] = *r.Map
		}
	}
	return seg, entries, nil
}

// startSegment creates segment n, with the snapshot of the maps and the
// ack, and makes it the one appended to.
func (s *spool) startSegment(n uint64) error {
	path := filepath.Join(s.dir, segName(n))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("creating spool segment: %w", err)
	}
	buf := []byte(segMagic)
	keys := make([]string, 0, len(s.maps))
	for k := range s.maps {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		m := s.maps[k]
		fr, err := encodeFrame(record{Type: recMap, Map: &m})
		if err != nil {
			f.Close()
			return err
		}
		buf = append(buf, fr...)
	}
	fr, err := encodeFrame(record{Type: recAck, Seq: s.acked})
	if err != nil {
		f.Close()
		return err
	}
	buf = append(buf, fr...)
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("writing spool segment %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing spool segment %s: %w", path, err)
	}
	syncDir(s.dir)
	s.segs = append(s.segs, &segment{num: n, path: path, f: f, size: int64(len(buf)), base: int64(len(buf))})
	s.size += int64(len(buf))
	return nil
}

// dropSent deletes the segments before the last one whose ops were all
// acked; the last segment's snapshot holds their maps and ack. Acks are
// a watermark, so such segments are a prefix of the list.
func (s *spool) dropSent() {
	last := len(s.segs) - 1
	keep := s.segs[:0:0]
	for i, seg := range s.segs {
		if i == last || seg.maxSeq > s.acked {
			keep = append(keep, seg)
			continue
		}
		seg.f.Close()
		if err := os.Remove(seg.path); err != nil {
			s.log.Warn("mlflow_spool_remove_failed", "path", seg.path, "err", err)
			keep = append(keep, seg)
			continue
		}
		s.size -= seg.size
	}
	s.segs = keep
}

// append writes one record at the end of the spool and syncs it.
func (s *spool) append(rec record) (entry, error) {
	fr, err := encodeFrame(rec)
	if err != nil {
		return entry{}, err
	}
	if s.size+int64(len(fr)) > s.max && rec.Type == recOp {
		s.compact()
		if s.size+int64(len(fr)) > s.max {
			return entry{}, fmt.Errorf("%w: %s holds %d bytes of writes not yet sent and the limit is %d; bring the MLflow server back or raise SpoolMaxBytes", ErrSpoolFull, s.dir, s.size, s.max)
		}
	}
	act := s.segs[len(s.segs)-1]
	if act.size+int64(len(fr)) > s.segMax && act.size > int64(len(segMagic)) {
		if err := s.rotate(); err != nil {
			return entry{}, err
		}
		act = s.segs[len(s.segs)-1]
	}
	off := act.size
	if _, err := act.f.WriteAt(fr, off); err != nil {
		_ = act.f.Truncate(off)
		return entry{}, fmt.Errorf("writing to spool segment %s: %w", act.path, err)
	}
	if err := act.f.Sync(); err != nil {
		_ = act.f.Truncate(off)
		return entry{}, fmt.Errorf("syncing spool segment %s: %w", act.path, err)
	}
	act.size += int64(len(fr))
	s.size += int64(len(fr))
	if rec.Type == recOp {
		act.maxSeq = rec.Seq
	}
	return entry{seq: rec.Seq, seg: act, off: off, n: len(fr)}, nil
}

// rotate starts a new segment and drops those fully sent.
func (s *spool) rotate() error {
	if err := s.startSegment(s.segs[len(s.segs)-1].num + 1); err != nil {
		return err
	}
	s.dropSent()
	return nil
}

// compact rotates when that gives space back: a segment before the last
// whose ops were all sent, or a last one holding more than its snapshot
// with all its ops sent.
func (s *spool) compact() {
	last := len(s.segs) - 1
	for i, seg := range s.segs {
		if seg.maxSeq <= s.acked && (i < last || seg.size > seg.base) {
			if err := s.rotate(); err != nil {
				s.log.Warn("mlflow_spool_compact_failed", "err", err)
			}
			return
		}
	}
}

// appendOp spools a write and returns where it lies.
func (s *spool) appendOp(o *op) (entry, error) {
	e, err := s.append(record{Type: recOp, Seq: s.nextSeq, Op: o})
	if err != nil {
		return entry{}, err
	}
	s.nextSeq++
	return e, nil
}

// appendAck records that every op up to seq is done.
func (s *spool) appendAck(seq uint64) error {
	if _, err := s.append(record{Type: recAck, Seq: seq}); err != nil {
		return err
	}
	s.acked = seq
	return nil
}

// appendMap records what became of a placeholder.
func (s *spool) appendMap(m idMapping) error {
	if _, err := s.append(record{Type: recMap, Map: &m}); err != nil {
		return err
	}
	s.maps[m.Placeholder] = m
	return nil
}

// read returns the op at e.
func (s *spool) read(e entry) (*op, error) {
	buf := make([]byte, e.n)
	if _, err := e.seg.f.ReadAt(buf, e.off); err != nil {
		return nil, fmt.Errorf("reading spool segment %s: %w", e.seg.path, err)
	}
	rec, _, err := decodeFrame(buf)
	if err != nil {
		return nil, fmt.Errorf("reading spool segment %s at byte %d: %w", e.seg.path, e.off, err)
	}
	if rec.Type != recOp {
		return nil, fmt.Errorf("reading spool segment %s at byte %d: %w: not a write", e.seg.path, e.off, errCorruptFrame)
	}
	return rec.Op, nil
}

// idle gives back the disk space of a spool with nothing pending, once
// it is worth a new segment.
func (s *spool) idle() {
	act := s.segs[len(s.segs)-1]
	if len(s.segs) > 1 || act.size-act.base > s.segMax/2 {
		if err := s.rotate(); err != nil {
			s.log.Warn("mlflow_spool_compact_failed", "err", err)
		}
	}
}

func (s *spool) close() error {
	var errs []error
	for _, seg := range s.segs {
		errs = append(errs, seg.f.Close())
	}
	s.segs = nil
	if s.lock != nil {
		errs = append(errs, unlockDir(s.lock))
		s.lock = nil
	}
	return errors.Join(errs...)
}

// syncDir makes a new file's directory entry durable; best effort.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
