package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/inputcheck"
	"github.com/fluxi2i/fluxi2i/wrapper"
)

// call is one proxied request, for the operations gen's routes dispatch.
type call struct {
	h    *Handler
	user string // whom the limits count it against (see Handler.userOf)
}

type callKey struct{}

func withCall(ctx context.Context, c *call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

func callOf(r *http.Request) *call { return r.Context().Value(callKey{}).(*call) }

// op is one of the spec's operations, as the proxy treats its answer.
type op int

const (
	opSubmit op = iota
	opStatus
	opStream
	opResult
	opCancel
	opUpload // a storage upload's initiate
)

var opNames = [...]string{"submit", "status", "stream", "result", "cancel", "upload"}

// operations forwards the queue's operations of the spec: each request to
// the base URL is built by gen from the spec. The rest of gen.ServerInterface
// (the request history, the storage) is refused on the queue's host.
type operations struct {
	refuseAll
	h *Handler
}

func (o operations) Submit(w http.ResponseWriter, r *http.Request, params gen.SubmitParams) {
	h, c := o.h, callOf(r)
	if params.FalWebhook != nil {
		// fal would POST the output to any URL a visitor names, on the
		// key's account: webhooks are the server's to set, not the page's.
		h.refuse(w, r, http.StatusBadRequest, "parameter", "fal_webhook is not accepted through the proxy")
		return
	}
	tooBig := func() {
		h.refuse(w, r, http.StatusRequestEntityTooLarge, "input", "the body is larger than "+strconv.FormatInt(h.cfg.maxBody, 10)+" bytes")
	}
	if r.ContentLength > h.cfg.maxBody {
		tooBig()
		return
	}
	// The body's room in the budget, taken before it is read.
	size := r.ContentLength
	if size < 0 {
		size = h.cfg.maxBody
	}
	wait, cancel := context.WithTimeout(r.Context(), h.cfg.bodyWait)
	err := h.bodies.Acquire(wait, size)
	cancel()
	if err != nil {
		w.Header().Set("Retry-After", "1")
		h.refuse(w, r, http.StatusTooManyRequests, "limit", "the proxy is reading as many submit bodies as it can hold: retry shortly", "body_bytes", size)
		return
	}
	defer h.bodies.Release(size)
	var body []byte
	if r.ContentLength > 0 {
		body = make([]byte, r.ContentLength)
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.maxBody))
	}
	h.held.add(int64(len(body)))
	defer h.held.add(-int64(len(body)))
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		tooBig()
		return
	case err != nil:
		h.refuse(w, r, http.StatusBadRequest, "input", "reading the body: "+err.Error())
		return
	}
	var in gen.Input
	if err := json.Unmarshal(body, &in); err != nil {
		h.refuse(w, r, http.StatusUnprocessableEntity, "input", "the body is not the model's input: "+err.Error())
		return
	}
	var ie *wrapper.InputError
	if errors.As(wrapper.Validate(in), &ie) {
		items := make([]map[string]any, len(ie.Fields))
		for i, f := range ie.Fields {
			items[i] = map[string]any{"loc": []string{"body", f.Field}, "msg": f.Message, "type": "value_error"}
		}
		h.refuseWith(w, r, http.StatusUnprocessableEntity, "input", ie.Error(), map[string]any{"detail": items})
		return
	}
	if bad := gen.ValidateSubmitParams(&params); len(bad) > 0 {
		h.refuse(w, r, http.StatusBadRequest, "parameter", bad[0].Field+": "+bad[0].Message)
		return
	}
	// What goes upstream is the input as Submit would send it: the spec's
	// fields only, the upstream docs' "default" left out. The browser's
	// bytes are not needed any more.
	body = nil
	if body, err = encodeInput(inputcheck.Normalize(in)); err != nil {
		h.refuse(w, r, http.StatusUnprocessableEntity, "input", err.Error())
		return
	}
	req, err := gen.NewSubmitRequestWithBody(h.server, &params, "application/json", bytes.NewReader(body))
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, "parameter", err.Error())
		return
	}
	// The job's slot, taken before anything is paid for.
	res, err := h.jobs.reserve(c.user)
	if err != nil {
		retry := "60"
		if errors.Is(err, errJobsInFlight) {
			retry = "5"
		}
		w.Header().Set("Retry-After", retry)
		h.refuse(w, r, http.StatusTooManyRequests, "limit", err.Error(), "user", c.user)
		return
	}
	h.forward(w, r, req, opSubmit, "", res)
}

func (o operations) GetStatus(w http.ResponseWriter, r *http.Request, id gen.RequestID, params gen.GetStatusParams) {
	if !o.h.owns(w, r, id) {
		return
	}
	req, err := gen.NewGetStatusRequest(o.h.server, id, &params)
	o.h.build(w, r, req, err, opStatus, id)
}

func (o operations) StreamStatus(w http.ResponseWriter, r *http.Request, id gen.RequestID, params gen.StreamStatusParams) {
	if !o.h.owns(w, r, id) {
		return
	}
	req, err := gen.NewStreamStatusRequest(o.h.server, id, &params)
	if err == nil {
		req.Header.Set("Accept", "text/event-stream")
	}
	o.h.build(w, r, req, err, opStream, id)
}

func (o operations) GetResult(w http.ResponseWriter, r *http.Request, id gen.RequestID) {
	if !o.h.owns(w, r, id) {
		return
	}
	req, err := gen.NewGetResultRequest(o.h.server, id)
	o.h.build(w, r, req, err, opResult, id)
}

func (o operations) Cancel(w http.ResponseWriter, r *http.Request, id gen.RequestID) {
	if !o.h.owns(w, r, id) {
		return
	}
	req, err := gen.NewCancelRequest(o.h.server, id)
	o.h.build(w, r, req, err, opCancel, id)
}

// owns checks that the request's user submitted the job; without UserOf
// every job is everyone's.
func (h *Handler) owns(w http.ResponseWriter, r *http.Request, id string) bool {
	if h.cfg.userOf == nil {
		return true
	}
	if owner, ok := h.jobs.owner(id); ok && owner == callOf(r).user {
		return true
	}
	h.refuse(w, r, http.StatusForbidden, "owner", "not a job of this user (or one the proxy no longer remembers)", "request_id", id)
	return false
}

func (h *Handler) build(w http.ResponseWriter, r *http.Request, req *http.Request, err error, o op, id string) {
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, "parameter", err.Error())
		return
	}
	h.forward(w, r, req, o, id, nil)
}

// hopByHop are the headers a proxy never copies, with those that would be
// wrong after the answer is re-encoded, and cookies of the upstream's
// origin.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Content-Encoding": true, "Set-Cookie": true,
}

// upstreamHeader reports whether the upstream's answer header k may reach
// the browser: not hop-by-hop, and none of the proxy's own (CORS, Vary,
// the security headers).
func upstreamHeader(k string) bool {
	_, own := ownHeaders[k]
	return !hopByHop[k] && !own && k != "Vary" && !strings.HasPrefix(k, "Access-Control-")
}

// heldAnswer is how much of an answer is held to be checked before it is
// passed on; a longer one (a result with data URIs) is checked as it
// streams through. A submit or status answer, whose job URLs are
// rewritten, is held whole up to heldJobAnswer (a status with many logs);
// a longer one is refused (502), never passed on with the upstream's URLs.
const (
	heldAnswer    = 1 << 20
	heldJobAnswer = 8 << 20
)

// forward sends req upstream and copies the answer back: its job URLs made
// fal's public ones, an event stream passed through as it arrives, never
// an answer that carries the server's credential. It settles the job's
// slot from what the answer says; res is a submit's reservation.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, req *http.Request, o op, id string, res *reservation) {
	start := time.Now()
	var wrote atomic.Bool
	octx := h.continueTrace(r, req, o)
	code := 0
	defer func() {
		if h.cfg.observer != nil {
			h.cfg.observer.EndForward(octx, Forwarded{Operation: opNames[o], RequestID: id, StatusCode: code, Duration: time.Since(start)})
		}
	}()
	ctx := httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) { wrote.Store(wrote.Load() || i.Err == nil) },
	})
	req = req.WithContext(ctx)
	resp, err := h.f.Forward(req)
	if err != nil {
		if res != nil {
			if wrote.Load() {
				res.commit("") // it may have been queued: the slot stays taken
			} else {
				res.release() // never reached the upstream
			}
		}
		h.refuse(w, r, http.StatusBadGateway, "upstream", "the queue could not be reached", "operation", opNames[o])
		return
	}
	defer resp.Body.Close()
	h.stats.forwarded.Add(1)
	secrets := secretsOf(resp.Request, req)
	leak := leakedHeader(resp.Header, secrets)
	code = resp.StatusCode
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	var held []byte
	whole := true
	rewrite := o == opSubmit || o == opStatus // job URLs made public
	if !stream {
		limit := heldAnswer
		if rewrite {
			limit = heldJobAnswer
		}
		held, err = io.ReadAll(io.LimitReader(resp.Body, int64(limit)))
		whole = err == nil && len(held) < limit
		if leak == "" && containsAny(held, secrets) {
			leak = "body"
		}
	}
	if res != nil {
		id = h.settleSubmit(res, code, held, whole)
	}
	if o == opUpload && code == http.StatusNotFound {
		h.refuse(w, r, http.StatusNotImplemented, "operation", noStorage)
		return
	}
	if leak != "" {
		h.refuse(w, r, http.StatusBadGateway, "upstream", "the queue's answer carried the server's credential: not passed on",
			"operation", opNames[o], "request_id", id, "where", leak, "upstream_status", code)
		return
	}
	if rewrite && !stream && !whole {
		why := "the queue's answer is longer than " + strconv.Itoa(heldJobAnswer) + " bytes, too long to rewrite its job URLs: not passed on"
		if err != nil {
			why = "the queue's answer was cut short: not passed on"
		}
		h.refuse(w, r, http.StatusBadGateway, "upstream", why,
			"operation", opNames[o], "request_id", id, "upstream_status", code, "held_bytes", len(held), "read_error", errString(err))
		return
	}
	for k, vs := range resp.Header {
		if upstreamHeader(k) {
			w.Header()[k] = vs
		}
	}
	if stream {
		w.WriteHeader(code)
		h.relayEvents(w, r, resp.Body, id, secrets)
	} else {
		var st string
		if rewrite {
			held, st = publicURLs(held, id)
		}
		h.settle(o, id, code, st)
		w.WriteHeader(code)
		if whole {
			w.Write(held)
		} else {
			h.relayGuarded(w, r, io.MultiReader(bytes.NewReader(held), resp.Body), id, secrets)
		}
	}
	h.cfg.log.Info("fluxi2i proxy: forwarded", "method", r.Method, "operation", opNames[o], "request_id", id, "status", code, "duration", time.Since(start))
}

// settleSubmit commits or releases a submit's reservation from the answer
// and returns the request id it names: a 2xx with an id is the job; a 4xx
// created none; anything else (a 5xx, an answer cut short) may have
// queued one, whose slot stays taken until it expires.
func (h *Handler) settleSubmit(res *reservation, code int, body []byte, whole bool) string {
	var q gen.Enqueued
	switch {
	case code >= 200 && code < 300 && whole && json.Unmarshal(body, &q) == nil && q.RequestID != "":
		res.commit(q.RequestID)
	case code >= 400 && code < 500:
		res.release()
	default:
		res.commit("")
	}
	return q.RequestID
}

// settle ends the job id when the answer of o says it ended; status is the
// status a JSON status answer named.
func (h *Handler) settle(o op, id string, code int, status string) {
	ended := false
	switch o {
	case opStatus, opStream:
		// COMPLETED frees the slot; the record stays until the result is
		// fetched (another user's cycles cannot make the proxy forget it).
		if code >= 200 && code < 300 && status == wrapper.StatusCompleted && id != "" {
			h.jobs.complete(id)
		}
		ended = code == http.StatusNotFound
	case opResult:
		// A final answer: the output, or the model's error. Not one that
		// says "still in progress" (400), a refusal of the key, a timeout,
		// a 429 or a 5xx: the job may still run.
		switch {
		case code >= 200 && code < 300:
			ended = true
		case code >= 400 && code < 500:
			ended = code != http.StatusBadRequest && code != http.StatusUnauthorized && code != http.StatusForbidden &&
				code != http.StatusRequestTimeout && code != http.StatusTooManyRequests
		}
	case opCancel:
		// Cancellation requested, already completed, or not found.
		ended = code >= 200 && code < 300 || code == http.StatusBadRequest || code == http.StatusNotFound
	}
	if ended && id != "" {
		h.jobs.finish(id)
	}
}

// publicQueue is fal's public queue: the job URLs the browser gets name
// it, as fal itself would answer, never the configured upstream.
const publicQueue = "https://queue.fal.run/"

// publicURLs rewrites the job URLs (status_url, response_url, cancel_url)
// of a JSON answer to fal's public ones for id (the answer's own
// request_id when id is ""), or drops them when no id is known. It returns
// the answer and the status it names.
func publicURLs(body []byte, id string) ([]byte, string) {
	if !bytes.Contains(body, []byte(`_url"`)) && bytes.IndexByte(body, '\\') < 0 {
		// No job URL to rewrite, not even behind an escaped key (the common
		// status answer): the status only.
		var st struct {
			Status string `json:"status"`
		}
		json.Unmarshal(body, &st)
		return body, st.Status
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return body, ""
	}
	var status, own string
	json.Unmarshal(m["status"], &status)
	json.Unmarshal(m["request_id"], &own)
	if id == "" {
		id = own
	}
	urls := map[string]func() (*http.Request, error){
		"status_url":   func() (*http.Request, error) { return gen.NewGetStatusRequest(publicQueue, id, nil) },
		"response_url": func() (*http.Request, error) { return gen.NewGetResultRequest(publicQueue, id) },
		"cancel_url":   func() (*http.Request, error) { return gen.NewCancelRequest(publicQueue, id) },
	}
	changed := false
	for k, build := range urls {
		if _, ok := m[k]; !ok {
			continue
		}
		changed = true
		delete(m, k)
		if id == "" {
			continue
		}
		if req, err := build(); err == nil {
			m[k], _ = json.Marshal(req.URL.String())
		}
	}
	if !changed {
		return body, status
	}
	out, err := json.Marshal(m)
	if err != nil {
		return body, status
	}
	return out, status
}

// minSecret is the shortest credential looked for in answers: a shorter
// one (a test's "k") would match innocent bytes.
const minSecret = 8

// secretsOf returns the credential the requests carried upstream: the
// Authorization value's token and, for fal's "id:secret" keys, the secret.
func secretsOf(reqs ...*http.Request) [][]byte {
	var out [][]byte
	add := func(s string) {
		if len(s) < minSecret {
			return
		}
		for _, o := range out {
			if string(o) == s {
				return
			}
		}
		out = append(out, []byte(s))
	}
	for _, r := range reqs {
		if r == nil {
			continue
		}
		v := strings.TrimSpace(r.Header.Get("Authorization"))
		tok := v[strings.LastIndexByte(v, ' ')+1:]
		add(tok)
		if i := strings.IndexByte(tok, ':'); i >= 0 {
			add(tok[i+1:])
		}
	}
	return out
}

func containsAny(b []byte, secrets [][]byte) bool {
	for _, s := range secrets {
		if bytes.Contains(b, s) {
			return true
		}
	}
	return false
}

// leakedHeader names the first answer header carrying a secret, or "".
func leakedHeader(hdr http.Header, secrets [][]byte) string {
	for k, vs := range hdr {
		for _, v := range append([]string{k}, vs...) {
			if containsAny([]byte(v), secrets) {
				return "header " + k
			}
		}
	}
	return ""
}

// abortLeak ends an answer already under way that turned out to carry the
// server's credential: the connection is cut before those bytes are sent.
func (h *Handler) abortLeak(r *http.Request, id string) {
	h.count("upstream")
	h.cfg.log.Error("fluxi2i proxy: the queue's answer carried the server's credential: cut off before it", "method", r.Method, "request_id", id)
	panic(http.ErrAbortHandler)
}

// relayGuarded copies a long answer, holding back the last bytes that
// could begin a secret until the next read shows they do not.
func (h *Handler) relayGuarded(w http.ResponseWriter, r *http.Request, src io.Reader, id string, secrets [][]byte) {
	keep := 0
	for _, s := range secrets {
		keep = max(keep, len(s)-1)
	}
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	var tail []byte
	for {
		n, err := src.Read(*bp)
		if n > 0 {
			buf := append(tail, (*bp)[:n]...)
			if containsAny(buf, secrets) {
				h.abortLeak(r, id)
			}
			cut := max(len(buf)-keep, 0)
			if _, werr := w.Write(buf[:cut]); werr != nil {
				return
			}
			tail = append(tail[:0:0], buf[cut:]...)
		}
		if err != nil {
			w.Write(tail)
			return
		}
	}
}

// maxEventLine bounds one line of a status stream.
const maxEventLine = 1 << 20

// relayEvents passes a status stream through as it arrives, one event at
// a time: each event's data has its job URLs made public, comments
// (keepalives) pass at once, an event carrying a secret cuts the stream,
// and an event saying COMPLETED frees the job's slot.
func (h *Handler) relayEvents(w http.ResponseWriter, r *http.Request, src io.Reader, id string, secrets [][]byte) {
	rc := http.NewResponseController(w)
	lines := newLineReader(src)
	var fields, data [][]byte
	send := func(b []byte) bool {
		if containsAny(b, secrets) {
			h.abortLeak(r, id)
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		rc.Flush()
		return true
	}
	for {
		line, err := lines.next()
		if errors.Is(err, errLineTooLong) {
			h.cfg.log.Warn("fluxi2i proxy: the queue's status stream sent a line over 1 MiB: stream ended", "request_id", id)
		}
		if err != nil {
			return // the upstream's stream ended (or broke): so does this one
		}
		switch {
		case len(line) == 0:
			if len(data) == 0 {
				fields = fields[:0]
				continue
			}
			d, st := publicURLs(bytes.Join(data, []byte("\n")), id)
			h.settle(opStream, id, http.StatusOK, st)
			var ev bytes.Buffer
			for _, f := range fields {
				ev.Write(f)
				ev.WriteByte('\n')
			}
			ev.WriteString("data: ")
			ev.Write(bytes.ReplaceAll(d, []byte("\n"), []byte("\ndata: ")))
			ev.WriteString("\n\n")
			fields, data = fields[:0], data[:0]
			if !send(ev.Bytes()) {
				return
			}
		case line[0] == ':':
			if !send(append(line, '\n')) {
				return
			}
		case bytes.HasPrefix(line, []byte("data:")):
			v := line[len("data:"):]
			if len(v) > 0 && v[0] == ' ' {
				v = v[1:]
			}
			data = append(data, v)
		default:
			fields = append(fields, line)
		}
	}
}

// lineReader reads the lines of a stream (ending in LF, CRLF or CR),
// each bounded by maxEventLine; each line returned is its own copy.
type lineReader struct {
	src        io.Reader
	buf        []byte
	start, end int  // the unread bytes of buf
	skipLF     bool // the last line ended in CR: a LF right after is its end
}

func newLineReader(src io.Reader) *lineReader {
	return &lineReader{src: src, buf: make([]byte, 32<<10)}
}

var errLineTooLong = errors.New("proxy: a status stream line is too long")

func (l *lineReader) next() ([]byte, error) {
	var line []byte
	for {
		for i := l.start; i < l.end; i++ {
			c := l.buf[i]
			if l.skipLF {
				l.skipLF = false
				if c == '\n' {
					l.start = i + 1
					continue
				}
			}
			if c == '\n' || c == '\r' {
				line = append(line[:len(line):len(line)], l.buf[l.start:i]...)
				l.start = i + 1
				l.skipLF = c == '\r'
				return line, nil
			}
		}
		line = append(line, l.buf[l.start:l.end]...)
		if len(line) > maxEventLine {
			return nil, errLineTooLong
		}
		l.start, l.end = 0, 0
		n, err := l.src.Read(l.buf)
		if n == 0 && err != nil {
			return nil, err
		}
		l.end = n
	}
}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (h *Handler) count(reason string) {
	for i, rs := range reasons {
		if rs == reason {
			h.stats.refused[i].Add(1)
		}
	}
}

// refuseWith answers code with body (fal's error shape), counts and logs
// the refusal with its reason and detail.
func (h *Handler) refuseWith(w http.ResponseWriter, r *http.Request, code int, reason, detail string, body any, attrs ...any) {
	h.count(reason)
	h.cfg.log.Warn("fluxi2i proxy: refused", append([]any{"method", r.Method, "status", code, "reason", reason, "detail", detail}, attrs...)...)
	if h.cfg.observer != nil {
		h.cfg.observer.Refused(r.Context(), Refusal{Reason: reason, StatusCode: code, Detail: detail})
	}
	writeJSON(w, code, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
