package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/peer"
)

// RateLimit is a token bucket: Rate calls a second on average, Burst at
// once. The zero value takes the default of the calls it limits; a
// negative Rate turns the limit off.
type RateLimit struct {
	Rate  float64
	Burst int
}

// Default rate limits, per caller: generous enough never to bother a real
// site (which joins once per session) or admin (whose CLI makes a few
// calls per command), tight enough that a flood costs the coordinator
// next to nothing.
var (
	// DefaultJoinLimit bounds each site's Join calls.
	DefaultJoinLimit = RateLimit{Rate: 1, Burst: 10}
	// DefaultAdminLimit bounds each admin's JobsService calls (submit,
	// cancel, list, get, watch, upload weights, cluster status).
	DefaultAdminLimit = RateLimit{Rate: 20, Burst: 50}
)

func (l RateLimit) orDefault(d RateLimit) RateLimit {
	if l.Rate == 0 {
		l.Rate = d.Rate
	}
	if l.Burst <= 0 {
		l.Burst = max(d.Burst, 1)
	}
	return l
}

// String says what the limit allows, for messages: "1/s, burst 10".
func (l RateLimit) String() string {
	if l.Rate < 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%g/s, burst %d", l.Rate, l.Burst)
}

// Bounds of a limiter's table of callers.
const (
	// maxLimiterEntries bounds the callers a limiter tracks. Idle callers
	// (whose bucket is full again) are forgotten first: forgetting them
	// changes nothing. Past the bound, a quarter of the others go.
	maxLimiterEntries = 4096
	// rateWarnEvery is how often a refused caller is logged at most.
	rateWarnEvery = time.Minute
)

// limiter keeps one token bucket per caller for one class of calls.
type limiter struct {
	what  string // the calls, for messages: "Join calls", "admin calls"
	key   string // the config key that sets the limit
	limit RateLimit
	log   *slog.Logger
	now   func() time.Time // time.Now; tests step it

	mu    sync.Mutex
	m     map[string]*bucket
	swept time.Time
}

type bucket struct {
	lim     *rate.Limiter
	last    time.Time // last call
	warned  time.Time // last WARN
	refused int       // calls refused since the last WARN
}

func newLimiter(what, key string, l RateLimit, log *slog.Logger) *limiter {
	return &limiter{what: what, key: key, limit: l, log: log, now: time.Now, m: make(map[string]*bucket)}
}

// refill is how long an idle bucket takes to fill up again: after it, a
// caller's entry is as good as a new one.
func (l *limiter) refill() time.Duration {
	return time.Duration(float64(l.limit.Burst) / l.limit.Rate * float64(time.Second))
}

// allow takes a token from who's bucket. It returns an error wrapping
// [ErrRateLimited] that names the limit, its config key and when to retry
// when the bucket is empty, and logs a warning per caller at most once a
// minute.
func (l *limiter) allow(who string) error {
	if l == nil || l.limit.Rate < 0 {
		return nil
	}
	now := l.now()
	l.mu.Lock()
	b, ok := l.m[who]
	if !ok {
		l.makeRoom(now)
		b = &bucket{lim: rate.NewLimiter(rate.Limit(l.limit.Rate), l.limit.Burst)}
		l.m[who] = b
	}
	b.last = now
	if b.lim.AllowN(now, 1) {
		l.mu.Unlock()
		return nil
	}
	retry := time.Duration((1 - b.lim.TokensAt(now)) / l.limit.Rate * float64(time.Second)).Round(time.Millisecond)
	b.refused++
	warn, refused := now.Sub(b.warned) >= rateWarnEvery, b.refused
	if warn {
		b.warned, b.refused = now, 0
	}
	l.mu.Unlock()
	if warn {
		l.log.Warn("rate_limited", "caller", who, "calls", l.what, "limit", l.limit.String(), "refused", refused, "config_key", l.key)
	}
	return fmt.Errorf("%w: %s from %q are over the coordinator's limit (%s); retry in %s, or raise %s in the coordinator's config",
		ErrRateLimited, l.what, who, l.limit, max(retry, time.Millisecond), l.key)
}

// makeRoom forgets idle callers when the table is full, or once per
// refill period; if it is still full, it forgets a quarter of the
// callers, whichever the map yields first, so that a flood of new names
// costs one scan per thousand. Called with mu held.
func (l *limiter) makeRoom(now time.Time) {
	idle := l.refill()
	if len(l.m) < maxLimiterEntries && now.Sub(l.swept) < max(idle, time.Second) {
		return
	}
	l.swept = now
	for who, b := range l.m {
		if now.Sub(b.last) >= idle && now.Sub(b.warned) >= rateWarnEvery {
			delete(l.m, who)
		}
	}
	if len(l.m) < maxLimiterEntries {
		return
	}
	for who := range l.m {
		if len(l.m) < maxLimiterEntries*3/4 {
			break
		}
		delete(l.m, who)
	}
}

// size returns the number of callers tracked.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// sweep forgets every idle caller now.
func (l *limiter) sweep() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.swept = time.Time{}
	l.makeRoom(l.now())
}

// caller names who makes a call: the CN of its client certificate with
// TLS, else the name it claims (a site's), else its peer's host.
func caller(ctx context.Context, claimed string) string {
	if cn := peerCommonName(ctx); cn != "" {
		return cn
	}
	if claimed != "" {
		return claimed
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		host = p.Addr.String()
	}
	return host
}

// limitAdmin applies the admin rate limit to a JobsService call.
func (c *Coordinator) limitAdmin(ctx context.Context) error {
	return toStatus(c.adminLimit.allow(caller(ctx, "")))
}
