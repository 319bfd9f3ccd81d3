package mlflowclient

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// placeholderPrefix starts the run and experiment IDs handed out while
// the server could not be reached; MLflow's own IDs are 32 hex digits
// (runs) and decimal numbers (experiments).
const placeholderPrefix = "cohort-pending-"

// TagCreateKey is the run tag that makes run creation idempotent: every
// CreateRun sets it to a random 128-bit hex key, made once per logical
// create and kept with a spooled create. Before a create whose answer was
// lost is sent again, the client searches the experiment for a run with
// that key (run_view_type ALL) and adopts it instead, so a retry never
// leaves a duplicate run.
const TagCreateKey = "cohort.create_key"

// maxDroppedKept bounds the refused writes Flush reports one by one.
const maxDroppedKept = 100

// Client logs runs into an MLflow tracking server. It is safe for
// concurrent use.
//
// Writes (LogBatch, UpdateRun, LogInputs, LogArtifact) are checked against
// MLflow's limits, appended to the spool (fsync'd) and return; [Client.Run]
// or [Client.Flush] sends them in the order they were made, merging
// consecutive metric batches of one run into one log-batch where MLflow's
// limits allow. A write the server refuses (a 4xx other than 401, 403, 408
// and 429) is logged, dropped and returned by the next Flush; one it
// cannot take now (no answer, 408, 429, 5xx, 401/403) stays spooled and is
// retried, so nothing is lost while the server is away. Within a process
// each write reaches the server once; after a crash between a send and its
// record in the spool, that one write is sent again.
//
// CreateRun asks the server directly (bounded by Config.CreateTimeout);
// while the server is unreachable it hands out a placeholder run ID and
// spools the creation, and every later write or read naming the
// placeholder goes to the run the server created.
//
// Each run is created with a random [TagCreateKey] tag; a create whose
// answer was lost (a timeout, a dropped connection, a 5xx) is looked up by
// that key before it is sent again, so retries and replays after a
// restart leave exactly one run.
//
// EnsureExperiment, like CreateRun, asks the server directly and, while it
// cannot be reached, hands out a placeholder experiment ID and spools the
// get-or-create.
//
// Reads (GetRun, ChildRuns, GetMetricHistory) flush first, then ask the
// server, so they see every earlier write; they wait for the server until
// their ctx ends.
type Client struct {
	cfg   Config
	log   *slog.Logger
	sleep func(ctx context.Context, d time.Duration) error

	kick      chan struct{}
	drainSem  chan struct{} // one drainer at a time, so ops go out in order; a channel, so waiting for it heeds ctx
	unhealthy atomic.Bool

	mu           sync.Mutex
	sp           *spool
	queue        []entry // pending ops, in order
	closed       bool
	dropped      []error // refused writes since the last Flush
	droppedMore  int
	droppedTotal int
	artifactURIs map[string]string // server run ID → artifact URI
	pendingExps  map[string]string // experiment name → placeholder ID, while its get-or-create is spooled
	corruptBytes int64
}

// New opens the spool (replaying what an earlier process left in it) and
// returns a client; it makes no request. Start [Client.Run] to send
// spooled writes in the background.
func New(cfg Config) (*Client, error) {
	return newClient(cfg, os.Getenv)
}

// newClient is New with the environment given.
func newClient(cfg Config, getenv func(string) string) (*Client, error) {
	cfg, err := cfg.resolve(getenv)
	if err != nil {
		return nil, err
	}
	sp, rec, err := openSpool(cfg.SpoolDir, cfg.SpoolMaxBytes, cfg.SegmentBytes, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("mlflow client: %w", err)
	}
	c := &Client{
		cfg: cfg, log: cfg.Logger, sleep: sleepCtx,
		kick: make(chan struct{}, 1), drainSem: make(chan struct{}, 1), sp: sp, queue: rec.pending,
		artifactURIs: map[string]string{}, pendingExps: map[string]string{}, corruptBytes: rec.corruptBytes,
	}
	for _, p := range rec.problems {
		c.log.Error("mlflow_spool_corrupt", "dir", cfg.SpoolDir, "err", p)
	}
	if len(rec.pending) > 0 {
		c.log.Info("mlflow_spool_replay", "dir", cfg.SpoolDir, "pending", len(rec.pending))
		c.wake()
	}
	return c, nil
}

// SpoolStats describes the spool, for monitoring and tests.
type SpoolStats struct {
	Pending      int   // writes not yet sent
	Bytes        int64 // on disk
	Refused      int   // writes the server refused since New (each reported, then dropped)
	CorruptBytes int64 // bytes of torn or corrupt records New found and cut off
	Unreachable  bool  // the last attempt to send failed for want of the server
}

// Stats returns the state of the spool.
func (c *Client) Stats() SpoolStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := SpoolStats{Pending: len(c.queue), Refused: c.droppedTotal, CorruptBytes: c.corruptBytes, Unreachable: c.unhealthy.Load()}
	if c.sp != nil {
		s.Bytes = c.sp.size
	}
	return s
}

// Close closes the spool. What was not sent stays on disk for the next
// process with the same SpoolDir; call Flush (or cancel Run and let it
// return) first to send it now. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if err := c.sp.close(); err != nil {
		return fmt.Errorf("closing mlflow spool: %w", err)
	}
	return nil
}

func (c *Client) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// spoolOps appends ops to the spool, in order.
func (c *Client) spoolOps(ops ...*op) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	for _, o := range ops {
		e, err := c.sp.appendOp(o)
		if err != nil {
			return err
		}
		c.queue = append(c.queue, e)
	}
	c.wake()
	return nil
}

func isPlaceholder(id string) bool { return strings.HasPrefix(id, placeholderPrefix) }

func newPlaceholder() string { return placeholderPrefix + randomKey() }

// randomKey returns 128 random bits in hex.
func randomKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// resolve returns the server's run or experiment ID for id, which may be
// a placeholder.
func (c *Client) resolve(id string) (string, error) {
	if !isPlaceholder(id) {
		return id, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.sp.maps[id]
	switch {
	case !ok:
		return "", fmt.Errorf("%w: %s has not been created on the server yet (the server was unreachable when it was made); Flush first", tracking.ErrNotFound, id)
	case m.Failed != "":
		return "", fmt.Errorf("%w: %s: %s", ErrPlaceholder, id, m.Failed)
	}
	return m.RunID, nil
}

// ResolveID returns the server's ID for a run or experiment ID this
// client handed out: a placeholder is resolved after flushing the spool
// (waiting for the server until ctx ends); any other ID is returned as it
// is. A caller that keeps IDs beyond this process (a job's saved state)
// should keep the resolved ones: a later process resolves only the
// placeholders its spool still names.
func (c *Client) ResolveID(ctx context.Context, id string) (string, error) {
	if !isPlaceholder(id) {
		return id, nil
	}
	if err := c.flushForRead(ctx); err != nil {
		return "", fmt.Errorf("resolving %s: %w", id, err)
	}
	real, err := c.resolve(id)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", id, err)
	}
	return real, nil
}

// EnsureExperiment returns the ID of the experiment with the given name,
// creating it when there is none (another client creating it at the same
// time is fine). A deleted experiment of that name is
// [tracking.ErrExperimentDeleted].
//
// It asks the server directly, bounded by Config.CreateTimeout. When the
// server cannot be reached it returns a placeholder experiment ID
// ("cohort-pending-…") at once and spools the get-or-create: runs created
// in the placeholder are spooled behind it and land in the experiment the
// server resolves the name to, so no duplicate experiment is made. Until
// then, calls for the same name return the same placeholder.
func (c *Client) EnsureExperiment(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("ensuring experiment: %w: the name is empty", tracking.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("ensuring experiment %q: %w", name, err)
	}
	c.mu.Lock()
	if id, ok := c.pendingExps[name]; ok {
		c.mu.Unlock()
		return id, nil
	}
	c.mu.Unlock()
	if !c.unhealthy.Load() {
		dctx, cancel := context.WithTimeout(ctx, c.cfg.CreateTimeout)
		id, err := c.ensureExperiment(dctx, name)
		cancel()
		switch {
		case err == nil:
			return id, nil
		case ctx.Err() != nil, !keepSpooled(err), certError(err):
			return "", err
		}
		c.unhealthy.Store(true)
		c.log.Warn("mlflow_unreachable", "op", "ensure_experiment", "err", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.pendingExps[name]; ok {
		return id, nil
	}
	if c.closed {
		return "", fmt.Errorf("ensuring experiment %q: %w", name, ErrClosed)
	}
	id := newPlaceholder()
	e, err := c.sp.appendOp(&op{Kind: opExperiment, RunID: id, Name: name})
	if err != nil {
		return "", fmt.Errorf("ensuring experiment %q: %w", name, err)
	}
	c.queue = append(c.queue, e)
	c.pendingExps[name] = id
	c.wake()
	c.log.Info("mlflow_experiment_placeholder", "experiment", id, "name", name)
	return id, nil
}

// ensureExperiment gets or creates the experiment on the server.
func (c *Client) ensureExperiment(ctx context.Context, name string) (string, error) {
	for range 2 {
		var got mlflowwire.ExperimentResponse
		err := c.call(ctx, "GET", "experiments/get-by-name", url.Values{"experiment_name": {name}}, nil, &got)
		switch {
		case err == nil && got.Experiment.LifecycleStage == string(tracking.LifecycleDeleted):
			return "", fmt.Errorf("ensuring experiment %q: %w; restore it (experiment %s) or pick another name", name, tracking.ErrExperimentDeleted, got.Experiment.ExperimentID)
		case err == nil:
			c.checkLocation(got.Experiment)
			return got.Experiment.ExperimentID, nil
		case !errors.Is(err, tracking.ErrNotFound):
			return "", fmt.Errorf("ensuring experiment %q: %w", name, err)
		}
		// No artifact_location: the server picks it, mlflow-artifacts:/<id>
		// when it proxies artifacts (mlflow server --serve-artifacts).
		var created mlflowwire.CreateExperimentResponse
		err = c.call(ctx, "POST", "experiments/create", nil, mlflowwire.CreateExperiment{Name: name}, &created)
		if err == nil {
			// Once, best effort: say so when the server chose a location
			// it does not proxy.
			if c.callRetries(ctx, 0, "GET", "experiments/get-by-name", url.Values{"experiment_name": {name}}, nil, &got) == nil &&
				got.Experiment.ExperimentID == created.ExperimentID {
				c.checkLocation(got.Experiment)
			}
			return created.ExperimentID, nil
		}
		if !errors.Is(err, tracking.ErrAlreadyExists) {
			return "", fmt.Errorf("ensuring experiment %q: %w", name, err)
		}
	}
	return "", fmt.Errorf("ensuring experiment %q: it keeps being created and deleted concurrently", name)
}

// checkLocation warns when an experiment's artifact location is one the
// server does not proxy (file://, s3://, …): LogArtifact to its runs will
// fail with ErrNoArtifactProxy. MLflow gives mlflow-artifacts:/<id> to
// experiments created on `mlflow server --serve-artifacts` (the default)
// unless --default-artifact-root names another location.
func (c *Client) checkLocation(e mlflowwire.Experiment) {
	loc := e.ArtifactLocation
	if loc == "" || strings.HasPrefix(loc, "mlflow-artifacts:") || strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://") {
		return
	}
	c.log.Warn("mlflow_experiment_not_proxied", "experiment", e.ExperimentID, "name", e.Name, "artifact_location", loc,
		"fix", "artifacts cannot be uploaded through the server: run `mlflow server --serve-artifacts` without a --default-artifact-root outside the proxy, or use an experiment whose location is mlflow-artifacts:/…")
}

// CreateRun starts a run. When the server answers within
// Config.CreateTimeout, the run has the server's ID. When it cannot be
// reached (or a parent run is itself still waiting to be created), the
// run gets a placeholder ID ("cohort-pending-…") at once and its creation
// is spooled: later writes naming the placeholder go to the server's run
// once it exists, and reads accept the placeholder. A request the server
// refuses is an error, as in the embedded store.
func (c *Client) CreateRun(ctx context.Context, req tracking.CreateRun) (tracking.Run, error) {
	if req.ExperimentID == "" {
		req.ExperimentID = tracking.DefaultExperimentID
	}
	what := fmt.Sprintf("creating run in experiment %s", req.ExperimentID)
	if err := ctx.Err(); err != nil {
		return tracking.Run{}, fmt.Errorf("%s: %w", what, err)
	}
	tags := make(map[string]string, len(req.Tags)+4)
	maps.Copy(tags, req.Tags)
	if tags[TagCreateKey] == "" {
		tags[TagCreateKey] = randomKey()
	}
	for _, kv := range []struct{ key, value, field string }{
		{tracking.TagRunName, req.Name, "Name"}, {tracking.TagParentRunID, req.ParentRunID, "ParentRunID"}, {tracking.TagUser, req.UserID, "UserID"},
	} {
		if kv.value == "" {
			continue
		}
		if old, ok := tags[kv.key]; ok && old != kv.value {
			return tracking.Run{}, fmt.Errorf("%s: %w: %s %q and tag %s %q disagree; set one of them", what, tracking.ErrInvalid, kv.field, kv.value, kv.key, old)
		}
		tags[kv.key] = kv.value
	}
	keys := slices.Sorted(maps.Keys(tags))
	wreq := &mlflowwire.CreateRun{ExperimentID: req.ExperimentID, UserID: tags[tracking.TagUser], RunName: tags[tracking.TagRunName]}
	var sorted []tracking.Tag
	for _, k := range keys {
		t := tracking.Tag{Key: k, Value: tags[k]}
		if err := validateTag(t); err != nil {
			return tracking.Run{}, fmt.Errorf("%s: %w", what, err)
		}
		sorted = append(sorted, t)
		wreq.Tags = append(wreq.Tags, mlflowwire.KeyValue{Key: k, Value: t.Value})
	}
	start := req.StartTime
	if start.IsZero() {
		start = time.Now()
	}
	wreq.StartTime = mlflowwire.NewInt64(start.UnixMilli())

	parent := tags[tracking.TagParentRunID]
	direct := !c.unhealthy.Load()
	for _, id := range []string{parent, req.ExperimentID} {
		if isPlaceholder(id) {
			if _, err := c.resolve(id); err != nil {
				direct = false
			}
		}
	}
	if direct {
		run, err := c.createRun(ctx, wreq, c.cfg.CreateTimeout, false)
		switch {
		case err == nil:
			return run, nil
		case ctx.Err() != nil:
			return tracking.Run{}, fmt.Errorf("%s: %w", what, err)
		case !keepSpooled(err):
			return tracking.Run{}, fmt.Errorf("%s: %w", what, err)
		}
		c.unhealthy.Store(true)
		c.log.Warn("mlflow_unreachable", "op", "create_run", "err", err)
	}
	id := newPlaceholder()
	if err := c.spoolOps(&op{Kind: opCreate, RunID: id, Create: wreq}); err != nil {
		return tracking.Run{}, fmt.Errorf("%s: %w", what, err)
	}
	c.log.Info("mlflow_run_placeholder", "run", id, "name", wreq.RunName)
	return tracking.Run{
		Info: tracking.RunInfo{
			RunID: id, RunName: wreq.RunName, ExperimentID: req.ExperimentID, UserID: wreq.UserID,
			Status: tracking.StatusRunning, StartTime: time.UnixMilli(int64(*wreq.StartTime)).UTC(), LifecycleStage: tracking.LifecycleActive,
		},
		Data: tracking.RunData{Tags: sorted},
	}, nil
}

// createRun sends runs/create, with the experiment and parent IDs
// resolved, retrying as configured. Before each retry, and before the
// first attempt when lookupFirst (a spooled create, which an earlier
// attempt or process may have sent), it looks the create key up, so a
// create the server applied but whose answer was lost is not made twice.
func (c *Client) createRun(ctx context.Context, req *mlflowwire.CreateRun, timeout time.Duration, lookupFirst bool) (tracking.Run, error) {
	r := *req
	var err error
	if r.ExperimentID, err = c.resolve(req.ExperimentID); err != nil {
		return tracking.Run{}, err
	}
	r.Tags = slices.Clone(req.Tags)
	key := ""
	for i, t := range r.Tags {
		switch t.Key {
		case tracking.TagParentRunID:
			id, err := c.resolve(t.Value)
			if err != nil {
				return tracking.Run{}, err
			}
			r.Tags[i].Value = id
		case TagCreateKey:
			key = t.Value
		}
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var run tracking.Run
	err = c.createOnce(ctx, "runs/create", lookupFirst && key != "",
		func() (bool, error) {
			if key == "" {
				return false, nil
			}
			got, found, ferr := c.findCreated(ctx, r.ExperimentID, key)
			if found {
				run = got
			}
			return found, ferr
		},
		func() (err error) {
			run, err = c.sendCreate(ctx, &r)
			return err
		})
	if err != nil {
		return tracking.Run{}, err
	}
	c.mu.Lock()
	c.artifactURIs[run.Info.RunID] = run.Info.ArtifactURI
	c.mu.Unlock()
	return run, nil
}

// createOnce makes a create that must not be made twice, retrying
// transient failures as configured. Before each retry, and before the
// first attempt when lookupFirst (an earlier attempt or process may have
// sent it), it asks find whether an earlier attempt landed; find
// answering true ends it. A server that refuses the lookup (a 4xx) gets
// the create without it.
func (c *Client) createOnce(ctx context.Context, endpoint string, lookupFirst bool, find func() (bool, error), create func() error) error {
	maySent := lookupFirst
	var err error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			wait := c.backoff(attempt)
			var ae *APIError
			if errors.As(err, &ae) && ae.retryAfter >= 0 {
				wait = ae.retryAfter
			}
			if serr := c.sleep(ctx, wait); serr != nil {
				return fmt.Errorf("%w (%w)", err, serr)
			}
		}
		found := false
		err = nil
		if maySent {
			found, err = find()
			if err != nil && !transient(err) && ctx.Err() == nil {
				c.log.Warn("mlflow_create_lookup_refused", "endpoint", endpoint, "err", err)
				err = nil
			}
		}
		if err == nil && !found {
			err = create()
			maySent = true
		}
		if err == nil {
			return nil
		}
		if !transient(err) || ctx.Err() != nil || attempt >= c.cfg.MaxRetries {
			if attempt > 0 {
				err = fmt.Errorf("%w (gave up after %d attempts)", err, attempt+1)
			}
			return err
		}
		c.log.Debug("mlflow_retry", "endpoint", endpoint, "attempt", attempt+1, "err", err)
	}
}

// sendCreate makes one runs/create request.
func (c *Client) sendCreate(ctx context.Context, r *mlflowwire.CreateRun) (tracking.Run, error) {
	var got mlflowwire.RunResponse
	if err := c.callRetries(ctx, 0, "POST", "runs/create", nil, r, &got); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && strings.Contains(ae.Message, "must be in the 'active' state") {
			return tracking.Run{}, fmt.Errorf("%w: %w", tracking.ErrExperimentDeleted, err)
		}
		return tracking.Run{}, err
	}
	run := got.Run.ToTracking()
	if run.Info.RunID == "" {
		return tracking.Run{}, fmt.Errorf("mlflow POST runs/create: the response holds no run ID")
	}
	return run, nil
}

// findCreated looks for the run an earlier runs/create with this create
// key made (one request; deleted runs too).
func (c *Client) findCreated(ctx context.Context, experimentID, key string) (tracking.Run, bool, error) {
	req := mlflowwire.SearchRuns{
		ExperimentIDs: []string{experimentID},
		Filter:        fmt.Sprintf("tags.%s = '%s'", TagCreateKey, key),
		RunViewType:   mlflowwire.ViewAll,
		MaxResults:    mlflowwire.NewInt64(10),
	}
	var got mlflowwire.SearchRunsResponse
	if err := c.callRetries(ctx, 0, "POST", "runs/search", nil, &req, &got); err != nil {
		return tracking.Run{}, false, err
	}
	var runs []tracking.Run
	for _, w := range got.Runs {
		if run := w.ToTracking(); run.Info.RunID != "" {
			if v, _ := run.Data.Tag(TagCreateKey); v == key {
				runs = append(runs, run)
			}
		}
	}
	if len(runs) == 0 {
		return tracking.Run{}, false, nil
	}
	// Two would be duplicates made before the key was checked: take the oldest.
	slices.SortFunc(runs, func(a, b tracking.Run) int {
		return cmp.Or(a.Info.StartTime.Compare(b.Info.StartTime), cmp.Compare(a.Info.RunID, b.Info.RunID))
	})
	c.log.Info("mlflow_create_found", "run", runs[0].Info.RunID, "key", key)
	return runs[0], true, nil
}

// UpdateRun changes a run's status, end time and name; the zero value of
// each leaves it unchanged. It is spooled.
func (c *Client) UpdateRun(ctx context.Context, runID string, status tracking.RunStatus, end time.Time, name string) error {
	what := fmt.Sprintf("updating run %s", runID)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if status != "" {
		if err := status.Check(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if name != "" {
		if err := validateTag(tracking.Tag{Key: tracking.TagRunName, Value: name}); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if status == "" && end.IsZero() && name == "" {
		return nil
	}
	u := &mlflowwire.UpdateRun{RunRef: mlflowwire.RunRef{RunID: runID}, Status: string(status), RunName: name}
	if !end.IsZero() {
		u.EndTime = mlflowwire.NewInt64(end.UnixMilli())
	}
	if err := c.spoolOps(&op{Kind: opUpdate, RunID: runID, Update: u}); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// LogBatch logs metrics, params and tags to a run. Each entity is checked
// against MLflow's limits at once; the batch is then spooled as requests
// of at most 1000 metrics, 100 params and 100 tags (1000 entities in
// all), sent in order. NaN and ±Inf values are sent as MLflow sends them.
func (c *Client) LogBatch(ctx context.Context, runID string, metrics []tracking.Metric, params []tracking.Param, tags []tracking.Tag) error {
	what := fmt.Sprintf("logging to run %s", runID)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	ops, err := batchOps(tracking.RunBatch{RunID: runID, Metrics: metrics, Params: params, Tags: tags})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(ops) == 0 {
		return nil
	}
	if err := c.spoolOps(ops...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// LogBatches logs several batches, each to its run, as [Client.LogBatch]
// logs one (and its inputs as [Client.LogInputs]): every batch is checked first, and one that fails (named by
// index and run) spools nothing; then all are spooled, in order. MLflow
// has no multi-run call, so the server receives one request (or more) per
// batch, and a server that refuses one does not undo the others.
func (c *Client) LogBatches(ctx context.Context, batches []tracking.RunBatch) error {
	what := fmt.Sprintf("logging %d batches", len(batches))
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var ops []*op
	for i, b := range batches {
		bops, err := batchOps(b)
		var in *op
		if err == nil {
			in, err = inputsOp(b.RunID, b.Inputs)
		}
		if err != nil {
			return fmt.Errorf("%s: batch %d, to run %s: %w", what, i, b.RunID, err)
		}
		ops = append(ops, bops...)
		if in != nil {
			ops = append(ops, in)
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if err := c.spoolOps(ops...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// batchOps checks a batch and splits it into the requests that log it.
func batchOps(b tracking.RunBatch) ([]*op, error) {
	if b.RunID == "" {
		return nil, fmt.Errorf("%w: the run ID is empty", tracking.ErrInvalid)
	}
	if err := validateEntities(b.Metrics, b.Params, b.Tags); err != nil {
		return nil, err
	}
	wm := make([]mlflowwire.Metric, len(b.Metrics))
	for i, m := range b.Metrics {
		wm[i] = mlflowwire.FromMetric(m)
	}
	wp := make([]mlflowwire.KeyValue, len(b.Params))
	for i, p := range b.Params {
		wp[i] = mlflowwire.KeyValue{Key: p.Key, Value: p.Value}
	}
	wt := make([]mlflowwire.KeyValue, len(b.Tags))
	for i, t := range b.Tags {
		wt[i] = mlflowwire.KeyValue{Key: t.Key, Value: t.Value}
	}
	var ops []*op
	for _, r := range splitBatch(wm, wp, wt) {
		r.RunID = b.RunID
		ops = append(ops, &op{Kind: opBatch, RunID: b.RunID, Batch: &r})
	}
	return ops, nil
}

// LogInputs records the datasets a run used (runs/log-inputs). It is
// spooled.
func (c *Client) LogInputs(ctx context.Context, runID string, inputs []tracking.DatasetInput) error {
	what := fmt.Sprintf("logging inputs of run %s", runID)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	o, err := inputsOp(runID, inputs)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if o == nil {
		return nil
	}
	if err := c.spoolOps(o); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// inputsOp checks inputs and makes the request that logs them; nil for
// none.
func inputsOp(runID string, inputs []tracking.DatasetInput) (*op, error) {
	if err := validateInputs(inputs); err != nil {
		return nil, err
	}
	if len(inputs) == 0 {
		return nil, nil
	}
	req := &mlflowwire.LogInputs{RunRef: mlflowwire.RunRef{RunID: runID}}
	for _, in := range inputs {
		d := in.Dataset
		w := mlflowwire.DatasetInput{Dataset: mlflowwire.Dataset{Name: d.Name, Digest: d.Digest, SourceType: d.SourceType, Source: d.Source, Schema: d.Schema, Profile: d.Profile}}
		for _, t := range in.Tags {
			w.Tags = append(w.Tags, mlflowwire.KeyValue{Key: t.Key, Value: t.Value})
		}
		req.Datasets = append(req.Datasets, w)
	}
	return &op{Kind: opInputs, RunID: runID, Inputs: req}, nil
}

// LogArtifact stores what r holds as the artifact relPath of a run,
// through the server's artifact proxy (mlflow-artifacts). It reads r at
// once and spools the content (meant for reports and plots: the content
// is held in memory and counts against SpoolMaxBytes); a run whose artifact URI is known not to be
// proxied is [ErrNoArtifactProxy] at once, otherwise when it is sent.
func (c *Client) LogArtifact(ctx context.Context, runID, relPath string, r io.Reader) error {
	what := fmt.Sprintf("logging artifact %q of run %s", relPath, runID)
	rel, err := cleanArtifactPath(relPath)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("%s: reading it: %w", what, err)
	}
	c.mu.Lock()
	uri, known := c.artifactURIs[runID]
	c.mu.Unlock()
	if known {
		if _, ok := proxiedPath(uri); !ok {
			return fmt.Errorf("%s: artifact URI %s: %w", what, uri, ErrNoArtifactProxy)
		}
	}
	if err := c.spoolOps(&op{Kind: opArtifact, RunID: runID, Path: rel, Artifact: buf.Bytes()}); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// proxiedPath returns the path under the artifact proxy of an
// mlflow-artifacts:/… URI.
func proxiedPath(uri string) (string, bool) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "mlflow-artifacts" {
		return "", false
	}
	return strings.Trim(u.Path, "/"), true
}

// escapePath escapes each segment of a slash-separated path.
func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// Reads. They first flush the spool, so they see every write made before
// them (read-your-writes, as with the embedded store), then ask the
// server; while the server is unreachable they wait, until ctx ends.

// GetRun returns a run with its latest metrics, params and tags. runID
// may be a placeholder CreateRun handed out.
func (c *Client) GetRun(ctx context.Context, runID string) (tracking.Run, error) {
	if err := c.flushForRead(ctx); err != nil {
		return tracking.Run{}, fmt.Errorf("getting run %s: %w", runID, err)
	}
	run, err := c.getRun(ctx, runID)
	if err != nil {
		return tracking.Run{}, fmt.Errorf("getting run %s: %w", runID, err)
	}
	return run, nil
}

func (c *Client) getRun(ctx context.Context, runID string) (tracking.Run, error) {
	id, err := c.resolve(runID)
	if err != nil {
		return tracking.Run{}, err
	}
	var got mlflowwire.RunResponse
	if err := c.call(ctx, "GET", "runs/get", url.Values{"run_id": {id}}, nil, &got); err != nil {
		return tracking.Run{}, err
	}
	run := got.Run.ToTracking()
	c.mu.Lock()
	c.artifactURIs[run.Info.RunID] = run.Info.ArtifactURI
	c.mu.Unlock()
	return run, nil
}

// ChildRuns returns every active run nested directly under parentRunID
// (runs/search on tags.mlflow.parentRunId), oldest first (by start time,
// then name, then ID), as the embedded store orders them.
func (c *Client) ChildRuns(ctx context.Context, parentRunID string) ([]tracking.Run, error) {
	what := fmt.Sprintf("listing child runs of %s", parentRunID)
	if err := c.flushForRead(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	parent, err := c.getRun(ctx, parentRunID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	req := mlflowwire.SearchRuns{
		ExperimentIDs: []string{parent.Info.ExperimentID},
		Filter:        fmt.Sprintf("tags.%s = '%s'", tracking.TagParentRunID, strings.ReplaceAll(parent.Info.RunID, "'", "\\'")),
		RunViewType:   mlflowwire.ViewActiveOnly,
		MaxResults:    mlflowwire.NewInt64(tracking.DefaultSearchResults),
	}
	var all []tracking.Run
	for {
		var got mlflowwire.SearchRunsResponse
		if err := c.call(ctx, "POST", "runs/search", nil, &req, &got); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		for _, r := range got.Runs {
			all = append(all, r.ToTracking())
		}
		if got.NextPageToken == "" || got.NextPageToken == req.PageToken {
			break
		}
		req.PageToken = got.NextPageToken
	}
	slices.SortStableFunc(all, func(a, b tracking.Run) int {
		return cmp.Or(a.Info.StartTime.Compare(b.Info.StartTime), cmp.Compare(a.Info.RunName, b.Info.RunName), cmp.Compare(a.Info.RunID, b.Info.RunID))
	})
	return all, nil
}

// historyPage is the page size of GetMetricHistory.
const historyPage = 25000

// GetMetricHistory returns every point logged under key in a run, by step
// then timestamp (metrics/get-history, every page).
func (c *Client) GetMetricHistory(ctx context.Context, runID, key string) ([]tracking.Metric, error) {
	what := fmt.Sprintf("getting history of metric %q of run %s", key, runID)
	if err := c.flushForRead(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	id, err := c.resolve(runID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	q := url.Values{"run_id": {id}, "metric_key": {key}, "max_results": {fmt.Sprint(historyPage)}}
	var hist []tracking.Metric
	for {
		var got mlflowwire.MetricHistoryResponse
		if err := c.call(ctx, "GET", "metrics/get-history", q, nil, &got); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		for _, m := range got.Metrics {
			hist = append(hist, m.ToTracking())
		}
		if got.NextPageToken == "" || got.NextPageToken == q.Get("page_token") {
			break
		}
		q.Set("page_token", got.NextPageToken)
	}
	slices.SortStableFunc(hist, func(a, b tracking.Metric) int {
		return cmp.Or(cmp.Compare(a.Step, b.Step), cmp.Compare(a.Timestamp, b.Timestamp))
	})
	return hist, nil
}
