package wrapper_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// The server reads the whole submit (it would queue and bill the job),
// then the caller's context ends before the answer: the job may exist.
func TestASubmitCancelledInFlightIsUnknown(t *testing.T) {
	for name, mk := range map[string]func() (context.Context, context.CancelFunc){
		"cancel": func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
		"deadline": func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 300*time.Millisecond)
		},
	} {
		t.Run(name, func(t *testing.T) {
			got := make(chan struct{}, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.ReadAll(r.Body)
				got <- struct{}{}
				<-r.Context().Done()
			}))
			defer srv.Close()
			c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithEnvironment(nil), wrapper.WithBearerToken("x"))
			require.NoError(t, err)
			ctx, cancel := mk()
			defer cancel()
			if name == "cancel" {
				go func() { <-got; time.Sleep(50 * time.Millisecond); cancel() }()
			}
			_, err = c.Submit(ctx, input())
			assert.ErrorIs(t, err, wrapper.ErrOutcomeUnknown, "the server read the submit: the job may be queued and billed")
		})
	}
}

// fakeFal queues every submit and then resets the connection (the answer
// is lost); its history lists `others` jobs that ended after the lost one,
// newest first, then the lost ones; its clock (Date included) runs skew
// ahead.
type fakeFal struct {
	others    int
	skew      time.Duration
	mu        sync.Mutex
	jobs      []json.RawMessage
	sent      []time.Time
	submits   atomic.Int32
	histCalls atomic.Int32
}

func (f *fakeFal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Date", time.Now().Add(f.skew).UTC().Format(http.TimeFormat))
	switch {
	case r.Method == http.MethodPost:
		b, _ := io.ReadAll(r.Body)
		f.submits.Add(1)
		f.mu.Lock()
		f.jobs = append(f.jobs, b)
		f.sent = append(f.sent, time.Now().Add(f.skew))
		f.mu.Unlock()
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close() // queued; the answer is lost
	case r.URL.Path == "/v1/models/requests/by-endpoint":
		f.histCalls.Add(1)
		q := r.URL.Query()
		limit, _ := strconv.Atoi(q.Get("limit"))
		from, _ := strconv.Atoi(q.Get("cursor"))
		start, _ := time.Parse(time.RFC3339Nano, q.Get("start"))
		f.mu.Lock()
		defer f.mu.Unlock()
		var all []gen.RequestHistoryItem
		ep := "fal-ai/flux-1/dev/image-to-image"
		for i := range f.others {
			t := time.Now().Add(f.skew)
			in := json.RawMessage(fmt.Sprintf(`{"image_url":"https://example.com/x.png","prompt":"someone else's %d"}`, i))
			all = append(all, gen.RequestHistoryItem{RequestID: fmt.Sprintf("other-%d", i), EndpointID: &ep, SentAt: &t, EndedAt: &t, JSONInput: &in})
		}
		for i, j := range f.jobs {
			t := f.sent[i]
			e := t.Add(time.Second)
			if e.Before(start) {
				continue // the server filters by end time
			}
			all = append(all, gen.RequestHistoryItem{RequestID: fmt.Sprintf("lost-%d", i), EndpointID: &ep, SentAt: &t, EndedAt: &e, JSONInput: &j})
		}
		to := min(from+limit, len(all))
		page := gen.RequestHistory{Items: all[from:to]}
		if to < len(all) {
			page.HasMore, page.NextCursor = true, ptr(strconv.Itoa(to))
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(page)
	default:
		http.NotFound(w, r)
	}
}

func bigImage(n int) string {
	b := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"), bytes.Repeat([]byte{0}, n)...)
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b)
}

// A search cut short (more pages than it reads) never says that no job
// was created.
func TestATruncatedSearchIsNotANotFound(t *testing.T) {
	f := &fakeFal{others: 600}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithEnvironment(nil), wrapper.WithAtMostOnce(), wrapper.WithSettleWindow(2*time.Second))
	require.NoError(t, err)
	in := input()
	in.ImageURL = bigImage(3 << 20) // a 3 MiB photo, ~4 MiB as a data URI: small pages
	_, err = c.Submit(context.Background(), in)
	require.Error(t, err)
	assert.NotErrorIs(t, err, wrapper.ErrNotInHistory, "the job exists and is in the history")
	assert.ErrorIs(t, err, wrapper.ErrHistoryUnavailable)
	assert.Contains(t, err.Error(), "cut short")
}

// A client clock off by minutes is corrected from the server's Date.
func TestClockSkewIsCorrected(t *testing.T) {
	for _, skew := range []time.Duration{3 * time.Minute, -3 * time.Minute} {
		f := &fakeFal{skew: skew}
		srv := httptest.NewServer(f)
		c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithEnvironment(nil), wrapper.WithAtMostOnce(), wrapper.WithSettleWindow(3*time.Second))
		require.NoError(t, err)
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err, "server clock %v off", skew)
		assert.Equal(t, "lost-0", q.RequestID)
		srv.Close()
	}
}

// Two lost submits that differ only in a seed above 2^53 each get their
// own job back.
func TestLostSubmitsWithBigSeedsAreNotSwapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil)
		srv.Inject(queuetest.OpSubmit, queuetest.DropAfter(), queuetest.DropAfter())
		base := int64(1) << 62
		var wg sync.WaitGroup
		seeds := map[int64]int64{}
		var mu sync.Mutex
		for i := range int64(2) {
			wg.Go(func() {
				in := input()
				in.Seed = ptr(base + i)
				q, err := c.Submit(context.Background(), in)
				require.NoError(t, err)
				res, err := c.Wait(context.Background(), q.RequestID)
				require.NoError(t, err)
				mu.Lock()
				seeds[base+i] = res.Seed
				mu.Unlock()
			})
		}
		wg.Wait()
		for asked, s := range seeds {
			assert.Equal(t, asked, s, "the job found for seed %d ran another seed", asked)
		}
	})
}

// A job this client waits on (a stored id) is never handed to a lost
// submit of the same input.
func TestALostSubmitNeverClaimsAResumedJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, nil, wrapper.WithAtMostOnce())
		earlier, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken(testToken), wrapper.WithHTTPClient(srv.Client()), wrapper.WithEnvironment(nil))
		require.NoError(t, err)
		stored, err := earlier.Submit(context.Background(), input())
		require.NoError(t, err)
		_, err = c.Wait(context.Background(), stored.RequestID)
		require.NoError(t, err)
		srv.Inject(queuetest.OpSubmit, queuetest.DropAfter())
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		assert.NotEqual(t, stored.RequestID, q.RequestID)
	})
}

// A plain 500 whose body differs on each call (a trace id) still ends as
// the model's answer, and the caller gets that answer.
func TestAPlain500WithAVaryingBodyEnds(t *testing.T) {
	var results atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodPost:
			fmt.Fprint(w, `{"status":"IN_QUEUE","request_id":"r1","queue_position":0}`)
		case strings.HasSuffix(r.URL.Path, "/status"):
			fmt.Fprint(w, `{"status":"COMPLETED","request_id":"r1"}`)
		default:
			n := results.Add(1)
			w.WriteHeader(500)
			fmt.Fprintf(w, `{"detail":"CUDA out of memory","trace_id":"t-%d"}`, n)
		}
	}))
	defer srv.Close()
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithEnvironment(nil), wrapper.WithRetries(2),
		wrapper.WithStatusMode(wrapper.StatusPoll),
		wrapper.WithBackoff(func(int) time.Duration { return time.Millisecond }))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Run(ctx, input())
	var ae *wrapper.APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, 500, ae.StatusCode)
	assert.EqualValues(t, 3, results.Load())
}
