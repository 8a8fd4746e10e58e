package wrapper

import (
	"context"
	"errors"
	"iter"

	"github.com/fluxi2i/fluxi2i/gen"
)

// errStopped ends a watch whose consumer stopped listening.
var errStopped = errors.New("fluxi2i: updates stopped by the caller")

// ended reports a status after which the job will not change any more:
// COMPLETED, and the failure statuses some gateways send.
func ended(status string) bool {
	switch status {
	case StatusCompleted, "FAILED", "CANCELLED", "CANCELED", "ERROR":
		return true
	}
	return false
}

// Wait waits until the job completes, then returns its result. It follows
// the status stream, falling back to polling (see StatusMode); polling
// looks at once (a finished job returns with no sleep), then waits an
// interval that grows from short to a cap, honouring Retry-After.
//
// When ctx ends first, a best-effort Cancel goes out under its own short
// deadline (unless KeepRunningOnExit or WithCancelOnExit(0)), and the
// *JobError names the request id: a job left running can be resumed with
// Wait. Every error after the job was identified is a *JobError; a model
// failure is the *APIError inside it.
func (c *Client) Wait(ctx context.Context, requestID string, opts ...CallOption) (*gen.Output, error) {
	if err := checkID(requestID); err != nil {
		return nil, err
	}
	cfg, err := c.callConfig(opts)
	if err != nil {
		return nil, err
	}
	return c.wait(ctx, requestID, c.endpointsFor(requestID, nil), cfg)
}

// Updates yields the job's status changes until it completes (the last one
// yielded is the completed status); it stops early when the loop breaks. An
// error is yielded last, as a *JobError. It never cancels the job.
func (c *Client) Updates(ctx context.Context, requestID string, opts ...CallOption) iter.Seq2[Status, error] {
	return func(yield func(Status, error) bool) {
		if err := checkID(requestID); err != nil {
			yield(Status{}, err)
			return
		}
		cfg, err := c.callConfig(opts)
		if err != nil {
			yield(Status{}, err)
			return
		}
		last, err := c.watch(ctx, requestID, c.endpointsFor(requestID, nil), true, cfg.mode, func(s Status) bool { return yield(s, nil) })
		if err != nil && !errors.Is(err, errStopped) {
			yield(Status{}, &JobError{RequestID: requestID, Status: last.Status, Err: err})
		}
	}
}

func (c *Client) wait(ctx context.Context, id string, ep endpoints, cfg *callConfig) (*gen.Output, error) {
	last, err := c.watch(ctx, id, ep, cfg.onUpdate != nil, cfg.mode, func(s Status) bool {
		if cfg.onUpdate != nil {
			cfg.onUpdate(s)
		}
		return true
	})
	if err != nil {
		return nil, c.abandon(ctx, id, ep, last, err, cfg)
	}
	out, err := c.result(ctx, id, ep)
	if err != nil {
		return nil, c.abandon(ctx, id, ep, last, err, cfg)
	}
	return out, nil
}

// abandon turns a failed wait into a *JobError, cancelling the job first
// when the caller's context ended before it completed.
func (c *Client) abandon(ctx context.Context, id string, ep endpoints, last Status, err error, cfg *callConfig) error {
	je := &JobError{RequestID: id, Status: last.Status, Err: err}
	if ctx.Err() == nil || cfg.cancelWait <= 0 || ended(last.Status) {
		return je
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.cancelWait)
	defer cancel()
	if cerr := c.cancel(cctx, id, ep); cerr != nil {
		c.log.Debug("fluxi2i: best-effort cancel failed", "request_id", id, "error", cerr)
	} else {
		je.Cancelled = true
	}
	return je
}

// watcher follows one job, by stream or by polling, and hands every
// change to emit exactly once, with each log line once.
type watcher struct {
	c        *Client
	id       string
	ep       endpoints
	withLogs bool
	emit     func(Status) bool

	last     Status
	seen     bool // last holds a status
	seenLogs int  // log lines already handed out
}

// observe records st and emits it when it is the first or a change.
func (w *watcher) observe(st Status) bool {
	emit := !w.seen || changed(w.last, st)
	w.last, w.seen = st, true
	if emit {
		return w.emit(st)
	}
	return true
}

// watch follows the job until it ends, in the given mode, and returns the
// last status seen.
func (c *Client) watch(ctx context.Context, id string, ep endpoints, withLogs bool, mode StatusMode, emit func(Status) bool) (Status, error) {
	w := &watcher{c: c, id: id, ep: ep, withLogs: withLogs, emit: emit}
	if mode == StatusPoll {
		return w.pollRest(ctx)
	}
	select {
	case c.streamSlots <- struct{}{}:
	default:
		if mode == StatusAuto {
			return w.pollRest(ctx) // every stream is taken
		}
		select {
		case c.streamSlots <- struct{}{}:
		case <-ctx.Done():
			return w.last, ctx.Err()
		}
	}
	defer func() { <-c.streamSlots }()
	for failures := 0; ; failures++ {
		done, err := w.stream(ctx)
		if done {
			return w.last, nil
		}
		var se *streamError
		if !errors.As(err, &se) {
			return w.last, err // the context ended, or the caller stopped
		}
		if mode == StatusAuto {
			c.stats.fallbacks.Add(1)
			c.log.Debug("fluxi2i: status stream failed; polling instead", "request_id", id, "error", err)
			return w.pollRest(ctx)
		}
		if se.events > 0 {
			failures = 0 // it worked for a while: count failures in a row
		}
		if se.refused || failures >= c.maxRetries {
			return w.last, se.err
		}
		c.log.Debug("fluxi2i: status stream failed; reopening", "request_id", id, "error", err)
		if err := sleep(ctx, c.backoff.Delay(failures+1)); err != nil {
			return w.last, err
		}
	}
}

// pollRest polls until the job ends and returns the last status seen.
func (w *watcher) pollRest(ctx context.Context) (Status, error) {
	err := w.poll(ctx) // before reading w.last, which poll updates
	return w.last, err
}

// poll polls the job's status until it ends: at once, then at an interval
// that grows from pollFirst to pollMax, or as Retry-After says.
func (w *watcher) poll(ctx context.Context) error {
	delay := w.c.pollFirst
	for {
		p, err := w.c.status(ctx, w.id, w.ep, w.withLogs)
		if err != nil {
			return err
		}
		st, wait := *p, p.retryAfter
		if st.Logs != nil {
			logs := *st.Logs
			if len(logs) > w.seenLogs {
				st.NewLogs = logs[w.seenLogs:]
			}
			w.seenLogs = max(w.seenLogs, len(logs))
		}
		if !w.observe(st) {
			return errStopped
		}
		if ended(st.Status) {
			return nil
		}
		if wait < 0 {
			wait = delay
			delay = min(delay*3/2, w.c.pollMax)
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func changed(a, b Status) bool {
	if a.Status != b.Status || len(b.NewLogs) > 0 {
		return true
	}
	pa, pb := a.QueuePosition, b.QueuePosition
	return (pa == nil) != (pb == nil) || (pa != nil && *pa != *pb)
}
