package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/media"
	"github.com/fluxi2i/fluxi2i/internal/names"
	"github.com/fluxi2i/fluxi2i/internal/regular"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/batch"
)

// Seams for the tests: the second interrupt, and the plain progress period.
var (
	secondInterrupt = func() (<-chan os.Signal, func()) {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		return ch, func() { signal.Stop(ch) }
	}
	progressEvery = 5 * time.Second
	// settleWindow is batch.Config.SettleWindow (0: the library's).
	settleWindow time.Duration
)

func (a *app) batch(args []string) int {
	fs := a.flags("batch", "--images DIR --prompt TEXT --out OUT [input flags] | --manifest FILE.jsonl --out OUT")
	var in inputFlags
	in.register(fs, false)
	images := fs.String("images", "", "a directory of input images (jpeg, png, webp, gif, avif): one job each, named after the file")
	manifest := fs.String("manifest", "", "a JSON Lines file, one job a line: image (a path relative to the file, or an http(s) URL), prompt, and any other input field; id optional")
	out := fs.String("out", "", "the output directory: images and the journal that lets the same command resume (required)")
	concurrency := fs.Int("concurrency", batch.DefaultConcurrency, "jobs in flight at once (fal accounts start at 2 running; more queue)")
	atMostOnce := fs.Bool("at-most-once", false, "never submit a job twice: a job an earlier run may have submitted is reported, not sent again")
	redo := fs.Bool("redo-changed", false, "make jobs whose input changed since --out's journal recorded them again, as new jobs (paid again); without it the batch refuses them and sends nothing")
	a.startTimeoutFlag(fs)
	if code, done := a.flagsOnly(fs, args); done {
		return code
	}
	// Validation ends on SIGINT/SIGTERM too (a.ctx): an image file is read
	// only if regular, and every job is checked before anything is sent.
	jobs, err := a.batchJobs(a.ctx, fs, &in, *images, *manifest, *out, *concurrency)
	if err != nil {
		return a.fail(err)
	}
	c, stop, simulated, err := a.clientOrSimulator()
	if err != nil {
		return a.fail(err)
	}
	defer stop()
	window := settleWindow
	if simulated {
		// The built-in simulator starts empty with each process: an earlier
		// run's lost submit cannot be there, nothing to wait for.
		window = time.Millisecond
	}

	// First Ctrl-C (a.ctx ends): stop submitting, let the jobs in flight
	// finish. Second: cancel them.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(a.ctx))
	defer cancelRun()
	if a.timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(runCtx, a.timeout)
		defer cancel()
	}
	halt := make(chan struct{}) // closed: submit no more
	watching := make(chan struct{})
	var interrupted bool
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-a.ctx.Done():
		case <-watching:
			return
		}
		interrupted = true
		close(halt)
		fmt.Fprintln(a.stderr, "\nfluxi2i: interrupted: no more jobs are submitted; waiting for the jobs in flight (Ctrl-C again cancels them)")
		sig, release := secondInterrupt()
		defer release()
		select {
		case <-sig:
			fmt.Fprintln(a.stderr, "fluxi2i: cancelling the jobs in flight")
			cancelRun()
		case <-watching:
		}
	})

	p := newBatchProgress(a, len(jobs), clientFailing(c))
	sum, runErr := batch.Run(runCtx, c, jobs, batch.Config{
		Dir: *out, Concurrency: *concurrency, AtMostOnce: *atMostOnce, RedoChanged: *redo, SettleWindow: window, Stop: halt,
		OnOutcome:  p.outcome,
		OnProgress: p.update,
	})
	close(watching)
	wg.Wait()
	p.finish()

	if errors.Is(runErr, batch.ErrRefused) {
		// Nothing was sent: a bad job, another run on --out, a changed
		// input, a symlinked journal.
		a.fail(runErr)
		var changed *batch.ChangedError
		if errors.As(runErr, &changed) {
			fmt.Fprintln(a.stderr, "fluxi2i: to make changed jobs again on purpose (paid again), add --redo-changed; or give another --out")
		}
		return exitUsage
	}
	return a.batchSummary(sum, runErr, len(jobs), interrupted)
}

// manifestLine is one job of a manifest: image, prompt and any other
// input field; id optional.
type manifestLine struct {
	ID    string `json:"id"`
	Image string `json:"image"`
	gen.Input
}

// batchJobs builds and checks the jobs: every bad one is named in an
// *InputError (its manifest line or file, and the field), before anything
// is sent.
func (a *app) batchJobs(ctx context.Context, fs *flag.FlagSet, in *inputFlags, images, manifest, out string, concurrency int) ([]batch.Job, error) {
	bad := func(field, msg string) error {
		return &wrapper.InputError{Fields: []wrapper.FieldError{{Field: field, Message: msg}}}
	}
	switch {
	case out == "":
		return nil, bad("--out", "is required: the directory for the images and the journal")
	case (images == "") == (manifest == ""):
		return nil, bad("--images", "give --images DIR or --manifest FILE (one of them)")
	case concurrency < 1:
		return nil, bad("--concurrency", fmt.Sprintf("%d: must be at least 1", concurrency))
	}
	var jobs []batch.Job
	var where []string // per job: its line or file, for errors
	if images != "" {
		var err error
		if jobs, where, err = imageJobs(fs, in, images); err != nil {
			return nil, err
		}
	} else {
		for name := range given(fs) {
			if inputFlag[name] {
				return nil, bad("--"+name, "goes in the manifest's lines with --manifest")
			}
		}
		var err error
		if jobs, where, err = manifestJobs(ctx, manifest); err != nil {
			return nil, err
		}
	}
	if images != "" {
		if err := outsideImages(out, images); err != nil {
			return nil, err
		}
	}
	if err := checkOut(out); err != nil {
		return nil, err
	}
	var fields []wrapper.FieldError
	err := batch.Check(ctx, jobs)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for _, err := range unjoin(err) {
		var bj *batch.BadJobError
		if !errors.As(err, &bj) {
			return nil, err
		}
		var ie *wrapper.InputError
		if errors.As(bj.Err, &ie) {
			for _, f := range ie.Fields {
				fields = append(fields, wrapper.FieldError{Field: where[bj.Index] + ": " + f.Field, Message: f.Message})
			}
		} else {
			fields = append(fields, wrapper.FieldError{Field: where[bj.Index], Message: bj.Err.Error()})
		}
	}
	if len(fields) > 0 {
		return nil, &wrapper.InputError{Fields: fields}
	}
	return jobs, nil
}

// inputFlag are the flags of the model's input.
var inputFlag = map[string]bool{"prompt": true, "strength": true, "steps": true, "guidance": true, "seed": true,
	"num-images": true, "format": true, "acceleration": true, "sync": true, "no-safety-checker": true}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// imageJobs makes a job of every image in dir, named after its file.
func imageJobs(fs *flag.FlagSet, in *inputFlags, dir string) ([]batch.Job, []string, error) {
	bad := func(field, msg string) error {
		return &wrapper.InputError{Fields: []wrapper.FieldError{{Field: field, Message: msg}}}
	}
	if in.prompt == "" {
		return nil, nil, bad("--prompt", "is required with --images")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, bad("--images", strings.ReplaceAll(err.Error(), "open ", ""))
	}
	set := given(fs)
	var jobs []batch.Job
	var where []string
	var refused []wrapper.FieldError
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if !isImageFile(path) {
			continue
		}
		// The image's name becomes the job's id and its outputs' names:
		// one rule for both.
		id := strings.TrimSuffix(e.Name(), filepath.Ext(e.Name()))
		if err := names.Check(id); err != nil {
			refused = append(refused, wrapper.FieldError{Field: "--images " + strconv.Quote(e.Name()), Message: "cannot name a job: " + err.Error()})
			continue
		}
		input := gen.Input{Prompt: in.prompt}
		in.apply(set, &input)
		jobs = append(jobs, batch.Job{ID: id, Input: input, ImageFile: path})
		where = append(where, "--images "+e.Name())
	}
	if len(refused) > 0 {
		return nil, nil, &wrapper.InputError{Fields: refused}
	}
	if len(jobs) == 0 {
		return nil, nil, bad("--images", dir+" holds no jpeg, png, webp, gif or avif image")
	}
	return jobs, where, nil
}

// outsideImages refuses an --out that is --images or inside it (after
// symbolic links): each rerun would take the outputs for inputs, and pay
// for them.
func outsideImages(out, images string) error {
	o, err := resolve(out)
	if err != nil {
		return &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--out", Message: err.Error()}}}
	}
	i, err := resolve(images)
	if err != nil {
		return &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--images", Message: err.Error()}}}
	}
	if rel, err := filepath.Rel(i, o); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		what := "is inside"
		if rel == "." {
			what = "is"
		}
		return &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--out", Message: fmt.Sprintf("%s %s --images %s: its outputs would be taken for inputs by the next run (and paid for); give a directory outside it", out, what, images)}}}
	}
	return nil
}

// resolve makes path absolute with its symbolic links followed, as far as
// it exists (an --out not made yet resolves through its parent).
func resolve(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	rest := ""
	for p := abs; ; {
		real, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(real, rest), nil
		}
		parent := filepath.Dir(p)
		if parent == p || !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

func isImageFile(path string) bool {
	f, err := regular.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	_, ok := media.Sniff(head[:n])
	return ok
}

// manifestJobs reads a JSON Lines manifest: every line is decoded (no
// unknown field), and every job checked, before anything is sent. Only a
// regular file is read (a FIFO or a device is refused at once, never
// waited on), and the read ends when ctx does.
func manifestJobs(ctx context.Context, path string) ([]batch.Job, []string, error) {
	f, err := regular.Open(path)
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), "open ", "")
		if errors.Is(err, regular.ErrNotRegular) {
			msg += ": write the manifest to a file first"
		}
		return nil, nil, &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--manifest", Message: msg}}}
	}
	defer f.Close()
	return readManifest(ctx, f, path)
}

// readManifest is manifestJobs on r, the manifest at path (its images'
// paths are relative to path's directory).
func readManifest(ctx context.Context, r io.Reader, path string) ([]batch.Job, []string, error) {
	base := filepath.Dir(path)
	var jobs []batch.Job
	var where []string
	var fields []wrapper.FieldError
	br := bufio.NewReaderSize(ctxReader{ctx, r}, 64<<10)
	for n := 1; ; n++ {
		line, rerr := readLine(br, manifestLineMax)
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if errors.Is(rerr, errLineTooLong) {
			// Refused as soon as it is too long, not once it is all read.
			fields = append(fields, wrapper.FieldError{Field: fmt.Sprintf("--manifest line %d", n), Message: fmt.Sprintf("longer than %d MiB", manifestLineMax>>20)})
			return nil, nil, &wrapper.InputError{Fields: fields}
		}
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return nil, nil, &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--manifest", Message: rerr.Error()}}}
		}
		if t := bytes.TrimSpace(line); len(t) > 0 {
			at := fmt.Sprintf("--manifest line %d", n)
			dec := json.NewDecoder(bytes.NewReader(t))
			dec.DisallowUnknownFields()
			var m manifestLine
			switch err := dec.Decode(&m); {
			case err != nil:
				fields = append(fields, wrapper.FieldError{Field: at, Message: "not a JSON object of image, prompt, id and input fields: " + err.Error()})
			case m.ImageURL != "":
				fields = append(fields, wrapper.FieldError{Field: at + ": image_url", Message: "use image (a path relative to the manifest, or an http(s) URL)"})
			case m.Image == "":
				fields = append(fields, wrapper.FieldError{Field: at + ": image", Message: "is required: a path relative to the manifest, or an http(s) URL"})
			default:
				job := batch.Job{ID: m.ID, Input: m.Input}
				switch {
				case strings.HasPrefix(m.Image, "http://"), strings.HasPrefix(m.Image, "https://"), strings.HasPrefix(m.Image, "data:"):
					job.Input.ImageURL = m.Image
				case filepath.IsAbs(m.Image):
					job.ImageFile = m.Image
				default:
					job.ImageFile = filepath.Join(base, m.Image)
				}
				if job.ID == "" {
					name := m.Image
					if i := strings.IndexAny(name, "?#"); i >= 0 && !strings.HasPrefix(name, "data:") {
						name = name[:i]
					}
					name = filepath.Base(filepath.FromSlash(name))
					job.ID = strings.TrimSuffix(name, filepath.Ext(name))
				}
				jobs = append(jobs, job)
				where = append(where, at)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
	}
	if len(fields) > 0 {
		return nil, nil, &wrapper.InputError{Fields: fields}
	}
	if len(jobs) == 0 {
		return nil, nil, &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "--manifest", Message: path + " holds no job"}}}
	}
	return jobs, where, nil
}

// ctxReader is r that reads no more once ctx has ended.
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

// manifestLineMax is the longest manifest line accepted (a seam for the
// tests): 64 MiB, room for an inline data URI image.
var manifestLineMax = 64 << 20

var errLineTooLong = errors.New("line too long")

// readLine reads one line, its newline included, of at most max bytes: a
// longer one is errLineTooLong as soon as max bytes are read, so memory
// stays bounded whatever the file holds.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, errLineTooLong
		}
		line = append(line, frag...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
	}
}

// batchSummary prints what the batch did and returns the exit code.
func (a *app) batchSummary(sum batch.Summary, runErr error, total int, interrupted bool) int {
	notStarted := total - sum.Done - sum.Failed - sum.Skipped - sum.Unknown
	if a.asJSON {
		failures := make([]map[string]string, len(sum.Failures))
		for i, f := range sum.Failures {
			failures[i] = map[string]string{"id": f.ID, "request_id": f.RequestID, "error": errorText(f.Err.Error())}
		}
		line, _ := json.Marshal(map[string]any{"summary": true, "total": total, "done": sum.Done, "failed": sum.Failed,
			"skipped": sum.Skipped, "outcome_unknown": sum.Unknown, "possible_duplicates": sum.PossibleDuplicates, "settled": sum.Settled,
			"not_started": notStarted, "billable_units": sum.BillableUnits, "earlier_billable_units": sum.EarlierBillableUnits, "failures": failures})
		fmt.Fprintf(a.stdout, "%s\n", line)
	}
	w := a.stderr
	fmt.Fprintf(w, "fluxi2i: batch: %d done, %d failed, %d skipped (done before), %d possible duplicates", sum.Done, sum.Failed+sum.Unknown, sum.Skipped, sum.PossibleDuplicates)
	if sum.Settled > 0 {
		fmt.Fprintf(w, ", %d found in the request history (lost submits, not sent again)", sum.Settled)
	}
	if sum.BillableUnits > 0 || sum.EarlierBillableUnits > 0 {
		fmt.Fprintf(w, ", %g billable units in this run", sum.BillableUnits)
		if sum.EarlierBillableUnits > 0 {
			fmt.Fprintf(w, " (and %g in earlier runs)", sum.EarlierBillableUnits)
		}
	}
	if notStarted > 0 {
		fmt.Fprintf(w, ", %d not started", notStarted)
	}
	fmt.Fprintln(w)
	code := exitOK
	for _, f := range sum.Failures {
		fmt.Fprintf(w, "  %s: %s\n", printable(f.ID), errorText(f.Err.Error()))
		var apiErr *wrapper.APIError
		switch {
		case errors.As(f.Err, &apiErr) && code != exitInterupt:
			code = exitAPI
		case code == exitOK:
			code = exitFailure
		}
	}
	if interrupted || runErr != nil || notStarted > 0 {
		fmt.Fprintln(w, "fluxi2i: run the same command again to resume: finished jobs are skipped, jobs in flight are picked up by their request id")
		if runErr != nil && !errors.Is(runErr, context.Canceled) && !errors.Is(runErr, context.DeadlineExceeded) {
			for _, l := range errorLines(runErr) {
				fmt.Fprintln(w, "fluxi2i:", errorText(l))
			}
			return exitFailure
		}
		return exitInterupt
	}
	return code
}

// batchProgress shows the batch's progress: a live bar on a terminal, a
// plain line every few seconds otherwise; with --json, a JSON line per
// finished job on stdout. When requests keep failing (the server went
// away), both say what fails and since when, and show no ETA.
type batchProgress struct {
	a       *app
	bar     *progressbar.ProgressBar
	start   time.Time
	failing failing

	mu   sync.Mutex
	last batch.Progress
	done chan struct{}
	wg   sync.WaitGroup
}

func newBatchProgress(a *app, total int, f failing) *batchProgress {
	p := &batchProgress{a: a, start: time.Now(), failing: f, done: make(chan struct{})}
	every := progressEvery
	if isTerminal(a.stderr) {
		p.bar = progressbar.NewOptions(total,
			progressbar.OptionSetWriter(a.stderr),
			progressbar.OptionSetDescription("batch"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("jobs"),
			progressbar.OptionSetPredictTime(false), // the description has the ETA, or why there is none
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		every = time.Second // the description follows a failing server between jobs' ends
	}
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if p.bar != nil {
					p.bar.Describe(p.barText(time.Now()))
				} else {
					p.plain()
				}
			case <-p.done:
				return
			}
		}
	})
	return p
}

func (p *batchProgress) update(pr batch.Progress) {
	p.mu.Lock()
	p.last = pr
	p.mu.Unlock()
	if p.bar != nil {
		p.bar.Describe(p.barText(time.Now()))
		p.bar.Set(pr.Done + pr.Failed + pr.Skipped)
	}
}

// eta is the time left at the rate so far, or "" before any job ended.
func (p *batchProgress) eta(pr batch.Progress, now time.Time) (rate float64, eta string) {
	finished := pr.Done + pr.Failed
	el := now.Sub(p.start)
	if finished == 0 || el <= 0 {
		return 0, ""
	}
	rate = float64(finished) / el.Seconds()
	left := pr.Total - finished - pr.Skipped
	return rate, (time.Duration(float64(left)/rate) * time.Second).Round(time.Second).String()
}

// barText is the bar's description at now.
func (p *batchProgress) barText(now time.Time) string {
	p.mu.Lock()
	pr := p.last
	p.mu.Unlock()
	text := fmt.Sprintf("batch: %d in flight, %d failed", pr.InFlight, pr.Failed)
	if note := failingNote(p.failing, now); note != "" {
		return text + ", " + note
	}
	if _, eta := p.eta(pr, now); eta != "" {
		text += ", ETA " + eta
	}
	return text
}

// plainText is the plain progress line at now.
func (p *batchProgress) plainText(now time.Time) string {
	p.mu.Lock()
	pr := p.last
	p.mu.Unlock()
	line := fmt.Sprintf("fluxi2i: batch: %d/%d done, %d in flight, %d failed, %d skipped", pr.Done+pr.Skipped, pr.Total, pr.InFlight, pr.Failed, pr.Skipped)
	if note := failingNote(p.failing, now); note != "" {
		return line + ", " + note // no ETA as if all were well
	}
	if rate, eta := p.eta(pr, now); eta != "" {
		line += fmt.Sprintf(", %.2f jobs/s, ETA %s", rate, eta)
	}
	return line
}

// plain prints one progress line.
func (p *batchProgress) plain() { fmt.Fprintln(p.a.stderr, p.plainText(time.Now())) }

func (p *batchProgress) outcome(o batch.Outcome) {
	if !p.a.asJSON {
		return
	}
	rec := map[string]any{"id": o.ID, "request_id": o.RequestID, "files": o.Files}
	if o.Skipped {
		rec["skipped"] = true
	}
	if o.PossibleDuplicate {
		rec["possible_duplicate"] = true
	}
	if o.Settled {
		rec["settled"] = true
	}
	if o.BillableUnits > 0 {
		rec["billable_units"] = o.BillableUnits
	}
	if o.Err != nil {
		rec["error"] = errorText(o.Err.Error())
	}
	line, _ := json.Marshal(rec)
	fmt.Fprintf(p.a.stdout, "%s\n", line)
}

func (p *batchProgress) finish() {
	close(p.done)
	p.wg.Wait()
	if p.bar != nil {
		p.bar.Finish()
		return
	}
	p.plain()
}
