package wrapper

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/endpoint"
	"github.com/fluxi2i/fluxi2i/internal/errprefix"
)

// Settling a lost submit. fal has no idempotency key: when a submit's
// answer is lost after the request may have reached the server, the job
// may exist, and only fal's request history can tell. It lists jobs once
// they have ended, with the submit body as received; the client looks for
// an item of this endpoint whose json_input equals what it sent, sent
// inside the window of that submit, whose request id it does not already
// know. It asks at once and then every few seconds, until it finds one or
// the window has passed: by then a job the submit created would have
// ended (see settleWindow).

// historyError says why the history could not settle a submit.
type historyError struct {
	why      string
	notFound bool // the history answered, and the job is not in it
}

func (e *historyError) Error() string { return "fluxi2i: request history: " + e.why }

func (e *historyError) Is(target error) bool {
	if e.notFound {
		return target == ErrNotInHistory
	}
	return target == ErrHistoryUnavailable
}

// The settle window (WithSettleWindow): how long after a submit's last
// ambiguous attempt its job may still end. With a start timeout, a job
// that has not started by then never will; settleRunAllowance is for the
// run itself (seconds for this model).
const (
	defaultSettleWindow = 10 * time.Minute
	settleRunAllowance  = 2 * time.Minute
	// settleSkew widens the window of sent_at for the clocks of client
	// and server.
	settleSkew = time.Minute
	// settlePages bounds the pages read of one history query.
	settlePages = 50
)

func (s *settings) settleWindow() time.Duration {
	switch {
	case s.window > 0:
		return s.window
	case s.params.XFalRequestTimeout != nil:
		return time.Duration(*s.params.XFalRequestTimeout*float64(time.Second)) + settleRunAllowance
	}
	return defaultSettleWindow
}

// lostSubmit is a submit whose job may exist: what was sent, and when.
type lostSubmit struct {
	body        func() (io.ReadCloser, error)
	size        int64
	first, last time.Time // the first ambiguous attempt's start, the last one's end
	deadline    time.Time // when to stop looking; zero: the settle window after last
	digest      []byte    // of the canonical body, once computed

	since     time.Time     // the next poll asks for jobs that ended since (server time)
	limit     int           // items a page; halved when a page is too large
	offset    time.Duration // the server's clock minus the client's
	clocked   bool          // offset was measured
	truncated bool          // the last poll left pages unread
	failed    error         // the last poll's failure
}

// Settle looks in the request history for a job submitted with in (and
// the submit options given, as to Submit) at or after sent (less a minute
// for the clocks), for example a job a crashed process journaled before
// its submit's answer came. It waits until the settle window after sent
// has passed (it looks once when it has). It returns the job (Queued.FromHistory is set), or an error
// matching ErrNotInHistory (no such job: submitting is safe) or
// ErrHistoryUnavailable (it cannot tell).
func (c *Client) Settle(ctx context.Context, in gen.Input, sent time.Time, opts ...Option) (*Queued, error) {
	s, err := c.call(forSubmit, "Settle", opts)
	if err != nil {
		return nil, err
	}
	p, err := c.encode(in, s)
	if err != nil {
		return nil, err
	}
	ctx, end := c.startJob(ctx, JobStart{Call: "settle", Input: &in})
	// The job may have been sent at any time from the intent until the
	// process ended: any sent_at since then matches; the window runs from
	// the intent.
	q, err := c.settle(ctx, s, &lostSubmit{body: p.reader, size: p.size, first: sent, last: time.Now(), deadline: sent.Add(s.settleWindow())})
	if q != nil {
		end(q.RequestID, nil, nil)
	} else {
		end("", nil, err)
	}
	return q, err
}

// historyDown is why the history cannot be used for s, or "".
func (c *Client) historyDown(s *settings) string {
	if p := s.params.XFalStoreIO; p != nil && *p == gen.SubmitParamsXFalStoreION0 {
		return "X-Fal-Store-IO: 0 keeps no payload to match (WithNoStoreIO)"
	}
	if why := c.histDown.Load(); why != nil {
		return *why
	}
	return ""
}

// settle polls the history for ls's job until it is found, the window
// has passed or ctx ends. Each poll asks for what ended since the previous
// one (less the skew), so a long window does not re-read the history.
func (c *Client) settle(ctx context.Context, s *settings, ls *lostSubmit) (*Queued, error) {
	deadline := ls.deadline
	if deadline.IsZero() {
		deadline = ls.last.Add(s.settleWindow())
	}
	c.known.keepFor(2 * (s.settleWindow() + settleSkew))
	delay := time.Second
	unsettled := func(err error) (*Queued, error) {
		c.event(ctx, JobEvent{Kind: EventHistory})
		c.stats.unsettled.Add(1)
		return nil, err
	}
	for {
		if why := c.historyDown(s); why != "" {
			return unsettled(&historyError{why: why})
		}
		polled := time.Now()
		q, err := c.searchHistory(ctx, s, ls)
		if q != nil {
			c.event(ctx, JobEvent{Kind: EventHistory, RequestID: q.RequestID, Found: true})
			c.stats.settled.Add(1)
			c.set.log.Info("fluxi2i: a lost submit's job was found in the request history", "request_id", q.RequestID)
			return q, nil
		}
		if ctx.Err() != nil {
			return unsettled(errprefix.Errorf("fluxi2i: settling a lost submit: %w", ctx.Err()))
		}
		if err != nil && permanentHistory(err) {
			why := errprefix.Strip(err.Error())
			c.histDown.CompareAndSwap(nil, &why)
			continue // reported above
		}
		switch {
		case err != nil:
			ls.failed = err
		case ls.truncated:
			ls.failed = nil // pages were left unread: the next poll starts over
		default:
			ls.failed = nil
			ls.since = polled.Add(ls.offset - settleSkew) // the next poll asks for what ended since
		}
		if !time.Now().Before(deadline) {
			switch {
			case ls.failed != nil:
				return unsettled(&historyError{why: "could not be read: " + errprefix.Strip(ls.failed.Error())})
			case ls.truncated:
				return unsettled(&historyError{why: fmt.Sprintf("more than %d pages of jobs ended in the window: the search was cut short", settlePages)})
			}
			return unsettled(&historyError{why: fmt.Sprintf("no job with this input ended within %v of the submit", s.settleWindow()), notFound: true})
		}
		if err := sleep(ctx, min(delay, time.Until(deadline))); err != nil {
			return unsettled(errprefix.Errorf("fluxi2i: settling a lost submit: %w", err))
		}
		delay = min(delay*2, 15*time.Second)
	}
}

// permanentHistory reports an answer that means the history is not there
// for this client at all: 404 (the aggregator), 401 or 403 (the key).
func permanentHistory(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.StatusCode {
	case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden:
		return true
	}
	return false
}

// searchHistory reads the history once (every page of what ended since
// ls.since) for ls's job. The server's clock is learnt from its Date
// header: a client clock off by more than half the skew shifts the window
// (in the server's time) and the search is made again.
func (c *Client) searchHistory(ctx context.Context, s *settings, ls *lostSubmit) (*Queued, error) {
	if ls.digest == nil {
		d, err := bodyDigest(ls.body)
		if err != nil {
			return nil, err
		}
		ls.digest = d
		ls.since = ls.first.Add(-settleSkew)
		// Each item carries a whole input: a page must fit the size limit.
		ls.limit = int(min(max(s.maxBody/(2*ls.size+4096), gen.ListRequestsByEndpointParamsLimitMinimum), gen.ListRequestsByEndpointParamsLimitMaximum))
	}
	ls.truncated = false
	expand := gen.ListRequestsByEndpointParamsExpandPayloads
	since := ls.since
	params := gen.ListRequestsByEndpointParams{EndpointID: endpoint.ID(), Start: &since, Expand: &expand}
	for page := 0; page < settlePages; page++ {
		from, to := ls.first.Add(ls.offset-settleSkew), ls.last.Add(ls.offset+settleSkew)
		limit := ls.limit
		params.Limit = &limit
		var items *gen.RequestHistory
		var date time.Time
		_, err := c.do(ctx, s, op{name: "history"}, func(ctx context.Context, a *attempt) error {
			sent := time.Now()
			resp, err := c.roundTrip(ctx, a, func(ctx context.Context) (*http.Request, error) {
				return gen.NewListRequestsByEndpointRequestWithContext(ctx, c.histServer, &params)
			})
			if err != nil {
				return err
			}
			r, err := gen.ParseListRequestsByEndpointResponse(resp)
			if err != nil {
				return undecodable(a, err)
			}
			if r.JSON200 == nil {
				return fmt.Errorf("fluxi2i: history: undecodable HTTP %d answer", a.status)
			}
			items = r.JSON200
			if d, err := http.ParseTime(a.header.Get("Date")); err == nil {
				date = d.Add(time.Since(sent) / 2)
			}
			return nil
		})
		var tooBig *tooLargeError
		if errors.As(err, &tooBig) && ls.limit > 1 {
			ls.limit /= 2 // big inputs: smaller pages
			page--
			continue
		}
		if err != nil {
			return nil, err
		}
		if !date.IsZero() && !ls.clocked {
			ls.clocked = true
			if off := date.Sub(time.Now()); off > settleSkew/2 || off < -settleSkew/2 {
				ls.offset = off.Round(time.Second)
				ls.since = ls.since.Add(ls.offset)
				return c.searchHistory(ctx, s, ls) // again, in the server's time
			}
		}
		for _, it := range items.Items {
			at := it.SentAt
			if at == nil {
				at = it.EndedAt // a job ends after it is sent
			}
			switch {
			case it.JSONInput == nil, it.RequestID == "", at == nil,
				at.Before(from), it.SentAt != nil && it.SentAt.After(to),
				it.EndpointID != nil && *it.EndpointID != params.EndpointID,
				c.known.has(it.RequestID):
				continue
			}
			if d, err := rawDigest(*it.JSONInput); err != nil || string(d) != string(ls.digest) || !c.known.add(it.RequestID, time.Now()) {
				continue
			}
			it.JSONInput, it.JSONOutput = nil, nil // the caller has the input; the output is the result call's
			raw, _ := json.Marshal(it)
			return &Queued{RequestID: it.RequestID, FromHistory: true, Raw: raw}, nil
		}
		if !items.HasMore || items.NextCursor == nil || *items.NextCursor == "" {
			return nil, nil
		}
		params.Cursor = items.NextCursor
	}
	ls.truncated = true
	return nil, nil
}

// bodyDigest is the canonical digest of a JSON body (see rawDigest).
func bodyDigest(newBody func() (io.ReadCloser, error)) ([]byte, error) {
	rc, err := newBody()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return readerDigest(rc)
}

// rawDigest hashes JSON canonically: object keys sorted, integers exact
// (a 64-bit seed is not rounded to a float), other numbers in one form,
// so that equal JSON gives equal digests whatever the spacing, key order
// or number spelling.
func rawDigest(b []byte) ([]byte, error) { return readerDigest(bytes.NewReader(b)) }

func readerDigest(r io.Reader) ([]byte, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("fluxi2i: reading JSON to compare: %w", err)
	}
	h := sha256.New()
	canonical(h, v)
	return h.Sum(nil), nil
}

func canonical(h hash.Hash, v any) {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		h.Write([]byte{'{'})
		for _, k := range keys {
			io.WriteString(h, strconv.Quote(k))
			h.Write([]byte{':'})
			canonical(h, v[k])
			h.Write([]byte{','})
		}
		h.Write([]byte{'}'})
	case []any:
		h.Write([]byte{'['})
		for _, e := range v {
			canonical(h, e)
			h.Write([]byte{','})
		}
		h.Write([]byte{']'})
	case string:
		io.WriteString(h, strconv.Quote(v))
	case json.Number:
		io.WriteString(h, "n"+canonicalNumber(string(v)))
	case bool:
		io.WriteString(h, strconv.FormatBool(v))
	case nil:
		io.WriteString(h, "null")
	}
}

// canonicalNumber is an integer exactly (1e3 and 1000 stay apart from
// 1000.5, 2^53+1 from 2^53), any other number as its float64.
func canonicalNumber(n string) string {
	if !strings.ContainsAny(n, ".eE") {
		if i, ok := new(big.Int).SetString(n, 10); ok {
			return i.String()
		}
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil {
		return n
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10) // 1000.0 is 1000
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
