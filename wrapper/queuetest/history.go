package queuetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/endpoint"
)

// WithoutHistory answers the request history with 404, as the aggregator
// does: a client cannot settle a lost submit there.
func WithoutHistory() Option { return func(c *config) { c.noHistory = true } }

// rootPaths are the routes of the history and of the storage, which live
// on the origin's root (the Platform API and fal's storage are not below
// the queue's base path), as gen builds them.
func rootPaths() []string {
	var out []string
	add := func(req *http.Request, err error) {
		if err != nil {
			panic(err)
		}
		out = append(out, req.URL.Path)
	}
	add(gen.NewListRequestsByEndpointRequest("http://h", &gen.ListRequestsByEndpointParams{EndpointID: "e"}))
	add(gen.NewInitiateUploadRequestWithBody("http://h", &gen.InitiateUploadParams{}, "", nil))
	add(gen.NewInitiateMultipartUploadRequestWithBody("http://h", &gen.InitiateMultipartUploadParams{}, "", nil))
	put, err := gen.NewPutUploadRequestWithBody("http://h", "t", "", nil)
	add(put, err)
	out[len(out)-1] = path.Dir(put.URL.Path) + "/" // the uploads and their parts
	return out
}

// ListRequestsByEndpoint serves the request history: the jobs that have
// ended, newest first, filtered as the query asks, with json_input as
// received (expand=payloads) unless the submit said X-Fal-Store-IO: 0.
func (o operations) ListRequestsByEndpoint(w http.ResponseWriter, r *http.Request, params gen.ListRequestsByEndpointParams) {
	o.s.api(OpHistory, func(x *exchange, _ []byte) answer { return o.s.history(x, params) })(w, r)
}

func (s *Server) history(x *exchange, p gen.ListRequestsByEndpointParams) answer {
	if s.cfg.noHistory {
		return platformError(http.StatusNotFound, "Not Found")
	}
	if bad := gen.ValidateListRequestsByEndpointParams(&p); len(bad) > 0 {
		return platformError(http.StatusBadRequest, bad[0].Field+": "+bad[0].Message)
	}
	page := gen.RequestHistory{Items: []gen.RequestHistoryItem{}}
	endpoint := endpoint.ID()
	if !slices.Contains(strings.Split(p.EndpointID, ","), endpoint) {
		return jsonAnswer(http.StatusOK, page)
	}
	now := time.Now()
	type ended struct {
		j         *job
		end, sent time.Time
		started   bool
		code      int
	}
	var all []ended
	s.mu.Lock()
	for _, j := range s.jobs {
		end := s.endedAt(j, now)
		code := historyCode(j)
		switch {
		case end.IsZero(),
			p.Start != nil && end.Before(*p.Start),
			p.End != nil && !end.Before(*p.End),
			p.RequestID != nil && *p.RequestID != j.id,
			p.Status != nil && *p.Status != historyStatus(code):
			continue
		}
		all = append(all, ended{j: j, end: end, sent: j.submitted, started: !j.submitted.Add(s.cfg.queueTime).After(end), code: code})
	}
	s.mu.Unlock()
	slices.SortFunc(all, func(a, b ended) int {
		if c := b.end.Compare(a.end); c != 0 {
			return c
		}
		return strings.Compare(a.j.id, b.j.id)
	})
	from := 0
	if p.Cursor != nil {
		n, err := strconv.Atoi(*p.Cursor)
		if err != nil || n < 0 || n > len(all) {
			return platformError(http.StatusBadRequest, "cursor: not one this server gave")
		}
		from = n
	}
	limit := gen.ListRequestsByEndpointParamsLimitDefault
	if p.Limit != nil {
		limit = *p.Limit
	}
	to := min(from+limit, len(all))
	payloads := p.Expand != nil && *p.Expand == gen.ListRequestsByEndpointParamsExpandPayloads
	if payloads {
		// The answer copies the inputs it lists: reserved (twice, for the
		// encoder's buffer) until it is written.
		var n int64
		for _, e := range all[from:to] {
			n += 2 * int64(len(e.j.raw))
		}
		if !s.budget.admit(x.client, n) {
			return s.tooMany(fmt.Sprintf("the server's memory budget has no room for these payloads (%d MiB) now: ask for fewer (limit) or try again shortly", mib(n)), bytesRetry)
		}
		x.reserved += n
	}
	for _, e := range all[from:to] {
		it := gen.RequestHistoryItem{
			RequestID:  e.j.id,
			EndpointID: &endpoint,
			SentAt:     ptr(e.sent.UTC()),
			EndedAt:    ptr(e.end.UTC()),
			StatusCode: ptr(e.code),
			Duration:   ptr(e.end.Sub(e.sent).Seconds()),
		}
		if e.started {
			it.StartedAt = ptr(e.sent.Add(s.cfg.queueTime).UTC())
		}
		if payloads && e.j.raw != nil {
			it.JSONInput = ptr(json.RawMessage(e.j.raw))
		}
		page.Items = append(page.Items, it)
	}
	if to < len(all) {
		page.HasMore, page.NextCursor = true, ptr(strconv.Itoa(to))
	}
	return jsonAnswer(http.StatusOK, page)
}

// historyStatus is the job's status in the history's terms.
func historyStatus(code int) gen.ListRequestsByEndpointParamsStatus {
	switch {
	case code >= 500:
		return gen.ListRequestsByEndpointParamsStatusError
	case code >= 400:
		return gen.ListRequestsByEndpointParamsStatusUserError
	}
	return gen.ListRequestsByEndpointParamsStatusSuccess
}

// historyCode is the status code the job ended with, as far as the server
// knows (a model error counts once the model has run).
func historyCode(j *job) int {
	err, _ := j.outcome()
	switch {
	case j.cancelled.Load() != 0:
		return 499
	case err != nil:
		if me, ok := err.(*ModelError); ok && me.StatusCode != 0 {
			return me.StatusCode
		}
		return http.StatusUnprocessableEntity
	}
	return http.StatusOK
}
