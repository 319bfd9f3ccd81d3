package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/internal/bulk"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// Defaults of a [Config]'s zero fields.
const (
	DefaultAttemptTimeout = 5 * time.Second
	DefaultBackoffInitial = 250 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
)

// ErrNoLeader is returned by [Find] when it gives up without finding a
// leader: its Config's Patience ran out, or (FailFast) no coordinator
// answered at all. The error wraps each coordinator's answer.
var ErrNoLeader = errors.New("no coordinator leads")

// Config configures a [Dialer].
type Config struct {
	// Targets are the coordinators' host:port addresses, one per node of
	// the cluster (one for a single coordinator). At least one is required.
	Targets []string
	// DialOptions are passed to grpc.NewClient (credentials among them).
	DialOptions []grpc.DialOption
	// AttemptTimeout bounds one probe of one coordinator (default 5 s).
	AttemptTimeout time.Duration
	// BackoffInitial and BackoffMax bound the wait between rounds while no
	// leader is found (defaults 250 ms and 30 s); each wait is jittered
	// over [b/2, b] and b doubles after each wait until [Dialer.Reset].
	BackoffInitial, BackoffMax time.Duration
	// Patience is how long [Find] keeps trying without finding a leader;
	// zero keeps trying until its context ends.
	Patience time.Duration
	// FailFast ends [Find] after a round in which no coordinator answered
	// at all (each unreachable) rather than waiting for one to come up:
	// what a command line wants. A round in which a coordinator answered
	// that it does not lead (an election) is retried until Patience.
	FailFast bool
	// Logger receives the dialer's logs; nil discards them.
	Logger *slog.Logger
	// Sleep waits d or until ctx ends, returning ctx's error then; nil
	// waits on a timer. Tests pass one that records the waits.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Dialer holds one client connection per coordinator of a cluster and
// finds the leader among them with [Find]. Its methods are safe for
// concurrent use. Create it with [New]; Close it when done.
type Dialer struct {
	cfg   Config
	log   *slog.Logger
	conns []*grpc.ClientConn
	index map[string]int // by target

	mu       sync.Mutex
	backoff  time.Duration // the upper bound of the next wait
	unlisted map[string]bool
}

// New returns a Dialer for cfg's targets. It connects lazily: nothing is
// dialled before the first [Find].
func New(cfg Config) (*Dialer, error) {
	var errs []error
	if len(cfg.Targets) == 0 {
		errs = append(errs, errors.New("no coordinator address: list at least one under coordinators:"))
	}
	seen := make(map[string]int, len(cfg.Targets))
	for i, t := range cfg.Targets {
		if t == "" {
			errs = append(errs, fmt.Errorf("coordinator address %d is empty: write it as host:port", i+1))
			continue
		}
		if _, dup := seen[t]; dup {
			errs = append(errs, fmt.Errorf("coordinator address %q is listed twice: list each coordinator once", t))
		}
		seen[t] = i
	}
	if cfg.BackoffInitial < 0 || cfg.BackoffMax < 0 || cfg.AttemptTimeout < 0 || cfg.Patience < 0 {
		errs = append(errs, errors.New("a negative duration in the dialer's config: use 0 for the default"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("configuring the coordinator dialer: %w", err)
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.BackoffInitial == 0 {
		cfg.BackoffInitial = DefaultBackoffInitial
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	cfg.BackoffMax = max(cfg.BackoffMax, cfg.BackoffInitial)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	d := &Dialer{cfg: cfg, log: cfg.Logger, index: seen, backoff: cfg.BackoffInitial}
	for _, t := range cfg.Targets {
		// Model chunks move without protobuf's copies, and messages
		// without gRPC's pings beside them (internal/bulk).
		cc, err := grpc.NewClient(t, append(bulk.DialOptions(), cfg.DialOptions...)...)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("coordinator address %q: %w", t, err)
		}
		d.conns = append(d.conns, cc)
	}
	return d, nil
}

// Close closes the dialer's connections; a connection [Find] returned is
// closed with them.
func (d *Dialer) Close() error {
	var errs []error
	for _, cc := range d.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// Targets returns the coordinators' addresses, as configured.
func (d *Dialer) Targets() []string { return d.cfg.Targets }

// Reset sets the backoff back to its initial value: the caller found the
// leader's connection healthy (a site's session that lasted). [Find]
// itself never resets it, so that a leader that answers and then fails at
// once (NOT_LEADER after an election) does not make its callers spin.
func (d *Dialer) Reset() {
	d.mu.Lock()
	d.backoff = d.cfg.BackoffInitial
	d.mu.Unlock()
}

// Pause waits the next backoff step, jittered over [b/2, b], and doubles b
// up to BackoffMax. It returns ctx's error when ctx ends first.
func (d *Dialer) Pause(ctx context.Context) error {
	d.mu.Lock()
	b := d.backoff
	d.backoff = min(2*b, d.cfg.BackoffMax)
	d.mu.Unlock()
	wait := b/2 + rand.N(b/2+1)
	d.log.Debug("leader_backoff", "wait", wait.Round(time.Millisecond))
	return d.cfg.Sleep(ctx, wait)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Probe asks one coordinator for what its caller needs from the leader (a
// site joins, an admin command lists jobs) and returns the answer; a
// follower refuses with NOT_LEADER. ctx carries the attempt's deadline
// and is cancelled once another coordinator won.
type Probe[T any] func(ctx context.Context, cc *grpc.ClientConn) (T, error)

// Result is the leader [Find] found: its address, the dialer's connection
// to it and its answer to the probe.
type Result[T any] struct {
	Target string
	Conn   *grpc.ClientConn
	Value  T
}

// finalError marks an error that retrying will not cure.
type finalError struct{ err error }

func (e *finalError) Error() string { return e.err.Error() }
func (e *finalError) Unwrap() error { return e.err }

// Final marks a probe's error as one that retrying will not cure (a
// refused certificate, a site already connected elsewhere): [Find]
// returns it at once. Final(nil) is nil.
func Final(err error) error {
	if err == nil {
		return nil
	}
	return &finalError{err}
}

// IsFinal reports whether err, or an error it wraps, was marked [Final].
func IsFinal(err error) bool {
	var f *finalError
	return errors.As(err, &f)
}

// Find asks every coordinator at once with probe and returns the first
// answer: the leader's. A NOT_LEADER refusal that names a listed
// coordinator whose probe already failed this round probes that one again
// at once (once a round). When every probe failed it waits a backoff step
// ([Dialer.Pause]) and tries again, until ctx ends, a probe's error is
// [Final], or the Config's Patience or FailFast gives up ([ErrNoLeader]).
// Probes still running when one wins are cancelled.
func Find[T any](ctx context.Context, d *Dialer, probe Probe[T]) (Result[T], error) {
	start := time.Now()
	for {
		res, answered, err := round(ctx, d, probe)
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("finding the leader: %w", ctx.Err())
		}
		if IsFinal(err) {
			return res, err
		}
		if (d.cfg.FailFast && !answered) || (d.cfg.Patience > 0 && time.Since(start) >= d.cfg.Patience) {
			return res, fmt.Errorf("%w: %w", ErrNoLeader, err)
		}
		// Warn: a site whose kit the coordinators refuse says why here.
		d.log.Warn("no_leader_yet", "err", err)
		if perr := d.Pause(ctx); perr != nil {
			return res, fmt.Errorf("finding the leader: %w (last answers: %w)", perr, err)
		}
	}
}

type outcome[T any] struct {
	i   int
	v   T
	err error
}

// round probes every target once (a hinted leader twice) and returns the
// first success; answered says whether any coordinator answered at all,
// rather than being unreachable.
func round[T any](ctx context.Context, d *Dialer, probe Probe[T]) (Result[T], bool, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := len(d.conns)
	out := make(chan outcome[T], 2*n) // at most two probes a target: never blocks
	probes := make([]int, n)
	running := make([]bool, n)
	inflight := 0
	start := func(i int) {
		probes[i]++
		running[i] = true
		inflight++
		cc := d.conns[i]
		if cc.GetState() == connectivity.TransientFailure {
			cc.ResetConnectBackoff() // our backoff paces the retries, not grpc's
		}
		go func() {
			pctx, pcancel := context.WithTimeout(rctx, d.cfg.AttemptTimeout)
			v, err := probe(pctx, cc)
			pcancel()
			out <- outcome[T]{i: i, v: v, err: err}
		}()
	}
	for i := range n {
		start(i)
	}
	var errs []error
	answered := false
	for inflight > 0 {
		o := <-out
		inflight--
		running[o.i] = false
		target := d.cfg.Targets[o.i]
		if o.err == nil {
			return Result[T]{Target: target, Conn: d.conns[o.i], Value: o.v}, true, nil
		}
		err := fmt.Errorf("%s: %w", target, o.err)
		if IsFinal(o.err) {
			return Result[T]{Target: target}, true, err
		}
		errs = append(errs, err)
		addr, notLeader := pb.NotLeader(o.err)
		answered = answered || notLeader || reached(o.err)
		if !notLeader || addr == "" {
			continue
		}
		k, listed := d.index[addr]
		switch {
		case !listed:
			d.warnUnlisted(addr)
		case k != o.i && !running[k] && probes[k] < 2:
			d.log.Debug("leader_hint", "from", target, "leader", addr)
			start(k)
		}
	}
	return Result[T]{}, answered, errors.Join(errs...)
}

// reached reports whether err came from a coordinator that answered, not
// from one that could not be reached.
func reached(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return false
	}
	return true
}

func (d *Dialer) warnUnlisted(addr string) {
	d.mu.Lock()
	seen := d.unlisted[addr]
	if d.unlisted == nil {
		d.unlisted = make(map[string]bool)
	}
	d.unlisted[addr] = true
	d.mu.Unlock()
	if !seen {
		d.log.Warn("leader_not_listed", "leader", addr, "fix", "add the leader's address to coordinators: in this config")
	}
}

// Electing reports whether err (from [Find]) holds a coordinator's
// NOT_LEADER answer: the cluster is up but has no leader, or had none
// when asked (an election).
func Electing(err error) bool {
	return anyError(err, func(e error) bool {
		_, ok := pb.NotLeader(e)
		return ok
	})
}

// anyError reports whether f holds for err or an error it wraps, through
// errors.Join's lists too.
func anyError(err error, f func(error) bool) bool {
	if err == nil {
		return false
	}
	if f(err) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return anyError(u.Unwrap(), f)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if anyError(e, f) {
				return true
			}
		}
	}
	return false
}
