package wrapper

import (
	"context"
	"errors"
	"iter"
	"math/rand/v2"
	"time"
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
// interval that grows from short to a cap, honouring Retry-After but never
// polling faster than the first interval.
//
// A job that exists is never given up for a transient failure: status and
// result calls that keep failing (transport errors, timeouts, 429, 5xx) are
// retried with backoff, beyond WithRetries, until the job ends or ctx does.
// Only a permanent answer (404, 401/403, a model error) ends Wait early.
//
// When ctx ends first, a best-effort Cancel goes out under its own short
// deadline (unless WithCancelOnExit(0)), and the *JobError names the
// request id: a job left running can be resumed with Wait. Every error
// after the job was identified is a *JobError; a model failure is the
// *APIError inside it.
func (c *Client) Wait(ctx context.Context, requestID string, opts ...Option) (*Result, error) {
	if err := checkID(requestID); err != nil {
		return nil, err
	}
	s, err := c.call(forWait, "Wait", opts)
	if err != nil {
		return nil, err
	}
	c.known.add(requestID, time.Now()) // never the job of another lost submit
	ctx, end := c.startJob(ctx, JobStart{Call: "wait", RequestID: requestID})
	l := &lane{shared: true} // the job's calls, one after another
	defer l.end()
	res, err := c.wait(ctx, s, requestID, l)
	end(requestID, res, err)
	return res, err
}

// Updates yields the job's status changes until it completes (the last one
// yielded is the completed status); it stops early when the loop breaks. An
// error is yielded last, as a *JobError. It never cancels the job.
func (c *Client) Updates(ctx context.Context, requestID string, opts ...Option) iter.Seq2[Status, error] {
	return func(yield func(Status, error) bool) {
		if err := checkID(requestID); err != nil {
			yield(Status{}, err)
			return
		}
		s, err := c.call(forUpdates, "Updates", opts)
		if err != nil {
			yield(Status{}, err)
			return
		}
		c.known.add(requestID, time.Now()) // never the job of another lost submit
		last, err := c.watch(ctx, s, requestID, true, func(st Status) bool { return yield(st, nil) }, nil)
		if err != nil && !errors.Is(err, errStopped) {
			yield(Status{}, &JobError{RequestID: requestID, Status: last.Status, Err: err})
		}
	}
}

// wait follows the job until it ends and fetches its result, the attempts
// under l (nil: each under its own lane).
func (c *Client) wait(ctx context.Context, s *settings, id string, l *lane) (*Result, error) {
	last, err := c.watch(ctx, s, id, s.onUpdate != nil, func(st Status) bool {
		if s.onUpdate != nil {
			s.onUpdate(st)
		}
		return true
	}, l)
	if err != nil {
		return nil, c.abandon(ctx, s, id, last, err)
	}
	out, err := c.result(ctx, s, id, persistUnanswered, l)
	if err != nil {
		return nil, c.abandon(ctx, s, id, last, err)
	}
	return out, nil
}

// abandon turns a failed wait into a *JobError, cancelling the job first
// when the caller's context ended before it completed.
func (c *Client) abandon(ctx context.Context, s *settings, id string, last Status, err error) error {
	je := &JobError{RequestID: id, Status: last.Status, Err: err}
	if ctx.Err() == nil || s.cancelWait <= 0 || ended(last.Status) {
		return je
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cancelWait)
	defer cancel()
	if cerr := c.cancel(cctx, s, id); cerr != nil {
		c.set.log.Debug("fluxi2i: best-effort cancel failed", "request_id", id, "error", cerr)
	} else {
		je.Cancelled = true
	}
	return je
}

// watcher follows one job, by stream or by polling, and hands every
// change to emit exactly once, with each log line once.
type watcher struct {
	c        *Client
	s        *settings
	id       string
	withLogs bool
	emit     func(Status) bool

	last     Status
	seen     bool // last holds a status
	seenLogs int  // log lines already handed out
	ctx      context.Context
	lane     *lane // what the stream and the polls send under (nil: each its own)
}

// observe records st and emits it when it is the first or a change.
func (w *watcher) observe(st Status) bool {
	emit := !w.seen || changed(w.last, st)
	statusChanged := !w.seen || w.last.Status != st.Status || !samePosition(w.last.QueuePosition, st.QueuePosition)
	w.last, w.seen = st, true
	if statusChanged {
		w.c.event(w.ctx, JobEvent{Kind: EventStatus, RequestID: w.id, Status: st.Status, QueuePosition: st.QueuePosition})
	}
	if emit {
		return w.emit(st)
	}
	return true
}

// watch follows the job until it ends, in the given mode, and returns the
// last status seen.
func (c *Client) watch(ctx context.Context, s *settings, id string, withLogs bool, emit func(Status) bool, l *lane) (Status, error) {
	mode := s.mode
	w := &watcher{c: c, s: s, id: id, withLogs: withLogs, emit: emit, ctx: ctx, lane: l}
	if mode == StatusPoll {
		return w.pollRest(ctx)
	}
	if slots := c.streamSlots; slots != nil && (s.maxStreams > 0 || !c.multiplexed.Load()) {
		select {
		case slots <- struct{}{}:
		default:
			if mode == StatusAuto {
				return w.pollRest(ctx) // every stream is taken
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return w.last, ctx.Err()
			}
		}
		defer func() { <-slots }()
	}
	// The stream is retried like any request in StatusStream; in StatusAuto
	// its first failure hands the job over to polling.
	_, err := c.do(ctx, s, op{name: "stream", id: id, via: &c.streamRoute, once: mode == StatusAuto, lane: l}, w.stream)
	switch {
	case err == nil:
		return w.last, nil
	case mode != StatusAuto, ctx.Err() != nil, errors.Is(err, errStopped):
		return w.last, err
	}
	c.stats.fallbacks.Add(1)
	c.set.log.Debug("fluxi2i: status stream failed; polling instead", "request_id", id, "error", err)
	return w.pollRest(ctx)
}

// pollRest polls until the job ends and returns the last status seen.
func (w *watcher) pollRest(ctx context.Context) (Status, error) {
	err := w.poll(ctx) // before reading w.last, which poll updates
	return w.last, err
}

// poll polls the job's status until it ends: at once, then at an interval
// that grows from pollFirst to pollMax with up to 20 % jitter, or as
// Retry-After says (never sooner than pollFirst).
func (w *watcher) poll(ctx context.Context) error {
	delay := w.s.pollFirst
	for {
		p, err := w.c.status(ctx, w.s, w.id, w.withLogs, persistRetryable, w.lane)
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
			// Up to a fifth more, at random: jobs submitted together do not
			// poll together.
			wait = delay + rand.N(delay/5+1)
			delay = min(delay*3/2, w.s.pollMax)
		}
		wait = max(wait, w.s.pollFirst)
		if w.lane != nil {
			w.lane.end() // nothing of it is held while the job waits: the next poll makes it again
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func changed(a, b Status) bool {
	return a.Status != b.Status || len(b.NewLogs) > 0 || !samePosition(a.QueuePosition, b.QueuePosition)
}

func samePosition(pa, pb *int) bool {
	return (pa == nil) == (pb == nil) && (pa == nil || *pa == *pb)
}
