package mlflowclient

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// maxCoalesce bounds how many spooled log-batch writes of one run are
// merged into one request.
const maxCoalesce = 64

// Run sends spooled writes to the server as they come, in order, until
// ctx ends; while the server is unreachable it retries with a backoff
// capped at Config.MaxFlushBackoff, and the writes wait in the spool.
// When ctx ends it makes a last flush, bounded by Config.FinalFlushTimeout,
// and returns nil; what is still unsent stays spooled for the next
// process. It returns [ErrClosed] after Close.
func (c *Client) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	fails := 0
	for {
		kick := c.kick
		if fails > 0 {
			kick = nil // backing off: a new write does not cut the wait short
		}
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.FinalFlushTimeout)
			err := c.drain(fctx, math.MaxUint64)
			cancel()
			if errors.Is(err, ErrClosed) {
				return nil
			}
			if n := c.Stats().Pending; n > 0 {
				c.log.Warn("mlflow_final_flush_incomplete", "pending", n, "spool", c.cfg.SpoolDir, "err", err)
			}
			return nil
		case <-kick:
		case <-timer.C:
		}
		err := c.drain(ctx, math.MaxUint64)
		switch {
		case err == nil:
			if fails > 0 {
				c.log.Info("mlflow_reachable", "after_failures", fails)
			}
			fails = 0
			timer.Reset(c.cfg.FlushInterval)
		case errors.Is(err, ErrClosed):
			return err
		case ctx.Err() != nil:
			// The loop's next turn makes the final flush.
		default:
			fails++
			wait := c.flushBackoff(fails)
			c.log.Warn("mlflow_flush_failed", "failures", fails, "retry_in", wait, "pending", c.Stats().Pending, "err", err)
			timer.Reset(wait)
		}
	}
}

// flushBackoff is the wait after the n-th failed flush in a row.
func (c *Client) flushBackoff(n int) time.Duration {
	d := c.cfg.FlushInterval << min(n-1, 20)
	if d > c.cfg.MaxFlushBackoff || d <= 0 {
		d = c.cfg.MaxFlushBackoff
	}
	return d/2 + rand.N(d/2+1)
}

// Flush blocks until every write spooled before the call has been sent
// (or refused by the server) or ctx ends. It returns the writes the
// server refused since the last Flush (they were dropped; errors.Is
// matches the tracking sentinels), or ctx's error with how many writes
// are still spooled. It works with or without Run.
func (c *Client) Flush(ctx context.Context) error {
	if err := c.flushPending(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	errs := c.dropped
	if c.droppedMore > 0 {
		errs = append(errs, fmt.Errorf("and %d more writes refused (see the log)", c.droppedMore))
	}
	c.dropped, c.droppedMore = nil, 0
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("flushing to mlflow: %w", errors.Join(errs...))
}

// flushPending sends everything spooled so far, waiting out outages
// until ctx ends.
func (c *Client) flushPending(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	var target uint64
	if n := len(c.queue); n > 0 {
		target = c.queue[n-1].seq
	}
	c.mu.Unlock()
	if target == 0 {
		return nil
	}
	for fails := 0; ; fails++ {
		err := c.drain(ctx, target)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrClosed) {
			return err
		}
		if ctx.Err() == nil {
			err = c.sleep(ctx, c.flushBackoff(fails+1))
		}
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("flushing to mlflow: %d writes still spooled in %s: %w", c.Stats().Pending, c.cfg.SpoolDir, context.Cause(ctx))
		}
	}
}

// flushForRead is the flush a read makes first.
func (c *Client) flushForRead(ctx context.Context) error {
	if err := c.flushPending(ctx); err != nil {
		return fmt.Errorf("sending the spooled writes first: %w", err)
	}
	return nil
}

// drain sends spooled ops up to seq target, in order, until none is left,
// the server is unreachable (the error is returned, the op kept) or ctx
// ends. An op the server refuses is reported and dropped.
func (c *Client) drain(ctx context.Context, target uint64) error {
	select {
	case c.drainSem <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-c.drainSem }()
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		if len(c.queue) == 0 || c.queue[0].seq > target {
			if len(c.queue) == 0 {
				c.sp.idle()
			}
			c.mu.Unlock()
			return nil
		}
		ops, err := c.headLocked(target)
		c.mu.Unlock()
		if err != nil {
			// The record cannot be read back: report it and move on.
			c.refused(&op{Kind: "unreadable"}, err)
			if err := c.ack(1); err != nil {
				return err
			}
			continue
		}
		err = c.apply(ctx, ops)
		if err != nil && len(ops) > 1 && !keepSpooled(err) {
			// A merged request was refused: find which write it was.
			ops = ops[:1]
			err = c.apply(ctx, ops)
		}
		if err != nil && keepSpooled(err) {
			c.unhealthy.Store(true)
			return err
		}
		c.unhealthy.Store(false)
		if err != nil {
			c.refused(ops[0], err)
		}
		if err := c.ack(len(ops)); err != nil {
			return err
		}
	}
}

// headLocked reads the first pending op and, when it is a log-batch, the
// log-batches of the same run right after it that fit in one request
// with it and do not repeat a param or tag key.
func (c *Client) headLocked(target uint64) ([]*op, error) {
	first, err := c.sp.read(c.queue[0])
	if err != nil {
		return nil, err
	}
	ops := []*op{first}
	if first.Kind != opBatch {
		return ops, nil
	}
	b := first.Batch
	nm, np, nt := len(b.Metrics), len(b.Params), len(b.Tags)
	keys := map[string]bool{}
	for _, p := range b.Params {
		keys["p"+p.Key] = true
	}
	for _, t := range b.Tags {
		keys["t"+t.Key] = true
	}
	for _, e := range c.queue[1:min(len(c.queue), maxCoalesce)] {
		if e.seq > target {
			break
		}
		o, err := c.sp.read(e)
		if err != nil || o.Kind != opBatch || o.RunID != first.RunID {
			break
		}
		ob := o.Batch
		if nm+len(ob.Metrics) > tracking.MaxMetricsPerBatch || np+len(ob.Params) > tracking.MaxParamsTagsPerBatch ||
			nt+len(ob.Tags) > tracking.MaxParamsTagsPerBatch || nm+np+nt+len(ob.Metrics)+len(ob.Params)+len(ob.Tags) > tracking.MaxEntitiesPerBatch {
			break
		}
		clash := false
		for _, p := range ob.Params {
			clash = clash || keys["p"+p.Key]
		}
		for _, t := range ob.Tags {
			clash = clash || keys["t"+t.Key]
		}
		if clash {
			break
		}
		for _, p := range ob.Params {
			keys["p"+p.Key] = true
		}
		for _, t := range ob.Tags {
			keys["t"+t.Key] = true
		}
		nm, np, nt = nm+len(ob.Metrics), np+len(ob.Params), nt+len(ob.Tags)
		ops = append(ops, o)
	}
	return ops, nil
}

// ack removes the first n pending ops, durably.
func (c *Client) ack(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if err := c.sp.appendAck(c.queue[n-1].seq); err != nil {
		return &spoolError{err}
	}
	c.queue = c.queue[n:]
	return nil
}

// spoolError is a failure to write the spool while flushing; the op stays
// pending.
type spoolError struct{ err error }

func (e *spoolError) Error() string { return e.err.Error() }
func (e *spoolError) Unwrap() error { return e.err }

// refused reports a write the server refused.
func (c *Client) refused(o *op, err error) {
	c.log.Error("mlflow_write_refused", "op", o.Kind, "run", o.RunID, "err", err)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.droppedTotal++
	if len(c.dropped) < maxDroppedKept {
		c.dropped = append(c.dropped, fmt.Errorf("%s of run %s refused, dropped: %w", o.Kind, o.RunID, err))
	} else {
		c.droppedMore++
	}
}

// apply sends ops: one op, or log-batches of one run merged.
func (c *Client) apply(ctx context.Context, ops []*op) error {
	o := ops[0]
	switch o.Kind {
	case opCreate:
		return c.applyCreate(ctx, o)
	case opExperiment:
		return c.applyExperiment(ctx, o)
	}
	runID, err := c.resolve(o.RunID)
	if err != nil {
		return err
	}
	switch o.Kind {
	case opUpdate:
		u := *o.Update
		u.RunID, u.RunUUID = runID, runID
		return c.call(ctx, "POST", "runs/update", nil, &u, nil)
	case opBatch:
		req := mlflowwire.LogBatch{RunRef: mlflowwire.RunRef{RunID: runID}}
		for _, x := range ops {
			req.Metrics = append(req.Metrics, x.Batch.Metrics...)
			req.Params = append(req.Params, x.Batch.Params...)
			for _, t := range x.Batch.Tags {
				if t.Key == tracking.TagParentRunID {
					if t.Value, err = c.resolve(t.Value); err != nil {
						return err
					}
				}
				req.Tags = append(req.Tags, t)
			}
		}
		return c.call(ctx, "POST", "runs/log-batch", nil, &req, nil)
	case opInputs:
		in := *o.Inputs
		in.RunID = runID
		return c.call(ctx, "POST", "runs/log-inputs", nil, &in, nil)
	case opArtifact:
		return c.uploadArtifact(ctx, runID, o.Path, o.Artifact)
	}
	return fmt.Errorf("%w: spooled write of unknown kind %q", tracking.ErrInvalid, o.Kind)
}

// applyCreate creates a run spooled under a placeholder and records the
// server's ID for it, or that the server refused it.
func (c *Client) applyCreate(ctx context.Context, o *op) error {
	if o.Create == nil {
		return fmt.Errorf("%w: spooled create of run %s holds no request", tracking.ErrInvalid, o.RunID)
	}
	run, err := c.createRun(ctx, o.Create, 0, true)
	m := idMapping{Placeholder: o.RunID, RunID: run.Info.RunID, ArtifactURI: run.Info.ArtifactURI}
	if err != nil {
		if keepSpooled(err) {
			return err
		}
		m = idMapping{Placeholder: o.RunID, Failed: err.Error()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if merr := c.sp.appendMap(m); merr != nil {
		return &spoolError{merr}
	}
	if err == nil {
		c.log.Info("mlflow_run_created", "placeholder", o.RunID, "run", m.RunID)
	}
	return err
}

// applyExperiment gets or creates a spooled experiment and records its
// ID for the placeholder, or that the server refused it.
func (c *Client) applyExperiment(ctx context.Context, o *op) error {
	if o.Name == "" {
		return fmt.Errorf("%w: spooled experiment %s has no name", tracking.ErrInvalid, o.RunID)
	}
	id, err := c.ensureExperiment(ctx, o.Name)
	m := idMapping{Placeholder: o.RunID, RunID: id}
	if err != nil {
		if keepSpooled(err) {
			return err
		}
		m = idMapping{Placeholder: o.RunID, Failed: err.Error()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if merr := c.sp.appendMap(m); merr != nil {
		return &spoolError{merr}
	}
	if c.pendingExps[o.Name] == o.RunID {
		delete(c.pendingExps, o.Name)
	}
	if err == nil {
		c.log.Info("mlflow_experiment_resolved", "placeholder", o.RunID, "experiment", id, "name", o.Name)
	}
	return err
}

// uploadArtifact PUTs an artifact through the mlflow-artifacts proxy.
func (c *Client) uploadArtifact(ctx context.Context, runID, rel string, data []byte) error {
	c.mu.Lock()
	uri, ok := c.artifactURIs[runID]
	c.mu.Unlock()
	if !ok {
		run, err := c.getRun(ctx, runID)
		if err != nil {
			return fmt.Errorf("uploading artifact %s: %w", rel, err)
		}
		uri = run.Info.ArtifactURI
	}
	p, ok := proxiedPath(uri)
	if !ok {
		return fmt.Errorf("uploading artifact %s of run %s: artifact URI %q: %w", rel, runID, uri, ErrNoArtifactProxy)
	}
	if data == nil {
		data = []byte{}
	}
	u := c.cfg.URI + "/api/2.0/mlflow-artifacts/artifacts/" + escapePath(strings.Trim(p+"/"+rel, "/"))
	err := c.send(ctx, c.cfg.MaxRetries, http.MethodPut, "mlflow-artifacts/artifacts", u, "application/octet-stream", data, nil)
	var ae *APIError
	if errors.As(err, &ae) && (strings.Contains(ae.Message, "serve-artifacts") || ae.Code == "ENDPOINT_NOT_FOUND") {
		return fmt.Errorf("uploading artifact %s of run %s: %w: %w", rel, runID, ErrNoArtifactProxy, err)
	}
	return err
}
