package queuetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/inputcheck"
	"github.com/fluxi2i/fluxi2i/internal/media"
)

// routes registers the spec's operations where gen says (its generated
// net/http routes, below the base path), and the fake CDN.
func (s *Server) routes() *http.ServeMux {
	m := http.NewServeMux()
	gen.HandlerWithOptions(operations{s}, gen.StdHTTPServerOptions{
		BaseURL:          s.cfg.basePath,
		BaseRouter:       m,
		ErrorHandlerFunc: badRequest,
	})
	if s.cfg.basePath != "" {
		// The history and the storage live on the origin's root, not below
		// the base path.
		root := http.NewServeMux()
		gen.HandlerWithOptions(operations{s}, gen.StdHTTPServerOptions{
			BaseRouter:       root,
			ErrorHandlerFunc: badRequest,
		})
		for _, p := range rootPaths() {
			m.Handle(p, root)
		}
	}
	s.storageRoutes(m)
	m.HandleFunc("GET /files/{key}/{name}", s.file)
	s.routeWebhooks(m)
	return m
}

// badRequest answers a request gen's routes could not parse.
func badRequest(w http.ResponseWriter, _ *http.Request, err error) {
	write(w, platformError(http.StatusBadRequest, err.Error()))
}

// operations serves the spec's operations (gen.ServerInterface).
type operations struct{ s *Server }

func (o operations) Submit(w http.ResponseWriter, r *http.Request, _ gen.SubmitParams) {
	o.s.api(OpSubmit, o.s.submit)(w, r)
}

func (o operations) GetStatus(w http.ResponseWriter, r *http.Request, _ gen.RequestID, _ gen.GetStatusParams) {
	o.s.api(OpStatus, o.s.status)(w, r)
}

func (o operations) StreamStatus(w http.ResponseWriter, r *http.Request, _ gen.RequestID, _ gen.StreamStatusParams) {
	o.s.apiStream(w, r)
}

func (o operations) GetResult(w http.ResponseWriter, r *http.Request, _ gen.RequestID) {
	o.s.api(OpResult, o.s.result)(w, r)
}

func (o operations) Cancel(w http.ResponseWriter, r *http.Request, _ gen.RequestID) {
	o.s.api(OpCancel, o.s.cancel)(w, r)
}

// answer is what an operation replies; the fault machinery may mangle it.
type answer struct {
	code   int
	header http.Header
	body   []byte
}

func jsonAnswer(code int, v any) answer {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return answer{code: code, header: http.Header{"Content-Type": {"application/json"}}, body: b}
}

// platformError is fal's error body, with the error_type fal gives the
// code (in the body and in X-Fal-Error-Type) when it has one.
func platformError(code int, detail string) answer {
	body := gen.PlatformError{Detail: &detail}
	t := errorTypeFor(code)
	if t != "" {
		body.ErrorType = &t
	}
	a := jsonAnswer(code, body)
	if t != "" {
		a.header.Set("X-Fal-Error-Type", t)
	}
	return a
}

func ptr[T any](v T) *T { return &v }

// exchange is one API request being served: what its answer is checked
// against, and where it goes.
type exchange struct {
	s     *Server
	w     http.ResponseWriter
	r     *http.Request
	check func(code int, header http.Header, body []byte) error // nil without a Contract

	client   string // clientOf(r)
	reserved int64  // budget bytes the request holds (a submit's body); given back when it is served
}

// done gives back what the request still holds of the budget.
func (x *exchange) done() {
	x.s.budget.release(x.client, x.reserved)
	x.reserved = 0
}

// tooMany is fal's 429 for a cap of the server, with Retry-After.
func (s *Server) tooMany(detail string, retryAfter time.Duration) answer {
	s.stats.refused.Add(1)
	a := platformError(http.StatusTooManyRequests, detail)
	a.header.Set("Retry-After", strconv.Itoa(int(max(retryAfter, time.Second).Seconds())))
	return a
}

// jobRetry is the Retry-After of a refusal that waits for jobs to expire.
func (s *Server) jobRetry() time.Duration { return max(s.cfg.retention/10, time.Second) }

// bytesRetry is the Retry-After of a refusal for bytes: renders end and
// results are fetched within seconds.
const bytesRetry = 5 * time.Second

// reply checks the answer against the contract, when there is one (a
// violation is recorded: the fake must not teach clients wrong habits),
// then writes it.
func (x *exchange) reply(a answer) {
	if x.check != nil {
		if err := x.check(a.code, a.header, a.body); err != nil {
			x.s.violation(fmt.Errorf("queuetest answered off the spec: %w", err))
		}
	}
	write(x.w, a)
}

func (s *Server) violation(err error) {
	s.stats.violations.Add(1)
	s.mu.Lock()
	s.violations = append(s.violations, err.Error())
	s.mu.Unlock()
}

// admit counts the request, checks its credential (before reading a
// byte of the body), reads the body through the size cap and checks the
// request against the contract, when there is one. It answers a refusal
// itself and returns nil when the request must not be served.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, op Op) (*exchange, []byte) {
	return s.admitAs(w, r, op, true)
}

// admitAs is admit; without needsKey the request is served whatever its
// credential (an upload to its unguessable URL).
func (s *Server) admitAs(w http.ResponseWriter, r *http.Request, op Op, needsKey bool) (*exchange, []byte) {
	switch op {
	case OpSubmit:
		s.stats.submits.Add(1)
	case OpStatus:
		s.stats.status.Add(1)
	case OpStream:
		s.stats.stream.Add(1)
	case OpResult:
		s.stats.result.Add(1)
	case OpCancel:
		s.stats.cancel.Add(1)
	case OpHistory:
		s.stats.history.Add(1)
	case OpStorage:
		s.stats.storage.Add(1)
	}
	x := &exchange{s: s, w: w, r: r, client: clientOf(r)}
	if needsKey && !s.authorized(r) {
		s.stats.unauthorized.Add(1)
		x.reply(platformError(http.StatusUnauthorized, "Invalid or missing credentials"))
		return nil, nil
	}
	tooBig := func() {
		x.done()
		x.reply(platformError(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", s.cfg.maxBody)))
	}
	if r.ContentLength > s.cfg.maxBody {
		tooBig()
		return nil, nil
	}
	if op == OpSubmit {
		if a, ok := s.admitSubmit(x); !ok {
			x.reply(a)
			return nil, nil
		}
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		var b []byte
		var err error
		lr := http.MaxBytesReader(w, r.Body, s.cfg.maxBody)
		if r.ContentLength >= 0 {
			// Read into exactly its size: no buffer doubling, no garbage.
			b = make([]byte, r.ContentLength)
			_, err = io.ReadFull(lr, b)
		} else if op == OpSubmit {
			var refusal *answer
			if b, refusal, err = s.readReserved(x, lr); refusal != nil {
				x.done()
				x.reply(*refusal)
				return nil, nil
			}
		} else {
			b, err = io.ReadAll(lr)
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooBig()
			return nil, nil
		}
		if err != nil {
			x.done()
			return nil, nil
		}
		body = b
		if op == OpSubmit {
			// Now that the size is known: the body and one decoded copy.
			s.budget.release(x.client, x.reserved-2*int64(len(body)))
			x.reserved = 2 * int64(len(body))
		}
	}
	if s.cfg.contract != nil {
		check, err := s.cfg.contract.Request(r, body)
		x.check = check
		if err != nil {
			s.violation(err)
			if op == OpSubmit {
				x.reply(validationAnswer(body, err))
			} else {
				x.reply(platformError(http.StatusBadRequest, err.Error()))
			}
			x.done()
			return nil, nil
		}
	}
	return x, body
}

// neverFits is the 413 of a body that no state of the server could hold.
func (s *Server) neverFits(size int64) answer {
	return platformError(http.StatusRequestEntityTooLarge, fmt.Sprintf("a body of %d MiB needs %d MiB here, more than a client may ever hold (%d MiB of a %d MiB memory budget): send a smaller image",
		mib(size), mib(2*size), mib(s.budget.room()), mib(s.cfg.maxBytes)))
}

// readChunk is the step in which a body of unknown length is read.
const readChunk = 256 << 10

// readReserved reads a submit body of unknown length, reserving twice
// its buffer as it grows; past the room of the budget it returns the
// refusal to answer.
func (s *Server) readReserved(x *exchange, r io.Reader) (b []byte, refusal *answer, err error) {
	var buf bytes.Buffer
	chunk := make([]byte, readChunk)
	for {
		n, err := r.Read(chunk)
		// Past the body cap the reader fails: never reserve beyond it.
		if want := min(2*int64(buf.Len()+n), 2*s.cfg.maxBody); want > x.reserved {
			if s.budget.never(want) {
				a := s.neverFits(want / 2)
				return nil, &a, nil
			}
			if !s.budget.admit(x.client, want-x.reserved) {
				a := s.tooMany(fmt.Sprintf("the server's memory budget (%d MiB, %d MiB a client) has no room for this body now: try again shortly",
					mib(s.cfg.maxBytes), mib(s.cfg.maxBytesPerClient)), bytesRetry)
				return nil, &a, nil
			}
			x.reserved = want
		}
		buf.Write(chunk[:n])
		if err == io.EOF {
			return buf.Bytes(), nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
}

// admitSubmit applies the caps before a submit's body is read: the jobs
// held (MaxJobs, a client's share), then the bytes: the body and one
// decoded copy of it are reserved, by its Content-Length or, without one,
// by the body cap.
func (s *Server) admitSubmit(x *exchange) (answer, bool) {
	s.mu.Lock()
	s.evict(time.Now())
	n := len(s.jobs)
	s.mu.Unlock()
	if s.cfg.maxJobs > 0 && n >= s.cfg.maxJobs {
		return s.tooMany(fmt.Sprintf("the server holds %d jobs, its limit: try again when some have expired", s.cfg.maxJobs), s.jobRetry()), false
	}
	if c := s.cfg.maxJobsPerClient; c > 0 && s.budget.jobsOf(x.client) >= c {
		return s.tooMany(fmt.Sprintf("this client holds %d jobs, its share of the server: try again when some have expired", c), s.jobRetry()), false
	}
	size := int64(readChunk) // a body of unknown length reserves as it grows (readReserved)
	if x.r.ContentLength >= 0 {
		size = x.r.ContentLength
	}
	// The body, and room for one copy of its image: the model's (or the
	// decoded input's, with X-Fal-Store-IO: 0).
	if s.budget.never(2 * size) {
		return s.neverFits(size), false
	}
	if !s.budget.admit(x.client, 2*size) {
		return s.tooMany(fmt.Sprintf("the server's memory budget (%d MiB, %d MiB a client) has no room for a body of %d MiB now: try again shortly",
			mib(s.cfg.maxBytes), mib(s.cfg.maxBytesPerClient), mib(size)), bytesRetry), false
	}
	x.reserved = 2 * size
	return answer{}, true
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || cred == "" || (!strings.EqualFold(scheme, "Bearer") && !strings.EqualFold(scheme, "Key")) {
		return false
	}
	return s.cfg.apiKey == "" || cred == s.cfg.apiKey
}

// validationAnswer is fal's 422: one detail entry per bad field of body
// (the spec's generated validation and image_url's form, the check the
// client makes too: internal/inputcheck), or the reason as one message.
// body is checked as sent: like fal's enums, the spec's have no "default"
// (the client leaves such a field out).
func validationAnswer(body []byte, reason error) answer {
	var in gen.Input
	if err := json.Unmarshal(body, &in); err != nil {
		return jsonAnswer(http.StatusUnprocessableEntity, map[string]any{"detail": "the body is not a valid input: " + err.Error()})
	}
	if bad := inputcheck.Input(&in); len(bad) > 0 {
		items := make([]map[string]any, 0, len(bad))
		for _, v := range bad {
			items = append(items, map[string]any{"loc": []string{"body", v.Field}, "msg": v.Message, "type": "value_error"})
		}
		return jsonAnswer(http.StatusUnprocessableEntity, map[string]any{"detail": items})
	}
	msg := "the request is not valid"
	if reason != nil {
		msg = reason.Error()
	}
	return jsonAnswer(http.StatusUnprocessableEntity, map[string]any{"detail": msg})
}

// api wraps one JSON operation with admission and faults.
func (s *Server) api(op Op, act func(x *exchange, body []byte) answer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		x, body := s.admit(w, r, op)
		if x == nil {
			return
		}
		defer x.done()
		f := s.popFault(op)
		if x.answered(f) {
			return
		}
		a := act(x, body)
		if f != nil && f.noID {
			a.header.Del("X-Fal-Request-Id")
		}
		if f != nil {
			switch f.kind {
			case faultDropAfter:
				drop(w)
				return
			case faultTruncate:
				for k, vs := range a.header {
					w.Header()[k] = vs
				}
				w.Header().Set(FaultHeader, "truncated")
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", strconv.Itoa(len(a.body)))
				w.WriteHeader(a.code)
				w.Write(a.body[:len(a.body)/2])
				if fl, ok := w.(http.Flusher); ok {
					fl.Flush()
				}
				panic(http.ErrAbortHandler)
			case faultComeBack:
				a.header.Set("Retry-After", f.retryAfter)
			case faultGarble:
				// The body is broken; the headers (X-Fal-Request-Id) survive.
				a.code = http.StatusOK
				a.header.Set(FaultHeader, "garbled")
				a.body = []byte(`{"status": "IN_QUEUE", "request_id": `)
			}
		}
		x.reply(a)
	}
}

// answered applies the faults that strike before the server acts (a slow
// answer, a dropped connection, an error status) and reports whether the
// request is done with.
func (x *exchange) answered(f *Fault) bool {
	if f == nil {
		return false
	}
	switch f.kind {
	case faultSlow:
		t := time.NewTimer(f.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-x.r.Context().Done():
			return true
		}
	case faultDropBefore:
		drop(x.w)
		return true
	case faultStatus:
		x.reply(faultAnswer(f))
		return true
	}
	return false
}

func faultAnswer(f *Fault) answer {
	a := platformError(f.code, http.StatusText(f.code)+" (injected by queuetest)")
	if f.plain {
		a = jsonAnswer(f.code, gen.PlatformError{Detail: ptr(http.StatusText(f.code) + " (injected by queuetest)")})
	}
	if f.userTimeout {
		a.header.Set("X-Fal-Request-Timeout-Type", "user")
	}
	if f.retryAfter != "" {
		a.header.Set("Retry-After", f.retryAfter)
	}
	if f.retryable != "" {
		a.header.Set("X-Fal-Retryable", f.retryable)
	}
	return a
}

func write(w http.ResponseWriter, a answer) {
	for k, vs := range a.header {
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(a.code)
	w.Write(a.body)
}

// drop closes the connection without an answer.
func drop(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// origin is the scheme://host[/base] job URLs are built on.
func (s *Server) origin(r *http.Request) string {
	if s.foreign.Load() {
		if s.ForeignURL != "" {
			return s.ForeignURL + s.cfg.basePath
		}
		return "https://" + PipeForeignHost + s.cfg.basePath
	}
	return s.root(r) + s.cfg.basePath
}

// urls are the job's URLs, as gen's request builders make them.
func (s *Server) urls(r *http.Request, id string) (status, result, cancel string) {
	origin := s.origin(r) + "/"
	build := func(req *http.Request, err error) string {
		if err != nil {
			return ""
		}
		return req.URL.String()
	}
	return build(gen.NewGetStatusRequest(origin, id, nil)), build(gen.NewGetResultRequest(origin, id)), build(gen.NewCancelRequest(origin, id))
}

// inputSansImage decodes a submit body without copying its image_url
// (the outer field hides the embedded one): the body keeps it.
type inputSansImage struct {
	gen.Input
	ImageURL presence `json:"image_url"`
}

// presence records that a JSON string value was there and not empty.
type presence bool

func (p *presence) UnmarshalJSON(b []byte) error {
	*p = presence(string(b) != `""` && string(b) != "null")
	return nil
}

func (s *Server) submit(x *exchange, body []byte) answer {
	r := x.r
	store := r.Header.Get("X-Fal-Store-IO") != "0"
	var in gen.Input
	var err error
	var hasImage presence
	if store {
		var v inputSansImage
		err = json.Unmarshal(body, &v)
		in, hasImage = v.Input, v.ImageURL
	} else {
		err = json.Unmarshal(body, &in)
	}
	if err != nil {
		return jsonAnswer(http.StatusUnprocessableEntity, map[string]any{"detail": err.Error()})
	}
	now := time.Now()
	ctx, cancelJob := context.WithCancel(context.Background())
	j := &job{id: newID(), fileKey: newKey(), client: x.client, in: in, submitted: now, ctx: ctx, stop: cancelJob, done: make(chan struct{})}
	// One copy of the input is held: the body as received, for the history,
	// or, with X-Fal-Store-IO: 0, the decoded input alone. Until the model
	// has run, the job also holds room for the copy of image_url it reads
	// from the body.
	if store {
		j.raw = body
		j.held = int64(len(body))
		if hasImage {
			j.urlInRaw = true
			j.held *= 2
		}
	} else {
		j.held = int64(len(in.ImageURL) + len(in.Prompt))
	}
	s.mu.Lock()
	if s.cfg.maxJobs > 0 && len(s.jobs) >= s.cfg.maxJobs {
		s.mu.Unlock()
		cancelJob()
		return s.tooMany(fmt.Sprintf("the server holds %d jobs, its limit: try again when some have expired", s.cfg.maxJobs), s.jobRetry())
	}
	if !s.budget.addJob(x.client, s.cfg.maxJobsPerClient) {
		s.mu.Unlock()
		cancelJob()
		return s.tooMany(fmt.Sprintf("this client holds %d jobs, its share of the server: try again when some have expired", s.cfg.maxJobsPerClient), s.jobRetry())
	}
	// The job takes over its share of the request's reservation.
	x.reserved -= j.held
	s.jobs[j.id] = j
	s.files[j.fileKey] = j
	s.renders.Add(1)
	s.mu.Unlock()
	go s.render(j)
	s.stats.jobs.Add(1)
	s.scheduleWebhook(r, j)
	ph := s.phaseOf(j, now)
	st, res, cancel := s.urls(r, j.id)
	a := jsonAnswer(http.StatusOK, gen.Enqueued{
		Status: ptr(string(gen.JobStatusInQueue)), RequestID: j.id,
		StatusURL: &st, ResponseURL: &res, CancelURL: &cancel,
		QueuePosition: ptr(ph.position),
	})
	a.header.Set("X-Fal-Request-Id", j.id)
	return a
}

func (s *Server) lookup(r *http.Request) *job {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobs[r.PathValue("request_id")]
}

// statusBody is the QueueStatus of j at now; logs from..to are included
// when withLogs.
func (s *Server) statusBody(r *http.Request, j *job, ph phase, withLogs bool, from int) gen.QueueStatus {
	st, res, cancel := s.urls(r, j.id)
	q := gen.QueueStatus{Status: string(ph.status), RequestID: &j.id, StatusURL: &st, ResponseURL: &res, CancelURL: &cancel}
	switch ph.status {
	case gen.JobStatusInQueue:
		q.QueuePosition = ptr(ph.position)
	case gen.JobStatusCompleted:
		if ph.cancelled {
			q.Error, q.ErrorType = ptr("Request was cancelled"), ptr("client_cancelled")
		} else {
			q.Metrics = &gen.Metrics{InferenceTime: ptr(s.cfg.runTime.Seconds())}
		}
	}
	if withLogs {
		logs := s.logEntries(j, from, ph.logs)
		q.Logs = &logs
	}
	return q
}

func (s *Server) status(x *exchange, _ []byte) answer {
	r := x.r
	j := s.lookup(r)
	if j == nil {
		return platformError(http.StatusNotFound, "Request not found")
	}
	ph := s.phaseOf(j, time.Now())
	code := http.StatusAccepted
	if ph.status == gen.JobStatusCompleted {
		code = http.StatusOK
	}
	return jsonAnswer(code, s.statusBody(r, j, ph, r.URL.Query().Get("logs") == "1", 0))
}

func (s *Server) result(x *exchange, _ []byte) answer {
	r := x.r
	now := time.Now()
	s.mu.Lock()
	j := s.jobs[r.PathValue("request_id")]
	if j != nil && j.resultAt.IsZero() {
		j.resultAt = now
	}
	s.mu.Unlock()
	if j == nil {
		return platformError(http.StatusNotFound, "Request not found")
	}
	ph := s.phaseOf(j, time.Now())
	if ph.status != gen.JobStatusCompleted {
		return platformError(http.StatusBadRequest, "Request is still in progress")
	}
	if ph.cancelled {
		return platformError(499, "Request was cancelled")
	}
	if isSync(j) {
		// Encoded once, kept, and served as is to every caller.
		j.syncMu.Lock()
		defer j.syncMu.Unlock()
		if j.syncBody != nil {
			return s.resultAnswer(j, j.syncBody)
		}
	}
	images, err := s.output(r.Context(), j)
	var me *ModelError
	if errors.As(err, &me) {
		code := me.StatusCode
		if code == 0 {
			code = http.StatusUnprocessableEntity
		}
		if me.Field != "" {
			return jsonAnswer(code, map[string]any{"detail": []map[string]any{{"loc": []string{"body", me.Field}, "msg": me.Detail, "type": "value_error"}}})
		}
		return jsonAnswer(code, map[string]any{"detail": me.Detail})
	}
	if err != nil {
		return platformError(http.StatusInternalServerError, "model failed: "+err.Error())
	}
	out := gen.Output{Images: []gen.Image{}, Timings: map[string]float64{"inference": s.cfg.runTime.Seconds()}, Seed: seedOf(j), Prompt: j.in.Prompt, HasNsfwConcepts: []bool{}}
	for i, im := range images {
		url := s.mediaBase(r) + "/files/" + j.fileKey + "/" + strconv.Itoa(i) + "." + media.Extension(im.ContentType)
		if isSync(j) {
			url = syncPlaceholder(j, i)
		}
		out.Images = append(out.Images, gen.Image{URL: url, ContentType: ptr(im.ContentType), Width: ptr(im.Width), Height: ptr(im.Height), FileSize: ptr(int64(len(im.Data)))})
		out.HasNsfwConcepts = append(out.HasNsfwConcepts, false)
	}
	b, err := json.Marshal(out)
	if err != nil {
		panic(err)
	}
	if isSync(j) {
		if b, err = s.encodeSync(j, b, images); err != nil {
			return s.tooMany(err.Error(), bytesRetry)
		}
	}
	return s.resultAnswer(j, b)
}

// resultAnswer is the 200 of a result call with body b.
func (s *Server) resultAnswer(j *job, b []byte) answer {
	a := answer{code: http.StatusOK, header: http.Header{"Content-Type": {"application/json"}}, body: b}
	a.header.Set("X-Fal-Request-Id", j.id) // fal's clients read the id from here
	// What the job was billed: one unit per image, as a per-image model is.
	a.header.Set("X-Fal-Billable-Units", strconv.Itoa(j.units))
	return a
}

func isSync(j *job) bool { return j.in.SyncMode != nil && *j.in.SyncMode }

// syncPlaceholder stands for image i's data URI in a sync result while
// it is encoded: unguessable, so no prompt can contain it.
func syncPlaceholder(j *job, i int) string {
	return "queuetest-sync-" + j.fileKey + "-" + strconv.Itoa(i)
}

// dataURIPrefix is the start of im's data URI as it stands inside a JSON
// string (escaped: the type comes from the model).
func dataURIPrefix(im Rendering) string {
	b, _ := json.Marshal("data:" + im.ContentType + ";base64,")
	return string(b[1 : len(b)-1])
}

// encodeSync makes the sync_mode result of j from the answer with
// placeholders: each image's data URI written straight into a buffer of
// the final size, reserved in the budget first; it is kept on j (j.syncMu
// held) and j's outputs, delivered only inline, are given back.
func (s *Server) encodeSync(j *job, withPlaceholders []byte, images []Rendering) ([]byte, error) {
	size := int64(len(withPlaceholders))
	for i, im := range images {
		size += int64(len(dataURIPrefix(im))+base64.StdEncoding.EncodedLen(len(im.Data))) - int64(len(syncPlaceholder(j, i)))
	}
	if !s.hold(j, size) {
		return nil, fmt.Errorf("the server's memory budget has no room for this sync_mode result (%d MiB) now: try again shortly", mib(size))
	}
	out := make([]byte, 0, size)
	rest := withPlaceholders
	for i, im := range images {
		k := bytes.Index(rest, []byte(syncPlaceholder(j, i)))
		out = append(out, rest[:k]...)
		out = append(out, dataURIPrefix(im)...)
		n := len(out)
		out = out[:n+base64.StdEncoding.EncodedLen(len(im.Data))]
		base64.StdEncoding.Encode(out[n:], im.Data)
		rest = rest[k+len(syncPlaceholder(j, i)):]
	}
	out = append(out, rest...)
	var outputs int64
	for _, im := range images {
		outputs += int64(len(im.Data))
	}
	j.syncBody = out
	j.dropImages()
	s.hold(j, -outputs)
	return out, nil
}

// mediaBase is where result images are served: the PublicURL when there
// is one, else the foreign origin when there is one (as fal serves media
// from another host), else the request's Host.
func (s *Server) mediaBase(r *http.Request) string {
	if s.cfg.publicURL == "" && s.ForeignURL != "" {
		return s.ForeignURL
	}
	return s.root(r)
}

func (s *Server) cancel(x *exchange, _ []byte) answer {
	r := x.r
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[r.PathValue("request_id")]
	if j == nil {
		return jsonAnswer(http.StatusNotFound, gen.CancelStatus{Status: "NOT_FOUND"})
	}
	now := time.Now()
	if s.phaseOf(j, now).status == gen.JobStatusCompleted {
		return jsonAnswer(http.StatusBadRequest, gen.CancelStatus{Status: "ALREADY_COMPLETED"})
	}
	j.cancelled.Store(now.UnixNano())
	j.stop() // no more work for it
	s.stats.cancelled.Add(1)
	return jsonAnswer(http.StatusAccepted, gen.CancelStatus{Status: "CANCELLATION_REQUESTED"})
}

// file serves a result image of a completed job; like fal's CDN, no
// credential is needed (or wanted), so the URL carries an unguessable key,
// not the request id, and a cancelled or unfinished job has none.
//
// Like a CDN's, the files answer CORS to any origin (their URLs are the
// secret, no credential is involved), so a page can fetch() them and read
// them back from a canvas.
func (s *Server) file(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	s.mu.Lock()
	j := s.files[r.PathValue("key")]
	s.mu.Unlock()
	idx, _, _ := strings.Cut(r.PathValue("name"), ".")
	i, err := strconv.Atoi(idx)
	if j == nil || err != nil {
		http.NotFound(w, r)
		return
	}
	if ph := s.phaseOf(j, time.Now()); ph.status != gen.JobStatusCompleted || ph.cancelled || isSync(j) {
		http.NotFound(w, r) // a sync_mode job's images are delivered inline only
		return
	}
	images, err := s.output(r.Context(), j)
	if err != nil || i < 0 || i >= len(images) {
		http.NotFound(w, r)
		return
	}
	f := s.popFault(OpFile)
	x := &exchange{s: s, w: w, r: r}
	if x.answered(f) {
		return
	}
	s.stats.files.Add(1)
	data := images[i].Data
	w.Header().Set("Content-Type", images[i].ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	if f != nil && f.kind == faultTruncate {
		w.WriteHeader(http.StatusOK)
		w.Write(data[:len(data)/2])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		panic(http.ErrAbortHandler)
	}
	w.Write(data)
}

// apiStream serves the status stream: one SSE event per change, logs
// incremental, closed after COMPLETED.
func (s *Server) apiStream(w http.ResponseWriter, r *http.Request) {
	x, _ := s.admit(w, r, OpStream)
	if x == nil {
		return
	}
	f := s.popFault(OpStream)
	if x.answered(f) {
		return
	}
	j := s.lookup(r)
	if j == nil {
		x.reply(platformError(http.StatusNotFound, "Request not found"))
		return
	}
	withLogs := r.URL.Query().Get("logs") == "1"
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	if x.check != nil {
		if err := x.check(http.StatusOK, w.Header(), nil); err != nil {
			s.violation(fmt.Errorf("queuetest answered off the spec: %w", err))
		}
	}
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	sent, events := 0, 0
	var last phase
	for {
		ph := s.phaseOf(j, time.Now())
		if events == 0 || ph.status != last.status || ph.position != last.position || (withLogs && ph.logs > sent) {
			b, _ := json.Marshal(s.statusBody(r, j, ph, withLogs, sent))
			if s.cfg.contract != nil {
				if err := s.cfg.contract.Event(b); err != nil {
					s.violation(fmt.Errorf("queuetest streamed off the spec: %w", err))
				}
			}
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
			events++
			sent = max(sent, ph.logs)
			last = ph
			if f != nil {
				switch f.kind {
				case faultBreakStream:
					panic(http.ErrAbortHandler)
				case faultEndStreamEarly:
					if ph.status != gen.JobStatusCompleted {
						return
					}
				case faultStallStream:
					<-r.Context().Done()
					return
				}
			}
		}
		if ph.status == gen.JobStatusCompleted {
			return
		}
		wake := time.Until(ph.next)
		if ph.next.IsZero() || wake <= 0 {
			wake = time.Millisecond
		}
		keepAlive := s.cfg.keepAlive > 0 && wake > s.cfg.keepAlive
		if keepAlive {
			wake = s.cfg.keepAlive // nothing changes before then: say so
		}
		t := time.NewTimer(wake)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		if keepAlive {
			if _, err := io.WriteString(w, ": keepalive\n"); err != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}
