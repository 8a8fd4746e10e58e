package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/internal/bridge"
)

// call is one proxied request, for the operations gen's routes dispatch.
type call struct {
	h    *Handler
	orig *http.Request // the browser's request, for UserOf
}

type callKey struct{}

func withCall(ctx context.Context, c *call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

func callOf(r *http.Request) *call { return r.Context().Value(callKey{}).(*call) }

func (c *call) user() string {
	if c.h.cfg.userOf == nil {
		return ""
	}
	return c.h.cfg.userOf(c.orig)
}

// operations forwards the spec's operations (gen.ServerInterface): each
// request to the base URL is built by gen from the spec.
type operations struct{ h *Handler }

func (o operations) Submit(w http.ResponseWriter, r *http.Request, params gen.SubmitParams) {
	h, c := o.h, callOf(r)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.maxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		h.refuse(w, r, http.StatusRequestEntityTooLarge, "input", "the body is larger than "+strconv.FormatInt(h.cfg.maxBody, 10)+" bytes")
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
		h.count("input")
		items := make([]map[string]any, len(ie.Fields))
		for i, f := range ie.Fields {
			items[i] = map[string]any{"loc": []string{"body", f.Field}, "msg": f.Message, "type": "value_error"}
		}
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"detail": items})
		return
	}
	if params.FalWebhook != nil {
		// fal would POST the output to any URL a visitor names, on the
		// key's account: webhooks are the server's to set, not the page's.
		h.refuse(w, r, http.StatusBadRequest, "parameter", "fal_webhook is not accepted through the proxy")
		return
	}
	if bad := gen.ValidateSubmitParams(&params); len(bad) > 0 {
		h.refuse(w, r, http.StatusBadRequest, "parameter", bad[0].Field+": "+bad[0].Message)
		return
	}
	user := c.user()
	if h.cfg.userOf != nil && h.cfg.perUser > 0 && h.jobs.inFlight(user) >= h.cfg.perUser {
		h.refuse(w, r, http.StatusTooManyRequests, "limit", "too many jobs in flight for this user: fetch or cancel one first")
		return
	}
	// What goes upstream is the input as Submit would send it: the spec's
	// fields only, the upstream docs' "default" left out.
	if body, err = json.Marshal(bridge.Normalize(in)); err != nil {
		h.refuse(w, r, http.StatusUnprocessableEntity, "input", err.Error())
		return
	}
	req, err := gen.NewSubmitRequestWithBody(h.server, &params, "application/json", bytes.NewReader(body))
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, "parameter", err.Error())
		return
	}
	h.forward(w, r, req, "submit", "", func(status int, answer []byte) string {
		var q gen.Enqueued
		if status < 200 || status >= 300 || json.Unmarshal(answer, &q) != nil || q.RequestID == "" {
			return ""
		}
		h.jobs.add(q.RequestID, user)
		return q.RequestID
	})
}

func (o operations) GetStatus(w http.ResponseWriter, r *http.Request, id gen.RequestID, params gen.GetStatusParams) {
	if !o.h.owns(w, r, id) {
		return
	}
	req, err := gen.NewGetStatusRequest(o.h.server, id, &params)
	o.h.build(w, r, req, err, "status", id, nil)
}

func (o operations) StreamStatus(w http.ResponseWriter, r *http.Request, id gen.RequestID, params gen.StreamStatusParams) {
	if !o.h.owns(w, r, id) {
		return
	}
	req, err := gen.NewStreamStatusRequest(o.h.server, id, &params)
	if err == nil {
		req.Header.Set("Accept", "text/event-stream")
	}
	o.h.build(w, r, req, err, "stream", id, nil)
}

func (o operations) GetResult(w http.ResponseWriter, r *http.Request, id gen.RequestID) {
	if !o.h.owns(w, r, id) {
		return
	}
	req, err := gen.NewGetResultRequest(o.h.server, id)
	o.h.build(w, r, req, err, "result", id, func(status int, _ []byte) string {
		if status != http.StatusBadRequest { // 400: still in progress
			o.h.jobs.finish(id)
		}
		return id
	})
}

func (o operations) Cancel(w http.ResponseWriter, r *http.Request, id gen.RequestID) {
	if !o.h.owns(w, r, id) {
		return
	}
	req, err := gen.NewCancelRequest(o.h.server, id)
	o.h.build(w, r, req, err, "cancel", id, func(status int, _ []byte) string {
		if status >= 200 && status < 300 {
			o.h.jobs.finish(id)
		}
		return id
	})
}

// ListRequestsByEndpoint is refused: the request history is the whole
// account's (every user's inputs and outputs), never a browser's to read.
func (o operations) ListRequestsByEndpoint(w http.ResponseWriter, r *http.Request, _ gen.ListRequestsByEndpointParams) {
	o.h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
}

// owns checks that the request's user submitted the job; without UserOf
// every job is everyone's.
func (h *Handler) owns(w http.ResponseWriter, r *http.Request, id string) bool {
	if h.cfg.userOf == nil {
		return true
	}
	if owner, ok := h.jobs.owner(id); ok && owner == callOf(r).user() {
		return true
	}
	h.refuse(w, r, http.StatusForbidden, "owner", "not a job of this user (or one the proxy no longer remembers)")
	return false
}

func (h *Handler) build(w http.ResponseWriter, r *http.Request, req *http.Request, err error, op, id string, after func(int, []byte) string) {
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, "parameter", err.Error())
		return
	}
	h.forward(w, r, req, op, id, after)
}

// hopByHop are the headers a proxy never copies, with those that would be
// wrong after the answer is re-encoded, and cookies of the upstream's
// origin.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Content-Encoding": true, "Set-Cookie": true,
}

// forward sends req upstream and copies the answer back, passing an event
// stream through as it arrives (flushed per read). after sees the status
// and, for a JSON answer, its body, and returns the request id to log.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, req *http.Request, op, id string, after func(int, []byte) string) {
	start := time.Now()
	req = req.WithContext(r.Context())
	resp, err := h.f.Forward(req)
	if err != nil {
		h.refuse(w, r, http.StatusBadGateway, "upstream", "the queue could not be reached")
		return
	}
	defer resp.Body.Close()
	h.stats.forwarded.Add(1)
	for k, vs := range resp.Header {
		if !hopByHop[k] {
			w.Header()[k] = vs
		}
	}
	stream := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	var kept bytes.Buffer
	if after == nil || stream {
		w.WriteHeader(resp.StatusCode)
		copyFlushing(w, resp.Body, stream)
	} else {
		// A small JSON answer: kept to learn the request id.
		io.Copy(&kept, io.LimitReader(resp.Body, 1<<20))
		w.WriteHeader(resp.StatusCode)
		w.Write(kept.Bytes())
		io.Copy(w, resp.Body)
	}
	if after != nil {
		id = after(resp.StatusCode, kept.Bytes())
	}
	h.cfg.log.Info("fluxi2i proxy: forwarded", "method", r.Method, "operation", op, "request_id", id, "status", resp.StatusCode, "duration", time.Since(start))
}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyFlushing copies src to w, flushing after every read of a stream.
func copyFlushing(w http.ResponseWriter, src io.Reader, flush bool) {
	rc := http.NewResponseController(w)
	bp := buffers.Get().(*[]byte)
	defer buffers.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if flush {
				rc.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

func (h *Handler) count(reason string) {
	for i, rs := range reasons {
		if rs == reason {
			h.stats.refused[i].Add(1)
		}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}
