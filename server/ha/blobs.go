package ha

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cohortfl/cohort/server/blobs"
)

// BlobTransport moves blobs between the coordinators' blob stores: the
// transport of models out of the raft log. server.NewBlobClient is the
// gRPC one; tests use one in memory. Its methods are safe for concurrent
// use and honour ctx.
type BlobTransport interface {
	// FetchBlob writes blob d, as peer from holds it, to w. It returns an
	// error wrapping [blobs.ErrNotFound] when from does not hold it.
	FetchBlob(ctx context.Context, from Peer, d blobs.Digest, w io.Writer) error
	// HoldBlob asks peer on to hold blob d of size bytes, fetching it from
	// peer from if it lacks it ([Node.HoldBlob] there), and returns once
	// on holds it.
	HoldBlob(ctx context.Context, on, from Peer, d blobs.Digest, size int64) error
}

// ErrBlobQuorum is returned by [Node.PutModel] when fewer than a quorum
// of voters could hold the model: nothing was committed.
var ErrBlobQuorum = errors.New("too few voters hold the blob")

const (
	defaultBlobCollectInterval = time.Minute
	// fetchAttempts is how many times a node fetching a blob it lacks
	// tries every peer, fetchBackoff apart (doubling).
	fetchAttempts = 3
	fetchBackoff  = 200 * time.Millisecond
	// fetchTimeout bounds one fetch of one blob from one peer.
	fetchTimeout = 10 * time.Minute
)

// putStored writes the model into the blob store, has a quorum hold it
// and commits its digest. The followers a quorum needs besides the leader
// replicate it first: with a [BlobPusher] transport they receive the
// bytes while the leader writes them (a tee, hashed once on the leader by
// its store Writer), else they fetch it once written. The other followers
// (spares) fetch it once the quorum holds it, as soon as one of the first
// fails, or pushStall after the write when the first have not all
// answered, so that the commit waits for a quorum's copies only, not for
// every follower's write on the same disks and links. The first are the
// followers whose replication failed (or held the write up) least
// recently ([Node.rankedFollowers]); a follower whose push fails or
// stalls fetches the blob once it is written.
func (n *Node) putStored(ctx context.Context, write func(io.Writer) error) (string, error) {
	select {
	case n.putSem <- struct{}{}:
		defer func() { <-n.putSem }()
	case <-ctx.Done():
		return "", fmt.Errorf("putting model: %w", ctx.Err())
	}
	if err := n.stoppedErr(); err != nil {
		return "", fmt.Errorf("putting model: %w", err)
	}
	if err := n.ensureCluster(ctx); err != nil {
		return "", fmt.Errorf("putting model: %w", err)
	}
	w, err := n.cfg.Blobs.Create(ctx)
	if err != nil {
		return "", n.storeErr(err)
	}
	out := &putOutcome{done: make(chan struct{}), spares: make(chan struct{}), err: errPutFailed}
	defer out.end()
	defer out.releaseSpares()
	var dst io.Writer = w
	others := n.rankedFollowers()
	need := quorumFollowers(len(others))
	pusher, _ := n.cfg.BlobTransport.(BlobPusher)
	var tee *blobTee
	if pusher != nil && n.cfg.PushBuffer > 0 && need > 0 {
		tee = newBlobTee(w, need, need, n.cfg.PushBuffer)
		tee.stall = n.pushStall
		defer tee.fail(errPutFailed) // no-op once finished
		dst = tee
	}
	results := n.startReplicas(others, need, pusher, tee, out)
	start := time.Now()
	// An encoder's small writes, batched; writes of putBatch and more go
	// through uncopied.
	bw := bufio.NewWriterSize(dst, putBatch)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		_ = w.Abort()
		return "", n.storeErr(err)
	}
	size := w.Written()
	d, err := w.Commit("")
	if err != nil {
		return "", n.storeErr(err)
	}
	if tee != nil {
		tee.finish(d)
		n.noteSlowPushes(others, tee, time.Since(start))
	}
	out.d, out.size, out.err = d, size, nil
	out.end()
	// A first follower that has not answered pushStall after the write (a
	// hung fsync, a link gone quiet, a fetch where no push was made) has
	// the spares stand in.
	hedge := time.AfterFunc(n.pushStall, out.releaseSpares)
	defer hedge.Stop()
	what := "putting model " + string(d)[:12]
	if n.fsm.holdsStored(string(d)) {
		return string(d), nil
	}
	err = n.awaitQuorum(ctx, results, len(others), d)
	out.releaseSpares()
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	c := Command{Type: CmdSealBlob, Digest: string(d), Size: size, Stored: true, From: n.cfg.ID}
	if err := n.propose(ctx, what, c); err != nil {
		return "", err
	}
	return string(d), nil
}

// putBatch is the most bytes of a put's small writes batched into one.
const putBatch = 256 << 10

// errPutFailed ends the pushes of a put whose write failed.
var errPutFailed = errors.New("the leader's write of the model failed")

// putOutcome is what a put's replicas wait for: the blob written (d,
// size) or the write failed (err); and, for the spare followers, that the
// quorum holds it, one of the first failed or the put ended (spares).
type putOutcome struct {
	done       chan struct{}
	once       sync.Once
	spares     chan struct{}
	sparesOnce sync.Once
	d          blobs.Digest
	size       int64
	err        error
}

func (o *putOutcome) end()           { o.once.Do(func() { close(o.done) }) }
func (o *putOutcome) releaseSpares() { o.sparesOnce.Do(func() { close(o.spares) }) }

// quorumFollowers is how many of others followers a quorum needs besides
// the leader.
func quorumFollowers(others int) int { return (others + 1) / 2 }

// storeErr words a failure to write a model into this node's store.
func (n *Node) storeErr(err error) error {
	if errors.Is(err, blobs.ErrNoSpace) {
		return fmt.Errorf("putting model: the disk of the blob store %s is full: free space there, or move the coordinator's state_dir to a larger disk; the round is not committed: %w", n.cfg.Blobs.Dir(), err)
	}
	return fmt.Errorf("putting model: writing it to the blob store %s: %w", n.cfg.Blobs.Dir(), err)
}

// otherPeers returns the voters other than this node.
func (n *Node) otherPeers() []Peer {
	var others []Peer
	for _, p := range n.cfg.Peers {
		if p.ID != n.cfg.ID {
			others = append(others, p)
		}
	}
	return others
}

// rankedFollowers returns the voters other than this node, those whose
// replication of a blob failed (or whose push fell behind or held the
// leader's write up) least recently first, else in the configured order:
// a put pushes to the first ones.
func (n *Node) rankedFollowers() []Peer {
	others := n.otherPeers()
	n.replicaMu.Lock()
	defer n.replicaMu.Unlock()
	sort.SliceStable(others, func(i, j int) bool {
		return n.replicaFailed[others[i].ID].Before(n.replicaFailed[others[j].ID])
	})
	return others
}

// slowPush is the least time the leader's write waited for a pushed
// follower that ranks it behind the others for the next put, when it is
// also a quarter of the write.
const slowPush = time.Second

// errSlowPush ranks a follower whose push held the leader's write up.
var errSlowPush = errors.New("its push held the leader's write up")

// noteSlowPushes ranks behind the others the pushed followers that held
// up the leader's write of wrote for slowPush and a quarter of it: a
// follower that is slow but never fails would otherwise set the pace of
// every put.
func (n *Node) noteSlowPushes(others []Peer, tee *blobTee, wrote time.Duration) {
	for i, s := range tee.streams {
		if s.held >= n.slowPush && s.held >= wrote/4 {
			n.cfg.Logger.Info("a follower's push held the leader's write up; the next model is pushed to another first", "follower", others[i].ID, "held", s.held.Round(time.Millisecond), "write", wrote.Round(time.Millisecond))
			n.replicaFailedNow(others[i].ID, errSlowPush)
		}
	}
}

// replicaFailedNow records that follower id's replication of a blob
// failed, or its push was dropped or held the write up, just now, with
// err; not where the leader's own write failed.
func (n *Node) replicaFailedNow(id string, err error) {
	if errors.Is(err, errPutFailed) {
		return
	}
	n.replicaMu.Lock()
	defer n.replicaMu.Unlock()
	if n.replicaFailed == nil {
		n.replicaFailed = map[string]time.Time{}
	}
	n.replicaFailed[id] = time.Now()
}

// replicaResult is whether one follower holds a put's blob.
type replicaResult struct {
	peer string
	err  error
}

// startReplicas has each of others hold the blob out describes, one
// goroutine each: the first need through their tee streams while the blob
// is written (when tee is set), else, or when that push fails, by
// [BlobTransport.HoldBlob] once it is written; the others by HoldBlob once
// out releases the spares. Each sends its result on the returned channel,
// which has room for all. The goroutines outlive the put (every node
// should hold the blob before its seal entry arrives) but not the node.
func (n *Node) startReplicas(others []Peer, need int, pusher BlobPusher, tee *blobTee, out *putOutcome) <-chan replicaResult {
	results := make(chan replicaResult, len(others))
	if len(others) == 0 {
		return results
	}
	self := n.peers[raft.ServerID(n.cfg.ID)]
	bctx, cancel := n.lifetime()
	var wg sync.WaitGroup
	for i, p := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := n.replicate(bctx, p, self, pusher, tee, i, need, out)
			if err != nil {
				n.replicaFailedNow(p.ID, err)
				if i < need {
					out.releaseSpares() // one may stand in
				}
			}
			results <- replicaResult{p.ID, err}
		}()
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		wg.Wait()
		cancel()
	}()
	return results
}

// replicate has follower p, the put's i-th, hold the put's blob: pushed
// while written (one of the first need), else fetched once written (and,
// for a spare, once out releases the spares).
func (n *Node) replicate(ctx context.Context, p, self Peer, pusher BlobPusher, tee *blobTee, i, need int, out *putOutcome) error {
	if i >= need {
		select {
		case <-out.spares:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the quorum's copies: %w", ctx.Err())
		}
	}
	var pushErr error
	if tee != nil && i < len(tee.streams) {
		s := tee.streams[i]
		pctx, cancel := context.WithTimeout(ctx, fetchTimeout)
		go func() { // a dropped push ends now, even if the follower stalls
			select {
			case <-s.dropped:
				cancel()
			case <-pctx.Done():
			}
		}()
		pushErr = pusher.PushBlob(pctx, p, self, s)
		cancel()
		if pushErr == nil {
			return nil
		}
	}
	select {
	case <-out.done:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the model's write: %w", ctx.Err())
	}
	if out.err != nil {
		return out.err
	}
	if pushErr != nil {
		n.cfg.Logger.Warn("a follower did not receive a blob as it was written; it fetches it", "follower", p.ID, "digest", string(out.d), "error", pushErr)
		n.replicaFailedNow(p.ID, pushErr)
		out.releaseSpares() // a spare may be quicker than this fetch
	}
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	if err := n.cfg.BlobTransport.HoldBlob(fctx, p, self, out.d, out.size); err != nil {
		if pushErr != nil {
			return fmt.Errorf("%w (after its push failed: %v)", err, pushErr)
		}
		return err
	}
	return nil
}

// awaitQuorum returns once a quorum of voters, this node included, holds
// blob d, of the results of the len(others) followers.
func (n *Node) awaitQuorum(ctx context.Context, results <-chan replicaResult, others int, d blobs.Digest) error {
	total := others + 1
	need := quorumFollowers(others)
	if need <= 0 {
		return nil
	}
	select {
	case <-n.closing:
		return fmt.Errorf("asking the followers to hold the model: %w", ErrClosed)
	default:
	}
	var (
		held   int
		failed []string
	)
	for range others {
		select {
		case r := <-results:
			if r.err == nil {
				held++
				if held >= need {
					return nil
				}
				continue
			}
			n.cfg.Logger.Warn("a follower could not fetch a blob", "follower", r.peer, "digest", string(d), "error", r.err)
			failed = append(failed, fmt.Sprintf("%s: %v", r.peer, r.err))
			if others-len(failed) < need {
				sort.Strings(failed)
				return fmt.Errorf("%d of %d voters hold the model, %d needed; followers that could not fetch it from %s: %s (check that they run and reach this coordinator's gRPC address, and have disk space): %w",
					held+1, total, need+1, n.cfg.ID, strings.Join(failed, "; "), ErrBlobQuorum)
			}
		case <-ctx.Done():
			return fmt.Errorf("waiting for a quorum to hold the model: %w", ctx.Err())
		}
	}
	return fmt.Errorf("%d of %d voters hold the model: %w", held+1, total, ErrBlobQuorum)
}

// lifetime returns a context that ends when the node starts closing.
func (n *Node) lifetime() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-n.closing:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

// HoldBlob makes this node hold blob d of size bytes, fetching it from
// peer from (a voter's id) if its store lacks it: the server side of
// [BlobTransport.HoldBlob]. Bytes that do not hash to d are refused
// ([blobs.ErrDigestMismatch]) and leave the store as it was.
func (n *Node) HoldBlob(ctx context.Context, from string, d blobs.Digest, size int64) error {
	if n.cfg.Blobs == nil {
		return fmt.Errorf("holding blob %.12s: coordinator %s has no blob store: give it one (cmd/cohort does, under its state dir): %w", d, n.cfg.ID, ErrInvalid)
	}
	if _, err := blobs.ParseDigest(string(d)); err != nil {
		return fmt.Errorf("holding blob: %w", err)
	}
	if n.cfg.Blobs.Has(d) {
		return nil
	}
	p, ok := n.peers[raft.ServerID(from)]
	if !ok || from == n.cfg.ID {
		return fmt.Errorf("holding blob %.12s: %q is not one of this node's peers %s: %w", d, from, peerList(n.cfg.Peers), ErrInvalid)
	}
	return n.fetchFrom(ctx, p, d, true)
}

// fetchCall is a fetch of one blob in flight.
type fetchCall struct {
	done chan struct{}
	err  error
}

// fetchFrom copies blob d from peer p into the store. A fetch of d
// already in flight (a follower asked to hold it, then applying its seal
// before the first fetch ended) is waited for rather than started again.
func (n *Node) fetchFrom(ctx context.Context, p Peer, d blobs.Digest, cold bool) error {
	if err := n.waitPushes(ctx); err != nil {
		return err
	}
	n.fetchMu.Lock()
	if c, ok := n.fetching[d]; ok {
		n.fetchMu.Unlock()
		select {
		case <-c.done:
			if c.err == nil || n.cfg.Blobs.Has(d) {
				return nil
			}
			return c.err
		case <-ctx.Done():
			return fmt.Errorf("waiting for the fetch of blob %.12s in flight: %w", d, ctx.Err())
		}
	}
	if n.cfg.Blobs.Has(d) { // a push or an earlier fetch brought it
		n.fetchMu.Unlock()
		return nil
	}
	c := &fetchCall{done: make(chan struct{})}
	if n.fetching == nil {
		n.fetching = map[blobs.Digest]*fetchCall{}
	}
	n.fetching[d] = c
	n.fetchMu.Unlock()
	c.err = n.fetchOnce(ctx, p, d, cold)
	n.fetchMu.Lock()
	delete(n.fetching, d)
	n.fetchMu.Unlock()
	close(c.done)
	return c.err
}

// fetchOnce copies blob d from peer p into the store: with
// [blobs.Store.CreateCold] where cold (a replica, not read now).
func (n *Node) fetchOnce(ctx context.Context, p Peer, d blobs.Digest, cold bool) error {
	if n.cfg.BlobTransport == nil {
		return fmt.Errorf("fetching blob %.12s from %s: no blob transport configured", d, p.ID)
	}
	create := n.cfg.Blobs.Create
	if cold {
		create = n.cfg.Blobs.CreateCold
	}
	w, err := create(ctx)
	if err != nil {
		return fmt.Errorf("fetching blob %.12s from %s: %w", d, p.ID, err)
	}
	if err := n.cfg.BlobTransport.FetchBlob(ctx, p, d, w); err != nil {
		_ = w.Abort()
		return fmt.Errorf("fetching blob %.12s from %s: %w", d, p.ID, err)
	}
	if _, err := w.Commit(d); err != nil {
		return fmt.Errorf("fetching blob %.12s from %s: %w", d, p.ID, err)
	}
	return nil
}

// fetchBlob fetches blob d, which the store lacks, from peer from first
// (if set), then from the other peers, fetchAttempts times over with a
// backoff; it gives up early when the node closes. The FSM calls it.
func (n *Node) fetchBlob(d blobs.Digest, size int64, from string, cold bool) error {
	ctx, cancel := n.lifetime()
	defer cancel()
	var order []Peer
	if p, ok := n.peers[raft.ServerID(from)]; ok && from != n.cfg.ID {
		order = append(order, p)
	}
	for _, p := range sortedPeers(n.cfg.Peers) {
		if p.ID != n.cfg.ID && p.ID != from {
			order = append(order, p)
		}
	}
	if len(order) == 0 {
		return fmt.Errorf("fetching blob %.12s: no other voter to fetch it from", d)
	}
	var errs []error
	backoff := fetchBackoff
	for attempt := range fetchAttempts {
		if attempt > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("fetching blob %.12s: %w: %w", d, ErrClosed, errors.Join(errs...))
			}
			backoff *= 2
		}
		notFound := 0
		for _, p := range order {
			fctx, fcancel := context.WithTimeout(ctx, fetchTimeout)
			err := n.fetchFrom(fctx, p, d, cold)
			fcancel()
			if err == nil || n.cfg.Blobs.Has(d) {
				return nil
			}
			if errors.Is(err, blobs.ErrNoSpace) {
				return err
			}
			if errors.Is(err, blobs.ErrNotFound) {
				notFound++
			}
			errs = append(errs, err)
		}
		if notFound == len(order) {
			// Every peer answered and none holds it (a log replayed at
			// start-up sealing a model long since collected): no retry.
			return fmt.Errorf("fetching blob %.12s: no peer holds it: %w", d, errors.Join(errs...))
		}
	}
	if ctx.Err() != nil { // closed during the last attempt
		return fmt.Errorf("fetching blob %.12s: %w: %w", d, ErrClosed, errors.Join(errs...))
	}
	return fmt.Errorf("fetching blob %.12s (%d bytes) from %d peers, %d attempts: %w", d, size, len(order), fetchAttempts, errors.Join(errs...))
}

// CollectBlobs removes from the blob store the blobs the replicated state
// no longer references (the FSM's gc dropped them: no job's last
// committed rounds use them, or they were never committed within the
// grace), once they are older than the store's grace. It returns how many
// it removed and the bytes freed. A node without a store does nothing.
func (n *Node) CollectBlobs(ctx context.Context) (int, int64, error) {
	if n.cfg.Blobs == nil {
		return 0, 0, nil
	}
	removed, freed, err := n.cfg.Blobs.Collect(ctx, n.fsm.keepBlob)
	if err != nil {
		return removed, freed, fmt.Errorf("collecting orphaned blobs in %s: %w", n.cfg.Blobs.Dir(), err)
	}
	return removed, freed, nil
}

// collectLoop runs CollectBlobs every BlobCollectInterval until the node
// closes.
func (n *Node) collectLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.BlobCollectInterval)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		}
		ctx, cancel := n.lifetime()
		removed, freed, err := n.CollectBlobs(ctx)
		cancel()
		switch {
		case err != nil:
			n.cfg.Logger.Warn("collecting orphaned blobs failed", "error", err)
		case removed > 0:
			n.cfg.Logger.Info("collected orphaned blobs", "removed", removed, "freed_bytes", freed)
		}
	}
}

// holdsStored reports whether the state records blob d as sealed in the
// stores.
func (f *FSM) holdsStored(d string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b := f.st.Blobs[d]
	return b != nil && b.Sealed && b.Stored
}
