package ha

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cohortfl/cohort/server/blobs"
)

// BlobStream is a blob as its putter writes it. Read returns its bytes as
// they are written and io.EOF once every byte is written and the digest
// known; any other error means the put failed or this stream was dropped.
// Digest, valid once Read has returned io.EOF, is what the bytes must hash
// to. A BlobStream is read by one goroutine.
type BlobStream interface {
	io.Reader
	Digest() blobs.Digest
}

// BlobPusher is the optional part of a [BlobTransport] that streams a
// blob to a follower while the leader writes it ([Node.PutModel]): the
// commit then costs about one write rather than a write and a fetch. A
// transport without it replicates by [BlobTransport.HoldBlob] only.
type BlobPusher interface {
	// PushBlob streams b to peer to ([Node.ReceiveBlob] there), from
	// being the putter, and returns once to holds the blob or the push
	// failed. It honours ctx and is safe for concurrent use.
	PushBlob(ctx context.Context, to, from Peer, b BlobStream) error
}

// ErrPushBehind is returned by a [BlobStream] whose reader fell more than
// [Config.PushBuffer] bytes behind the putter while enough others kept up
// for a quorum, or left the putter waiting 10 s for room: the push is
// dropped and the follower fetches the blob instead. (A put pushes only
// to the followers a quorum needs, so today only a stall drops one.)
var ErrPushBehind = errors.New("blob push fell behind the leader's write")

const (
	defaultPushBuffer = 64 << 20
	// pushChunk is the most bytes of one queued piece of a push, and of
	// one write into the leader's store: pieces that stay in the CPU's
	// cache while the store hashes them and the kernel copies them.
	pushChunk = 256 << 10
)

// blobTee writes a blob into the leader's store Writer (which hashes it,
// once) and queues the same bytes, copied once and shared, to a stream
// per follower, each holding at most its buffer. The leader waits for a
// full stream only while fewer than need streams (the followers a quorum
// needs besides the leader) have taken a piece, and for pushStall at most:
// a stream full beyond that is dropped, and its follower fetches the blob
// once written. Write, finish and fail are called by the putting
// goroutine only.
type blobTee struct {
	w       io.Writer
	streams []*teeStream
	live    int
	need    int
	stall   time.Duration // pushStall; shorter in tests
	room    chan struct{} // a reader took a piece
	full    []*teeStream  // scratch
}

// pushStall is the longest the leader's write waits for a push a quorum
// needs to make room before it drops it.
const pushStall = 10 * time.Second

// teeStream is one follower's view of a blobTee: a BlobStream.
type teeStream struct {
	ch chan *piece // queued pieces; closed by the tee at the end or on a drop
	// held is how long the leader's write waited with this stream full
	// (the tee's goroutine only).
	held time.Duration
	// dropped is closed on a drop, so that the push in flight is
	// cancelled rather than left blocked on a follower that stalls.
	dropped chan struct{}
	room    chan<- struct{}
	err     error // why ch closed early; written before close
	digest  blobs.Digest
	cur     []byte // what is left of pc
	pc      *piece
	gone    bool // dropped or finished (the tee's goroutine only)
}

var _ BlobStream = (*teeStream)(nil)

// newBlobTee tees into w and n streams that may each queue about buffer
// bytes, need of which the leader waits for.
func newBlobTee(w io.Writer, n, need int, buffer int64) *blobTee {
	t := &blobTee{w: w, live: n, need: need, stall: pushStall, room: make(chan struct{}, 1)}
	slots := max(int(buffer/pushChunk), 1)
	for range n {
		t.streams = append(t.streams, &teeStream{ch: make(chan *piece, slots), dropped: make(chan struct{}), room: t.room})
	}
	return t
}

// Write writes p to the store's Writer and queues it to the live streams.
func (t *blobTee) Write(p []byte) (int, error) {
	if t.live == 0 {
		return t.w.Write(p)
	}
	written := 0
	for written < len(p) {
		chunk := p[written:min(written+pushChunk, len(p))]
		n, err := t.w.Write(chunk)
		if n > 0 && t.live > 0 {
			live := t.live
			pc := newPiece(chunk[:n], live)
			t.queue(pc)
			pc.release(live - pc.sent) // the streams that did not take it
		}
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// piece is a part of a blob queued to the streams, shared by them: its
// buffer returns to piecePool once each stream that took it is done with
// it. A piece a stream drops unread is left to the collector.
type piece struct {
	b    []byte
	refs atomic.Int32
	sent int // streams that took it (the tee's goroutine only)
}

// piecePool holds pushChunk buffers: a fresh 1 MiB buffer per piece made
// the page faults of the copies a quarter of a push's CPU.
var piecePool = sync.Pool{New: func() any { b := make([]byte, pushChunk); return &b }}

func newPiece(p []byte, refs int) *piece {
	buf := piecePool.Get().(*[]byte)
	pc := &piece{b: (*buf)[:copy(*buf, p)]}
	pc.refs.Store(int32(refs))
	return pc
}

// release drops n references to the piece.
func (pc *piece) release(n int) {
	if n > 0 && pc.refs.Add(-int32(n)) == 0 {
		b := pc.b[:cap(pc.b)]
		pc.b = nil
		piecePool.Put(&b)
	}
}

// queue hands piece to every live stream, waiting (pushStall at most)
// for full ones while fewer than need have taken it, and drops the
// streams still full.
func (t *blobTee) queue(piece *piece) {
	sent := 0
	t.full = t.full[:0]
	for _, s := range t.streams {
		if s.gone {
			continue
		}
		select {
		case s.ch <- piece:
			sent++
		default:
			t.full = append(t.full, s)
		}
	}
	defer func() { piece.sent = sent }()
	if len(t.full) > 0 && sent < t.need {
		start := time.Now()
		stall := time.NewTimer(t.stall)
	wait:
		for sent < t.need && len(t.full) > 0 {
			select {
			case <-t.room:
			case <-stall.C:
				break wait
			}
			still := t.full[:0]
			for _, s := range t.full {
				select {
				case s.ch <- piece:
					sent++
					s.held += time.Since(start)
				default:
					still = append(still, s)
				}
			}
			t.full = still
		}
		stall.Stop()
		for _, s := range t.full {
			s.held += time.Since(start)
		}
	}
	for _, s := range t.full {
		t.drop(s, ErrPushBehind)
	}
}

func (t *blobTee) drop(s *teeStream, err error) {
	s.gone, s.err = true, err
	close(s.ch)
	close(s.dropped)
	t.live--
}

// finish ends the live streams: their readers see io.EOF and digest d.
func (t *blobTee) finish(d blobs.Digest) {
	for _, s := range t.streams {
		if !s.gone {
			s.gone, s.digest = true, d
			close(s.ch)
		}
	}
	t.live = 0
}

// fail ends the live streams with err.
func (t *blobTee) fail(err error) {
	for _, s := range t.streams {
		if !s.gone {
			t.drop(s, err)
		}
	}
}

// took tells the tee that a piece left this stream's queue.
func (s *teeStream) took() {
	select {
	case s.room <- struct{}{}:
	default:
	}
}

// Read returns the queued bytes, then io.EOF or why the stream ended.
func (s *teeStream) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		s.done()
		pc, ok := <-s.ch
		if !ok {
			return 0, s.end()
		}
		s.pc, s.cur = pc, pc.b
		s.took()
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

// done releases the piece read.
func (s *teeStream) done() {
	if s.pc != nil {
		s.pc.release(1)
		s.pc, s.cur = nil, nil
	}
}

// WriteTo writes the queued pieces to w without copying them first.
func (s *teeStream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(s.cur) > 0 {
		n, err := w.Write(s.cur)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	s.done()
	for pc := range s.ch {
		s.took()
		n, err := w.Write(pc.b)
		total += int64(n)
		pc.release(1)
		if err != nil {
			return total, err
		}
	}
	if err := s.end(); err != io.EOF {
		return total, err
	}
	return total, nil
}

func (s *teeStream) end() error {
	if s.err != nil {
		return fmt.Errorf("reading the blob pushed by the leader: %w", s.err)
	}
	return io.EOF
}

// Digest returns the blob's digest once Read has returned io.EOF.
func (s *teeStream) Digest() blobs.Digest { return s.digest }

// ReceiveBlob writes the blob b pushed by voter from into this node's
// store and commits it against the digest b gives at its end: the server
// side of [BlobPusher.PushBlob]. Bytes that do not hash to it are refused
// ([blobs.ErrDigestMismatch]) and leave the store as it was. While it
// runs, fetches of a blob this node lacks wait for it (it may be that
// blob).
func (n *Node) ReceiveBlob(ctx context.Context, from string, b BlobStream) (blobs.Digest, error) {
	if n.cfg.Blobs == nil {
		return "", fmt.Errorf("receiving a blob from %s: coordinator %s has no blob store: give it one (cmd/cohort does, under its state dir): %w", from, n.cfg.ID, ErrInvalid)
	}
	if p, ok := n.peers[raft.ServerID(from)]; !ok || p.ID == n.cfg.ID {
		return "", fmt.Errorf("receiving a blob: %q is not one of this node's peers %s: %w", from, peerList(n.cfg.Peers), ErrInvalid)
	}
	done := n.pushStarted()
	defer done()
	// A follower keeps the model for a failover, not to read it now.
	w, err := n.cfg.Blobs.CreateCold(ctx)
	if err != nil {
		return "", fmt.Errorf("receiving a blob from %s: %w", from, err)
	}
	if _, err := io.Copy(w, b); err != nil {
		_ = w.Abort()
		return "", fmt.Errorf("receiving a blob from %s: %w", from, err)
	}
	want, err := blobs.ParseDigest(string(b.Digest()))
	if err != nil {
		_ = w.Abort()
		return "", fmt.Errorf("receiving a blob from %s: the push ended without a valid digest: %w", from, err)
	}
	d, err := w.Commit(want)
	if err != nil {
		return "", fmt.Errorf("receiving blob %.12s from %s: %w", want, from, err)
	}
	return d, nil
}

// pushStarted counts a push being received until the returned func is
// called.
func (n *Node) pushStarted() func() {
	n.fetchMu.Lock()
	n.pushing++
	if n.pushIdle == nil {
		n.pushIdle = make(chan struct{})
	}
	n.fetchMu.Unlock()
	return func() {
		n.fetchMu.Lock()
		defer n.fetchMu.Unlock()
		n.pushing--
		if n.pushing == 0 {
			close(n.pushIdle)
			n.pushIdle = nil
		}
	}
}

// waitPushes returns once no push is being received, so that a fetch of
// a blob a push is bringing (its seal applied before the push committed)
// does not copy it a second time.
func (n *Node) waitPushes(ctx context.Context) error {
	n.fetchMu.Lock()
	idle := n.pushIdle
	n.fetchMu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the blob pushes being received: %w", ctx.Err())
	}
}
