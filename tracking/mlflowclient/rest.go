package mlflowclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// maxResponseBytes bounds what is read of one response.
const maxResponseBytes = 256 << 20

// inflightGrace is how long a request in flight may go on after its
// context ended.
const inflightGrace = 2 * time.Second

// maxRetryAfter caps the wait a Retry-After header asks for.
const maxRetryAfter = 10 * time.Minute

const apiPrefix = "/api/2.0/mlflow/"

// call sends a JSON request to an MLflow endpoint ("runs/log-batch") and
// decodes the response into out (when not nil), retrying as configured.
func (c *Client) call(ctx context.Context, method, endpoint string, query url.Values, body, out any) error {
	return c.callRetries(ctx, c.cfg.MaxRetries, method, endpoint, query, body, out)
}

func (c *Client) callRetries(ctx context.Context, retries int, method, endpoint string, query url.Values, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("mlflow %s: encoding the request: %w", endpoint, err)
		}
	}
	u := c.cfg.URI + apiPrefix + endpoint
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return c.send(ctx, retries, method, endpoint, u, "application/json", payload, out)
}

// send makes the request, retrying transient failures with exponential
// backoff and jitter, or as long as Retry-After says.
func (c *Client) send(ctx context.Context, retries int, method, endpoint, u, ctype string, payload []byte, out any) error {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("mlflow %s %s: %w", method, endpoint, context.Cause(ctx))
		}
		wait, err := c.attempt(ctx, method, endpoint, u, ctype, payload, out)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		if !transient(err) {
			return err // refused, or an answer that cannot be read: sending it again would not help
		}
		if attempt >= retries {
			if attempt > 0 {
				return fmt.Errorf("%w (gave up after %d attempts)", err, attempt+1)
			}
			return err
		}
		if wait < 0 {
			wait = c.backoff(attempt + 1)
		}
		c.log.Debug("mlflow_retry", "endpoint", endpoint, "attempt", attempt+1, "wait", wait, "err", err)
		if serr := c.sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%w (%w)", err, serr)
		}
	}
}

// backoff is the wait before retry n (1-based), as urllib3 computes it.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.BackoffFactor << min(n-1, 30)
	if d > c.cfg.BackoffMax || d < 0 {
		d = c.cfg.BackoffMax
	}
	if c.cfg.BackoffJitter > 0 {
		d += rand.N(c.cfg.BackoffJitter)
	}
	return d
}

// attempt makes one request. The wait it returns is the Retry-After of
// the response, or -1 when it had none.
//
// A request in flight when ctx ends is given inflightGrace to finish
// before it is cut: a write the server applied but whose answer was
// abandoned would be sent again.
func (c *Client) attempt(ctx context.Context, method, endpoint, u, ctype string, payload []byte, out any) (time.Duration, error) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.RequestTimeout)
	defer cancel()
	var grace *time.Timer
	var graceMu sync.Mutex
	stop := context.AfterFunc(ctx, func() {
		graceMu.Lock()
		grace = time.AfterFunc(inflightGrace, cancel)
		graceMu.Unlock()
	})
	defer func() {
		if !stop() {
			graceMu.Lock()
			if grace != nil {
				grace.Stop()
			}
			graceMu.Unlock()
		}
	}()
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(actx, method, u, body)
	if err != nil {
		return -1, fmt.Errorf("mlflow %s %s: %w", method, endpoint, err)
	}
	if payload != nil {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("User-Agent", "cohort-mlflowclient")
	c.authorize(req)
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return -1, &netError{fmt.Errorf("mlflow %s %s: %w", method, endpoint, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return -1, &netError{fmt.Errorf("mlflow %s %s: reading the response: %w", method, endpoint, err)}
	}
	if resp.StatusCode/100 != 2 {
		ae := apiError(method, endpoint, resp.StatusCode, data)
		ae.retryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
		return ae.retryAfter, ae
	}
	if out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return -1, fmt.Errorf("mlflow %s %s: decoding the response: %w", method, endpoint, err)
		}
	}
	return -1, nil
}

// apiError reads an error response: MLflow's JSON, or the start of
// whatever else the body holds.
func apiError(method, endpoint string, status int, data []byte) *APIError {
	ae := &APIError{Method: method, Endpoint: endpoint, StatusCode: status, retryAfter: -1}
	var e struct {
		ErrorCode string `json:"error_code"`
		Message   string `json:"message"`
	}
	if json.Unmarshal(data, &e) == nil && e.ErrorCode != "" {
		ae.Code, ae.Message = e.ErrorCode, e.Message
	} else {
		ae.Message = string(bytes.TrimSpace(data[:min(len(data), 512)]))
	}
	return ae
}

// retryAfter parses a Retry-After header, seconds or an HTTP date; -1
// when absent or unreadable.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return -1
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return -1
		}
		return min(time.Duration(n)*time.Second, maxRetryAfter)
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return -1
	}
	return min(max(t.Sub(now), 0), maxRetryAfter)
}

// authorize adds the credentials, as MLflow's client does: basic auth
// when a username and password are set, else a bearer token.
func (c *Client) authorize(req *http.Request) {
	switch {
	case c.cfg.Username != "" && c.cfg.Password != "":
		req.SetBasicAuth(c.cfg.Username, c.cfg.Password)
	case c.cfg.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
