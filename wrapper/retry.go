package wrapper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxRetryAfter bounds a server's Retry-After; the context bounds it too.
const maxRetryAfter = 2 * time.Minute

// call describes one API operation for do, the one place that retries.
type call struct {
	op    string // "submit", "status", "result", "cancel"
	id    string // request id, when known
	build func(ctx context.Context) (*http.Request, error)
	// decode parses a 2xx answer; an error makes the attempt a failure that
	// is retried like a transport error.
	decode func(resp *http.Response, body []byte) error
	// submit marks the paid POST; atMostOnce restricts its retries.
	submit     bool
	atMostOnce bool
}

// do runs c with retries and returns the number of requests sent.
//
// Retried: transport errors, 408, 429, 500, 502, 503, 504 (not a 504 whose
// X-Fal-Request-Timeout-Type is "user", nor anything X-Fal-Retryable: false
// marks), and a 2xx whose body cannot be decoded. The wait is the server's
// Retry-After when it sends one, the Backoff otherwise; it ends with ctx.
// An at-most-once submit is retried only after 429, 503 or a failure to
// connect; anything else that leaves the job's existence unknown returns a
// *SubmitError with Unknown set.
func (c *Client) do(ctx context.Context, cl call) (attempts int, err error) {
	// unknown: some submit attempt may have queued the job, so a final
	// failure cannot say it was not queued.
	unknown := false
	fail := func(attempt int, err error) (int, error) {
		if cl.submit {
			return attempt, &SubmitError{Attempts: attempt, Unknown: unknown, Err: err}
		}
		return attempt, err
	}
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fail(attempt-1, err) // nothing more was sent
		}
		wait, retry, ambiguous, err := c.attempt(ctx, cl)
		if err == nil {
			return attempt, nil
		}
		unknown = unknown || ambiguous
		switch {
		case cl.submit && cl.atMostOnce && ambiguous:
			return fail(attempt, err)
		case ctx.Err() != nil:
			return fail(attempt, ctx.Err())
		case !retry || attempt > c.maxRetries:
			return fail(attempt, err)
		}
		if wait < 0 {
			wait = c.backoff.Delay(attempt)
		}
		c.log.Debug("fluxi2i: retrying", "op", cl.op, "request_id", cl.id, "attempt", attempt+1, "wait", wait, "error", err)
		if err := sleep(ctx, wait); err != nil {
			return fail(attempt, err)
		}
		c.stats.retries.Add(1)
		if cl.submit {
			c.stats.submitRetries.Add(1)
			c.log.Warn("fluxi2i: retrying submit; if the lost answer had queued the job it may run twice",
				"attempt", attempt+1, "error", err)
		}
	}
}

// attempt sends one request. wait is the server's Retry-After (-1 when it
// sent none); retry tells whether another attempt may help; ambiguous that
// the server may have acted on the request.
func (c *Client) attempt(ctx context.Context, cl call) (wait time.Duration, retry, ambiguous bool, err error) {
	req, err := cl.build(ctx)
	if err != nil {
		return -1, false, false, err
	}
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		// Only a failure to connect proves the request was never sent.
		return -1, true, !notSent(err), fmt.Errorf("fluxi2i: %s%s: %w", cl.op, ofID(cl.id), scrubURL(err))
	}
	body, rerr := readLimited(resp.Body, c.maxBody)
	resp.Body.Close()
	readErr := func() error {
		return fmt.Errorf("fluxi2i: %s%s: reading the HTTP %d answer: %w", cl.op, ofID(cl.id), resp.StatusCode, rerr)
	}
	var tooBig *tooLargeError
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		derr := cl.decode(resp, body)
		switch {
		case derr == nil:
			// Complete, or broken off after enough arrived (a submit's
			// X-Fal-Request-Id header): either way the answer is known.
			return 0, false, false, nil
		case rerr != nil:
			return -1, !errors.As(rerr, &tooBig), true, readErr()
		}
		return -1, true, true, fmt.Errorf("fluxi2i: %s%s: undecodable HTTP %d answer: %w", cl.op, ofID(cl.id), resp.StatusCode, derr)
	}
	if rerr != nil {
		return -1, !errors.As(rerr, &tooBig), true, readErr()
	}
	apiErr := apiError(cl.op, cl.id, resp, body)
	retry = apiErr.Retryable
	// 429 and 503 say the server turned the request away before the job.
	ambiguous = resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable
	if !retry {
		ambiguous = false // a definite answer: the job was not queued
	}
	return retryAfter(resp.Header, time.Now()), retry, ambiguous, apiErr
}

// authorize sets the User-Agent, and the credential only for the configured
// origin.
func (c *Client) authorize(req *http.Request) {
	req.Header.Set("User-Agent", c.userAgent)
	if sameOrigin(req.URL, c.base) {
		req.Header.Set("Authorization", c.auth.header)
	} else {
		req.Header.Del("Authorization")
	}
}

func ofID(id string) string {
	if id == "" {
		return ""
	}
	return " of request " + id
}

// notSent reports a transport error that happened before the request could
// be written: the connection was never made.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// scrubURL drops the query of a *url.Error's URL (a webhook URL may carry
// a token of the caller's).
func scrubURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil && u.RawQuery != "" {
			u.RawQuery = ""
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

// retryAfter parses Retry-After (seconds or an HTTP date); -1 when absent
// or unparsable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return -1
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs < 0 {
			return -1
		}
		d = time.Duration(secs * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = max(t.Sub(now), 0)
	} else {
		return -1
	}
	return min(d, maxRetryAfter)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type tooLargeError struct{ limit int64 }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("body larger than the %d-byte limit (WithMaxResponseBytes)", e.limit)
}

// readLimited reads all of r, failing past limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return b, err
	}
	if int64(len(b)) > limit {
		return nil, &tooLargeError{limit}
	}
	return b, nil
}
