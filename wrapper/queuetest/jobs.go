package queuetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
)

// Model produces the images of one job from its input. Return a
// *ModelError to make the result call answer a model failure.
type Model func(ctx context.Context, requestID string, in gen.Input) ([]Rendering, error)

// Rendering is one output image of a Model.
type Rendering struct {
	ContentType   string // "image/jpeg" or "image/png"
	Data          []byte
	Width, Height int
}

// ModelError is a model failure: the result call answers StatusCode (422
// by default) with Detail as the body's detail (a string, or with Field set
// a one-entry list naming body.Field).
type ModelError struct {
	StatusCode int
	Field      string
	Detail     string
}

// Error describes the failure.
func (e *ModelError) Error() string { return fmt.Sprintf("model error %d: %s", e.StatusCode, e.Detail) }

var placeholders struct {
	once      sync.Once
	png, jpeg []byte
}

// PlaceholderModel is the default Model: num_images copies of an 8x8 image
// in the requested format.
func PlaceholderModel(_ context.Context, _ string, in gen.Input) ([]Rendering, error) {
	placeholders.once.Do(func() {
		img := image.NewRGBA(image.Rect(0, 0, 8, 8))
		for i := range img.Pix {
			img.Pix[i] = byte(i * 7)
		}
		img.Set(0, 0, color.RGBA{255, 0, 0, 255})
		var p, j bytes.Buffer
		png.Encode(&p, img)
		jpeg.Encode(&j, img, nil)
		placeholders.png, placeholders.jpeg = p.Bytes(), j.Bytes()
	})
	n := 1
	if in.NumImages != nil {
		n = *in.NumImages
	}
	im := Rendering{ContentType: "image/jpeg", Data: placeholders.jpeg, Width: 8, Height: 8}
	if in.OutputFormat != nil && *in.OutputFormat == gen.InputOutputFormatPng {
		im = Rendering{ContentType: "image/png", Data: placeholders.png, Width: 8, Height: 8}
	}
	out := make([]Rendering, n)
	for i := range out {
		out[i] = im
	}
	return out, nil
}

type job struct {
	id        string
	fileKey   string // the unguessable part of its image URLs
	client    string // who submitted it (clientOf)
	in        gen.Input
	raw       []byte // the body as received, for the history; nil with X-Fal-Store-IO: 0
	urlInRaw  bool   // in.ImageURL was dropped: it is read from raw (one copy held, not two)
	submitted time.Time
	cancelled atomic.Int64 // unix nanoseconds of a cancel before it completed; 0: none (read without the lock by phaseOf)
	resultAt  time.Time    // first result request
	held      int64        // bytes counted against the budget for it; s.mu

	ctx  context.Context // ends when the job is cancelled or evicted
	stop context.CancelFunc

	done   chan struct{} // closed when the model has run: images, units, err set
	images []Rendering   // nil for a sync_mode job once its result is encoded
	units  int           // images made: what the job is billed
	err    error

	syncMu   sync.Mutex
	syncBody []byte // the encoded sync_mode result, made once
}

// outcome is the model's error for j, once it has run.
func (j *job) outcome() (err error, ok bool) {
	select {
	case <-j.done:
		return j.err, true
	default:
		return nil, false
	}
}

// imageURLOf reads image_url from a submit body.
func imageURLOf(raw []byte) string {
	var v struct {
		ImageURL string `json:"image_url"`
	}
	json.Unmarshal(raw, &v)
	return v.ImageURL
}

// cancelledAt is when j was cancelled (zero: never).
func (j *job) cancelledAt() time.Time {
	if n := j.cancelled.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// endedAt is when j stopped changing: cancelled, or completed; zero while
// it runs.
func (s *Server) endedAt(j *job, now time.Time) time.Time {
	if j.cancelled.Load() != 0 {
		return j.cancelledAt()
	}
	if end := j.submitted.Add(s.cfg.queueTime + s.cfg.runTime); !end.After(now) {
		return end
	}
	return time.Time{}
}

// evict forgets the jobs that ended more than the retention time ago,
// their inputs and images with them. s.mu is held.
func (s *Server) evict(now time.Time) {
	if s.cfg.retention <= 0 {
		return
	}
	for id, j := range s.jobs {
		if end := s.endedAt(j, now); !end.IsZero() && now.Sub(end) > s.cfg.retention {
			s.forget(j)
			delete(s.jobs, id)
		}
	}
}

// forget stops j and gives back what it held. s.mu is held.
func (s *Server) forget(j *job) {
	j.stop()
	delete(s.files, j.fileKey)
	s.budget.release(j.client, j.held)
	j.held = 0
	s.budget.dropJob(j.client)
}

// hold counts n more bytes (or fewer, n < 0) for j, when they fit.
func (s *Server) hold(j *job, n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, live := s.jobs[j.id]; !live {
		return false // evicted meanwhile: nothing to hold for
	}
	if n < 0 {
		s.budget.release(j.client, -n)
	} else if !s.budget.take(j.client, n) {
		return false
	}
	j.held += n
	return true
}

// phase is a job's state at one instant.
type phase struct {
	status    gen.JobStatus
	position  int // IN_QUEUE only
	logs      int // log lines emitted so far
	cancelled bool
	next      time.Time // when the state changes next; zero when final
}

func (s *Server) phaseOf(j *job, now time.Time) phase {
	qt, rt := s.cfg.queueTime, s.cfg.runTime
	qEnd := j.submitted.Add(qt)
	rEnd := qEnd.Add(rt)
	if j.cancelled.Load() != 0 && !j.cancelledAt().After(now) {
		return phase{status: gen.JobStatusCompleted, logs: s.logsAt(j, j.cancelledAt()), cancelled: true}
	}
	switch {
	case now.Before(qEnd):
		// Three positions over the queue time: 2, 1, 0.
		step := qt / 3
		if step <= 0 {
			return phase{status: gen.JobStatusInQueue, next: qEnd}
		}
		k := int(now.Sub(j.submitted) / step)
		return phase{status: gen.JobStatusInQueue, position: max(2-k, 0), next: minTime(j.submitted.Add(time.Duration(k+1)*step), qEnd)}
	case now.Before(rEnd):
		n := s.logsAt(j, now)
		next := rEnd
		if s.cfg.logLines > 0 && n < s.cfg.logLines {
			next = minTime(qEnd.Add(time.Duration(n)*rt/time.Duration(s.cfg.logLines)), rEnd)
		}
		return phase{status: gen.JobStatusInProgress, logs: n, next: next}
	}
	return phase{status: gen.JobStatusCompleted, logs: s.cfg.logLines}
}

// logsAt is how many log lines the job has emitted at t: one when it
// starts running and the rest evenly over its run time.
func (s *Server) logsAt(j *job, t time.Time) int {
	start := j.submitted.Add(s.cfg.queueTime)
	if t.Before(start) || s.cfg.logLines == 0 {
		return 0
	}
	if s.cfg.runTime <= 0 {
		return s.cfg.logLines
	}
	n := 1 + int(int64(t.Sub(start))*int64(s.cfg.logLines)/int64(s.cfg.runTime))
	return min(n, s.cfg.logLines)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (s *Server) logEntries(j *job, from, to int) []gen.LogEntry {
	out := make([]gen.LogEntry, 0, max(to-from, 0))
	start := j.submitted.Add(s.cfg.queueTime)
	for i := from; i < to; i++ {
		ts := start.Add(time.Duration(i) * s.cfg.runTime / time.Duration(max(s.cfg.logLines, 1))).UTC().Format(time.RFC3339Nano)
		level, source := "INFO", "USER"
		out = append(out, gen.LogEntry{
			Message:   fmt.Sprintf("step %d/%d", i+1, s.cfg.logLines),
			Level:     &level,
			Source:    &source,
			Timestamp: &ts,
		})
	}
	return out
}

// render runs the model for j, once, from its submit on; its outputs are
// counted against the budget as j's. The model finds the budget in its
// context (Reserve).
func (s *Server) render(j *job) {
	defer s.renders.Done()
	defer close(j.done)
	s.mu.Lock()
	in := j.in
	s.mu.Unlock()
	ctx := context.WithValue(j.ctx, budgetKey{}, s.budget)
	if j.urlInRaw {
		// A second copy of image_url while the model reads it, in the room
		// the job holds for it since its submit.
		in.ImageURL = imageURLOf(j.raw)
	}
	n := len(in.ImageURL)
	// An uploaded file, read as fal's runner would (its bytes reserved).
	in, release := s.resolveUpload(ctx, in)
	// Like the real server, pick the seed when the input has none, so the
	// seed the result reports reproduces the images.
	seed := seedOf(j)
	in.Seed = &seed
	images, err := s.cfg.model(ctx, j.id, in)
	release()
	in.ImageURL = ""
	if j.urlInRaw {
		s.hold(j, -int64(len(j.raw))) // the model's copy is gone
	} else {
		// The only copy of image_url: no longer needed.
		s.mu.Lock()
		j.in.ImageURL = ""
		s.mu.Unlock()
		s.hold(j, -int64(n))
	}
	if err == nil {
		var n int64
		for _, im := range images {
			n += int64(len(im.Data))
		}
		if !s.hold(j, n) {
			images, err = nil, fmt.Errorf("%w for the outputs (%d MiB)", ErrNoRoom, mib(n))
		}
	}
	j.images, j.units, j.err = images, len(images), err
}

// dropImages forgets the outputs of a sync_mode job, whose result holds
// them encoded (j.syncMu held).
func (j *job) dropImages() { j.images = nil }

// output waits for the model's outputs of j.
func (s *Server) output(ctx context.Context, j *job) ([]Rendering, error) {
	select {
	case <-j.done:
		return j.images, j.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// seedOf is the input's seed, or one derived from the request id: large
// (above 2^53) on purpose, as real seeds can be.
func seedOf(j *job) int64 {
	if j.in.Seed != nil {
		return *j.in.Seed
	}
	h := fnv.New64a()
	h.Write([]byte(j.id))
	return int64(h.Sum64() >> 1)
}
