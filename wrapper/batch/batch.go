// Package batch runs many image-to-image jobs with one client, and loses
// nothing when the process dies: every job's progress is in a journal, and
// running the same batch again resumes it. No job with a result the server
// may still give is paid for twice.
//
//	sum, err := batch.Run(ctx, client, jobs, batch.Config{Dir: "out"})
//
// # The journal
//
// Dir holds the jobs' images (ID-N.ext) and the journal, Dir/journal.jsonl:
// JSON Lines, one record per change of a job's state, appended and synced
// to disk before the batch goes on. A record is
//
//	{"id":"cat","state":"intent","input":"…","fields":{…},"sent":"…"}   before the submit is sent
//	{"id":"cat","state":"queued","request_id":"…"}                      as soon as the request id is known
//	{"id":"cat","state":"done","request_id":"…","files":["cat-0.jpeg"],"billable_units":1}
//	{"id":"cat","state":"fetch-failed","request_id":"…","error":"…"}    the wait, download or save failed: the id is kept
//	{"id":"cat","state":"cancelled","request_id":"…","error":"…"}       cancelled when ctx ended, the cancel accepted
//	{"id":"cat","state":"unknown","error":"…"}                          the submit's outcome is unknown
//	{"id":"cat","state":"failed","request_id":"…","error":"…"}          the server's definite failure (the model refused the input, …)
//
// (with "t", the time, on each). The intent carries the SHA-256 of the
// job's effective input ("input": every field that reaches the wire, as
// canonical JSON, and the image's bytes, or its URL), a short digest per
// field ("fields", to name what changed) and the time the submit was sent
// ("sent", to settle it in the request history). A torn last line, from a
// crash while it was written, is truncated away before the next record is
// appended. Images are written whole, synced, and renamed into place
// before their "done" record.
//
// # Guards
//
// Run refuses, before anything is sent, with an error matching ErrRefused:
// a bad job (*BadJobError: an input the spec refuses, an image that is not
// a regular image file, an id that is not a plain file name by the rule of
// internal/names or that differs from another only in case or Unicode
// normalisation); a Dir another run holds (*LockedError: each run holds an
// exclusive flock on Dir/.lock, which names its pid); a job whose input
// changed since the journal recorded it (*ChangedError, naming the fields;
// Config.RedoChanged makes such jobs again, as new jobs); a journal that is
// a symbolic link (never followed). Image files are opened without
// blocking and only if they are regular files, so a FIFO never hangs a
// batch; Check and the digests end when ctx ends or Stop closes.
//
// # Resuming
//
// Run with the same Dir reads the journal first. A job whose last record
// is done is skipped when its files are all there (checked, not trusted;
// otherwise it is fetched again by its request id). A job with a request
// id is waited on by that id and never submitted again, whatever failed
// before (the wait, the download, the save, or a cancel when ctx ended);
// only the server's answer that it has no result for the id (404: expired,
// or a server that forgot it, such as a simulator gone with its process;
// or the cancellation this batch sent) makes it again, in the same run. A
// job with an intent and no request id may or may not have reached the
// server: it is looked for in the request history (wrapper's Client.Settle,
// from the intent's "sent", for up to Config.SettleWindow). Found, it is
// fetched by its id (Outcome.Settled); not in the history, it is submitted;
// where the history cannot tell, by default it is submitted again and
// reported as a possible duplicate, and with AtMostOnce it is reported as
// outcome unknown (wrapper.ErrOutcomeUnknown) and left to the user. The
// history tells jobs apart by their input alone: jobs of one batch with
// the same input are never settled through it, nor is a request id claimed
// that the journal gives another job. A job
// that failed at the server is tried again. A batch whose jobs are all done
// makes no request at all.
//
// The summary counts this run: billable units of the results this run
// learned (BillableUnits) apart from those of earlier runs
// (EarlierBillableUnits).
//
// # Pace
//
// At most Concurrency jobs are in flight. A 429 pauses every call of that
// kind (every submit, say) of the client for its Retry-After (the account's
// limit, see wrapper), so the batch slows down as one. Closing Config.Stop
// stops submitting and lets the jobs in flight finish; ending ctx also
// cancels them on the server (and journals them cancelled).
//
// # Exit codes of the CLI's batch
//
// fluxi2i batch exits 0 when every job is done, 2 for a refusal (nothing
// sent), 3 when the API answered an error for a job, 4 when interrupted or
// timed out, and 1 otherwise.
package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/errprefix"
	"github.com/fluxi2i/fluxi2i/wrapper"
)

// DefaultConcurrency is twice fal's starting per-account concurrency (2):
// two jobs run while two wait in the queue, so the account is never idle
// between jobs, and a new account's queue stays short. Accounts allowed
// more (up to 40) should raise it.
const DefaultConcurrency = 4

// JournalName is the journal's file name in Config.Dir.
const JournalName = "journal.jsonl"

// Job is one image to make.
type Job struct {
	// ID names the job in the journal and its files (ID-0.jpeg, ...): unique
	// in the batch, a plain file name.
	ID string
	// Input is the model's input. Its ImageURL may be left empty when
	// ImageFile is set.
	Input gen.Input
	// ImageFile, when set, is a local image streamed into the request as
	// image_url.
	ImageFile string
}

// Outcome is how one job ended in this run.
type Outcome struct {
	ID, RequestID string
	Files         []string // the images, in Config.Dir
	// BillableUnits is what the server reported billing the job (0:
	// nothing reported), in this run or, for a skipped job, in an earlier
	// one.
	BillableUnits float64
	// Skipped: done in an earlier run, files checked.
	Skipped bool
	// PossibleDuplicate: an earlier run may have submitted it too (it died
	// between sending the submit and learning the request id), and the
	// request history could not tell.
	PossibleDuplicate bool
	// Settled: an earlier run's submit whose answer never came, found in
	// the request history and fetched by its id.
	Settled bool
	// Err is why the job has no images: a *wrapper.JobError or
	// *wrapper.SubmitError naming what is known, an error matching
	// wrapper.ErrOutcomeUnknown (the submit may have queued the job, and
	// it was not submitted again), or the context's error for a job not
	// started.
	Err error

	billedBefore bool // BillableUnits were counted by an earlier run
}

// errLeftUnknown is the Err of a job an earlier run may have submitted
// without learning its request id, left alone because of AtMostOnce.
var errLeftUnknown = errprefix.Errorf("batch: an earlier run may have submitted this job and did not learn its request id; not submitted again (at most once): %w", wrapper.ErrOutcomeUnknown)

// Summary counts a run.
type Summary struct {
	Total, Done, Failed, Skipped, PossibleDuplicates, Settled int
	// Unknown counts the jobs whose outcome is unknown (their Err matches
	// wrapper.ErrOutcomeUnknown): they may exist at the server, unpaid for
	// or not; they are not in Failed.
	Unknown int
	// BillableUnits is what the server reported billing for the jobs this
	// run learned the result of; EarlierBillableUnits, for the jobs an
	// earlier run had finished (skipped, or fetched again by id because
	// their files were missing). Their sum is what the whole batch cost.
	BillableUnits, EarlierBillableUnits float64
	// Failures are the failed and unknown jobs' outcomes, with their
	// reasons.
	Failures []Outcome
}

// Config is how a batch runs.
type Config struct {
	// Dir is where the images and the journal go (created if needed).
	Dir string
	// Concurrency is how many jobs are in flight at once (default
	// DefaultConcurrency).
	Concurrency int
	// AtMostOnce never submits a job twice: submits are at-most-once, and a
	// job an earlier run may have submitted without learning its id is
	// reported, not submitted again.
	AtMostOnce bool
	// OnOutcome is called with each job's outcome as it ends (serially).
	OnOutcome func(Outcome)
	// OnProgress is called whenever a job starts or ends (serially).
	OnProgress func(Progress)
	// Stop, when closed, stops submitting: jobs in flight go on to the end.
	Stop <-chan struct{}
	// RedoChanged makes a job whose input changed since the journal
	// recorded it again, as a new job (paid again; its earlier request is
	// left as it is). Without it such a job is a *ChangedError and the
	// batch sends nothing.
	RedoChanged bool
	// SettleWindow is how long after an earlier run's lost submit (an
	// intent with no request id) its job is looked for in the request
	// history before it is taken as never created and submitted (0: the
	// client's, see wrapper.WithSettleWindow). A resumed batch waits that
	// long, at most, for each such job.
	SettleWindow time.Duration
}

// Progress is the batch's state at one moment, for a progress display or
// a service's metrics (package github.com/fluxi2i/fluxi2i/otel exports
// it): jobs done, failed (or of unknown outcome), skipped (done before),
// in flight, and what this run was billed so far.
type Progress struct {
	Total, Done, Failed, Skipped, InFlight int
	BillableUnits                          float64
}

// Run runs jobs with c. Every job is checked (input, IDs, image files)
// and its input digested before the first request; a bad one, a Dir held
// by another run or a job whose input changed is an error matching
// ErrRefused, naming it, and nothing is sent. The summary counts this
// run; its error is only for what stopped the batch as a whole (a
// refusal, the journal, ctx).
func Run(ctx context.Context, c *wrapper.Client, jobs []Job, cfg Config) (Summary, error) {
	sum := Summary{Total: len(jobs)}
	if err := Check(ctx, jobs); err != nil {
		return sum, err
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return sum, fmt.Errorf("batch: %w", err)
	}
	unlock, err := lock(cfg.Dir)
	if err != nil {
		return sum, err
	}
	defer unlock()
	jr, past, err := openJournal(filepath.Join(cfg.Dir, JournalName))
	if err != nil {
		return sum, err
	}
	defer jr.close()
	inputs, err := digests(ctx, cfg.Stop, jobs)
	if err != nil || inputs == nil {
		return sum, err // ctx ended, or stopped: nothing sent
	}
	var changed []error
	for i, j := range jobs {
		rec, seen := past[j.ID]
		if !seen || rec.Input == "" || rec.Input == inputs[i].hex() {
			continue // new, journaled before inputs were, or the same
		}
		if rec.State == stateFailed {
			delete(past, j.ID) // it failed with no result: the new input is simply tried
			continue
		}
		if !cfg.RedoChanged {
			changed = append(changed, &ChangedError{ID: j.ID, Fields: changedFields(rec.fieldDigests(), inputs[i].fields(j))})
			continue
		}
		delete(past, j.ID) // a new job
	}
	if len(changed) > 0 {
		return sum, errors.Join(changed...)
	}

	r := &runner{c: c, cfg: cfg, jr: jr, sum: &sum, twins: map[[32]byte]string{}, ids: map[string]string{}}
	// The request history tells jobs apart by their input alone: jobs of
	// this batch with the same input cannot be settled through it, and a
	// request id another job journaled is never claimed.
	first := map[[32]byte]string{}
	for i, j := range jobs {
		if other, ok := first[inputs[i].input]; ok {
			r.twins[inputs[i].input] = other
		} else {
			first[inputs[i].input] = j.ID
		}
	}
	for id, rec := range past {
		if rec.RequestID != "" {
			r.ids[rec.RequestID] = id
		}
	}
	r.progress.Total = len(jobs)
	slots := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	var runErr error
	for i, j := range jobs {
		rec, seen := past[j.ID]
		dg := inputs[i]
		if seen && rec.State == stateDone && filesThere(cfg.Dir, rec.Files) {
			r.finish(Outcome{ID: j.ID, RequestID: rec.RequestID, Files: rec.Files, BillableUnits: rec.BillableUnits, Skipped: true})
			continue
		}
		if !acquire(ctx, cfg.Stop, slots) {
			break
		}
		r.started()
		wg.Go(func() {
			defer func() { <-slots }()
			r.finish(r.job(ctx, j, dg, rec, seen))
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		runErr = err
	}
	if err := jr.err(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	return sum, runErr
}

// acquire takes a slot for one more job; false when the batch must not
// start another (stopped, or ctx ended).
func acquire(ctx context.Context, stop <-chan struct{}, slots chan struct{}) bool {
	select {
	case <-stop: // nil: never
		return false
	case <-ctx.Done():
		return false
	default:
	}
	select {
	case slots <- struct{}{}:
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
	select {
	case <-stop:
	case <-ctx.Done():
	default:
		return true
	}
	<-slots // stopped meanwhile: give it back
	return false
}

// runner is one run's shared state.
type runner struct {
	c   *wrapper.Client
	cfg Config
	jr  *journal
	// twins maps an input digest that several jobs share to one of them;
	// ids, each request id the journal holds to its job.
	twins map[[32]byte]string
	ids   map[string]string

	mu       sync.Mutex
	sum      *Summary
	progress Progress
}

func (r *runner) started() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress.InFlight++
	if r.cfg.OnProgress != nil {
		r.cfg.OnProgress(r.progress)
	}
}

// finish counts an outcome and reports it.
func (r *runner) finish(o Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sum
	switch {
	case o.Skipped:
		s.Skipped++
		r.progress.Skipped++
	case errors.Is(o.Err, wrapper.ErrOutcomeUnknown):
		s.Unknown++
		s.Failures = append(s.Failures, o)
		r.progress.Failed++
	case o.Err != nil:
		s.Failed++
		s.Failures = append(s.Failures, o)
		r.progress.Failed++
	default:
		s.Done++
		r.progress.Done++
	}
	if o.PossibleDuplicate {
		s.PossibleDuplicates++
	}
	if o.Settled {
		s.Settled++
	}
	if o.Skipped || o.billedBefore {
		s.EarlierBillableUnits += o.BillableUnits
	} else {
		s.BillableUnits += o.BillableUnits
		r.progress.BillableUnits += o.BillableUnits
	}
	if !o.Skipped {
		r.progress.InFlight--
	}
	if r.cfg.OnOutcome != nil {
		r.cfg.OnOutcome(o)
	}
	if r.cfg.OnProgress != nil {
		r.cfg.OnProgress(r.progress)
	}
}

// job runs one job from where the journal left it.
func (r *runner) job(ctx context.Context, j Job, dg inputDigest, rec record, seen bool) Outcome {
	o := Outcome{ID: j.ID}
	var res *wrapper.Result
	var err error
	switch {
	case seen && rec.RequestID != "" && rec.State != stateFailed:
		// Queued, cancelled, done with files missing, or its fetch or save
		// failed: a job with a request id is fetched by it, never
		// submitted again while the server may still have it.
		o.RequestID = rec.RequestID
		res, err = r.c.Wait(ctx, rec.RequestID)
		if gone(err, rec.State) {
			// The server says it has no result for this id: it forgot the
			// job (expired, or a simulator gone with its process), or the
			// cancel this batch sent stopped it. Make it again, now.
			o.RequestID = ""
			res, err = r.submit(ctx, j, dg, &o)
		}
	case seen && (rec.State == stateIntent || rec.State == stateUnknown):
		// An earlier run sent the submit and never learned its answer: the
		// job may exist. The request history settles it before anything
		// is sent again.
		q, serr := r.settle(ctx, j, dg, rec)
		switch {
		case serr == nil:
			o.RequestID, o.Settled = q.RequestID, true
			r.jr.write(record{ID: j.ID, State: stateQueued, RequestID: q.RequestID})
			res, err = r.c.Wait(ctx, q.RequestID)
			if gone(err, stateCancelled) {
				// Found, but expired since, or cancelled by the run that
				// was cut short: make it again.
				o.RequestID = ""
				res, err = r.submit(ctx, j, dg, &o)
			}
		case errors.Is(serr, wrapper.ErrNotInHistory):
			res, err = r.submit(ctx, j, dg, &o) // no such job: safe to submit
		case ctx.Err() != nil:
			o.Err = ctx.Err()
			return o
		case errors.Is(serr, errSettleStopped):
			o.Err = serr
			return o
		case r.cfg.AtMostOnce:
			o.Err = errprefix.Errorf("%w; %w", errLeftUnknown, serr)
			return o
		default:
			o.PossibleDuplicate = true
			res, err = r.submit(ctx, j, dg, &o)
		}
	default:
		res, err = r.submit(ctx, j, dg, &o)
	}
	if err != nil {
		o.Err = err
		r.failed(j.ID, o.RequestID, err)
		return o
	}
	o.RequestID = res.RequestID
	o.BillableUnits = res.BillableUnits
	if rec.State == stateDone && rec.RequestID == res.RequestID && rec.BillableUnits > 0 {
		o.billedBefore = true // its files were missing: fetched again, billed once
	}
	files, err := r.c.SaveImages(ctx, &res.Output, r.cfg.Dir, j.ID)
	if err != nil {
		// Paid for, and at the server until it expires: keep the id, so
		// the next run fetches it instead of paying again.
		o.Err = errprefix.Errorf("batch: request %s: saving the images: %w", res.RequestID, err)
		r.jr.write(record{ID: j.ID, State: stateFetchFailed, RequestID: res.RequestID, BillableUnits: res.BillableUnits, Error: o.Err.Error()})
		return o
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	o.Files = files
	r.jr.write(record{ID: j.ID, State: stateDone, RequestID: res.RequestID, Files: files, BillableUnits: res.BillableUnits})
	return o
}

// gone reports whether err, the answer to a wait by a journaled request
// id, says the server has no result for it and never will: 404 (the job
// is unknown there), or, for a job this batch cancelled, the cancellation.
func gone(err error, state string) bool {
	if errors.Is(err, wrapper.ErrNotFound) {
		return true
	}
	var ae *wrapper.APIError
	return state == stateCancelled && errors.As(err, &ae) && (ae.StatusCode == 499 || ae.ErrorType == "client_cancelled")
}

// modelFailure reports whether err is the server's definite answer that
// the job failed (the model refused the input, the run failed): a job
// with no result to fetch, tried again by the next run. Anything else
// (the network, the key, a result that could not be read) leaves the job
// where it was, to be fetched by its id.
func modelFailure(err error) bool {
	var ae *wrapper.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.StatusCode {
	case 401, 403, 404, 429:
		return false
	}
	return true
}

// submit records the intent, submits and waits, recording the request id
// as soon as it is known.
func (r *runner) submit(ctx context.Context, j Job, dg inputDigest, o *Outcome) (*wrapper.Result, error) {
	opts, err := imageOpts(j)
	if err != nil {
		return nil, err
	}
	fields, err := json.Marshal(dg.fields(j))
	if err != nil {
		return nil, err
	}
	if err := r.jr.write(record{ID: j.ID, State: stateIntent, Input: dg.hex(), Fields: fields, Sent: time.Now().UTC()}); err != nil {
		return nil, err
	}
	opts = append(opts, wrapper.WithOnQueued(func(q *wrapper.Queued) {
		o.RequestID = q.RequestID
		r.jr.write(record{ID: j.ID, State: stateQueued, RequestID: q.RequestID})
	}))
	if r.cfg.AtMostOnce {
		opts = append(opts, wrapper.WithAtMostOnce())
	}
	return r.c.Run(ctx, j.Input, opts...)
}

// imageOpts is the image option of a job with an ImageFile (none
// otherwise), as Submit and Settle take it.
func imageOpts(j Job) ([]wrapper.Option, error) {
	if j.ImageFile == "" {
		return nil, nil
	}
	f, err := openRegular(j.ImageFile) // still a regular file: never wait on a FIFO
	if err != nil {
		return nil, err
	}
	f.Close()
	im, err := wrapper.ImageFile(j.ImageFile)
	if err != nil {
		return nil, err
	}
	return []wrapper.Option{wrapper.WithImage(im)}, nil
}

// settle looks for the job of an earlier run's submit whose answer never
// came (journaled as an intent, with the time it was sent) in the
// server's request history: the *Queued when it is there, an error
// matching wrapper.ErrNotInHistory when no such job was created, or one
// matching wrapper.ErrHistoryUnavailable when it cannot tell (as for an
// intent journaled without its time). Its errors are the second half of
// an Outcome's Err (after errLeftUnknown's "batch: ..."): they carry no
// prefix of their own.
func (r *runner) settle(ctx context.Context, j Job, dg inputDigest, rec record) (*wrapper.Queued, error) {
	if rec.Sent.IsZero() {
		return nil, errprefix.Errorf("the intent was journaled without its time: %w", wrapper.ErrHistoryUnavailable)
	}
	if other, ok := r.twins[dg.input]; ok {
		return nil, errprefix.Errorf("its input is the same as another job's (%q, say): the request history cannot tell their jobs apart: %w", other, wrapper.ErrHistoryUnavailable)
	}
	opts, err := imageOpts(j)
	if err != nil {
		return nil, err
	}
	if r.cfg.SettleWindow > 0 {
		opts = append(opts, wrapper.WithSettleWindow(r.cfg.SettleWindow))
	}
	// Settling waits for no paid work: Stop ends it too (the job keeps its
	// intent, for the next run).
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if r.cfg.Stop != nil {
		done := make(chan struct{})
		var wg sync.WaitGroup
		defer wg.Wait()
		defer close(done)
		wg.Go(func() {
			select {
			case <-r.cfg.Stop:
				cancel()
			case <-done:
			}
		})
	}
	q, err := r.c.Settle(sctx, j.Input, rec.Sent, opts...)
	if err != nil && ctx.Err() == nil && sctx.Err() != nil {
		return nil, errSettleStopped
	}
	if err == nil {
		if other, ok := r.ids[q.RequestID]; ok && other != j.ID {
			return nil, errprefix.Errorf("the request history's job %s is job %q's: %w", q.RequestID, other, wrapper.ErrHistoryUnavailable)
		}
	}
	return q, err
}

// errSettleStopped is the Err of a job whose lost submit was being settled
// when Stop closed: it keeps its intent, and the next run settles it.
var errSettleStopped = errors.New("batch: stopped while its earlier run's lost submit was looked for in the request history; the next run looks again")

// failed records how a job ended without its images. A job cancelled by
// the context (a second Ctrl-C) whose cancel the server accepted is
// journaled cancelled, with its id: the next run looks at it by id first
// (it may have finished before the cancel) and makes it again only if it
// was stopped. A job whose fate is otherwise open (the context ended, the
// submit's outcome is unknown) keeps its last state, to be resumed; a job
// with a request id that did not fail at the server keeps its id
// (fetch-failed).
func (r *runner) failed(id, requestID string, err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		var je *wrapper.JobError
		if errors.As(err, &je) && je.Cancelled && je.RequestID != "" {
			r.jr.write(record{ID: id, State: stateCancelled, RequestID: je.RequestID, Error: err.Error()})
		}
		return
	}
	switch {
	case errors.Is(err, wrapper.ErrOutcomeUnknown):
		r.jr.write(record{ID: id, State: stateUnknown, Error: err.Error()})
	case requestID != "" && !modelFailure(err):
		r.jr.write(record{ID: id, State: stateFetchFailed, RequestID: requestID, Error: err.Error()})
	default:
		r.jr.write(record{ID: id, State: stateFailed, RequestID: requestID, Error: err.Error()})
	}
}

// filesThere reports whether every file of a done job is in dir, not
// empty.
func filesThere(dir string, files []string) bool {
	if len(files) == 0 {
		return false
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			return false
		}
	}
	return true
}

// digests computes every job's inputDigest before anything is sent; nil
// (and no error) when stop closed meanwhile.
func digests(ctx context.Context, stop <-chan struct{}, jobs []Job) ([]inputDigest, error) {
	out := make([]inputDigest, len(jobs))
	for i, j := range jobs {
		select {
		case <-stop:
			return nil, nil
		default:
		}
		d, err := digestOf(ctx, j)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, &BadJobError{Index: i, ID: j.ID, Err: err}
		}
		out[i] = d
	}
	return out, nil
}
