package proxy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/proxy"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// answer is what one concurrent request got (no require in goroutines).
type answer struct {
	code  int
	retry string
	body  string
	err   error
}

// try sends a browser-like request through the proxy, for goroutines.
func (f *fixture) try(method, target, body string, hdr ...string) answer {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.proxy.URL, r)
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set(proxy.TargetHeader, target)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, retry: resp.Header.Get("Retry-After"), body: string(b), err: err}
}

// together runs n copies of fn at once and returns their answers.
func together(n int, fn func(i int) answer) []answer {
	out := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i] = fn(i) })
	}
	wg.Wait()
	return out
}

func codes(as []answer) map[int]int {
	m := map[int]int{}
	for _, a := range as {
		if a.err != nil {
			m[-1]++
			continue
		}
		m[a.code]++
	}
	return m
}

func requestID(t *testing.T, body string) string {
	t.Helper()
	var q struct {
		RequestID string `json:"request_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &q), body)
	require.NotEmpty(t, q.RequestID, body)
	return q.RequestID
}

var byHeader = proxy.UserOf(func(r *http.Request) string { return r.Header.Get("X-User") })

const submitTarget = queue + "/dev/image-to-image"

// 100 concurrent submits of one user, limit 3, against an upstream that
// takes 200 ms per submit: 3 reach the upstream, the rest are 429. A 503
// on a result does not free a slot; a cancel does.
func TestJobsPerUserHoldsUnderConcurrency(t *testing.T) {
	f := startWith(t, upstream{opts: []queuetest.Option{queuetest.QueueTime(10 * time.Second)}},
		proxy.AllowAnyone(), byHeader, proxy.JobsPerUser(3), proxy.RequestsPerUser(0))
	slow := make([]queuetest.Fault, 100)
	for i := range slow {
		slow[i] = queuetest.Slow(200 * time.Millisecond)
	}
	f.up.Inject(queuetest.OpSubmit, slow...)
	as := together(100, func(int) answer { return f.try(http.MethodPost, submitTarget, input, "X-User", "alice") })
	c := codes(as)
	assert.Equal(t, 3, c[200], "%v", c)
	assert.Equal(t, 97, c[429], "%v", c)
	assert.EqualValues(t, 3, f.up.Stats().Submits, "at most the limit forwarded")
	var ids []string
	for _, a := range as {
		if a.code == 200 {
			ids = append(ids, requestID(t, a.body))
		} else {
			assert.NotEmpty(t, a.retry, "a 429 says when to retry")
		}
	}
	require.Len(t, ids, 3)

	// The job still runs: a 503 or 429 on its result says nothing of its end.
	f.up.Inject(queuetest.OpResult, queuetest.Fail(503), queuetest.Fail(429))
	for range 2 {
		a := f.try(http.MethodGet, queue+"/requests/"+ids[0], "", "X-User", "alice")
		require.NoError(t, a.err)
		assert.Contains(t, []int{429, 503}, a.code, a.body)
	}
	a := f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
	assert.Equal(t, 429, a.code, "the slots are still taken")
	a = f.try(http.MethodPut, queue+"/requests/"+ids[0]+"/cancel", "", "X-User", "alice")
	assert.Equal(t, 202, a.code, a.body)
	a = f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
	assert.Equal(t, 200, a.code, "a cancel frees its slot: %s", a.body)
}

// A submit that definitely failed gives its slot back: a 4xx answer, or an
// upstream that could not be reached. One whose answer was lost after it
// was sent keeps it (the job may be queued).
func TestASubmitThatFailedFreesItsSlot(t *testing.T) {
	f := start(t, proxy.AllowAnyone(), byHeader, proxy.JobsPerUser(1))
	f.up.Inject(queuetest.OpSubmit, queuetest.Fail(400), queuetest.Fail(400))
	for range 2 {
		a := f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
		assert.Equal(t, 400, a.code, a.body)
	}
	f.up.Inject(queuetest.OpSubmit, queuetest.DropAfter())
	a := f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
	assert.Equal(t, 502, a.code, a.body)
	a = f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
	assert.Equal(t, 429, a.code, "the lost answer's job may run: its slot is kept: %s", a.body)

	// Nothing listens: no request was ever sent.
	c, err := wrapper.New(wrapper.WithBaseURL("http://127.0.0.1:1"), wrapper.WithBearerToken(serverKey), wrapper.WithEnvironment(nil))
	require.NoError(t, err)
	h, err := proxy.New(c, proxy.AllowAnyone(), proxy.JobsPerUser(1))
	require.NoError(t, err)
	down := &fixture{proxy: httptestServer(t, h)}
	for range 3 {
		a := down.try(http.MethodPost, submitTarget, input)
		assert.Equal(t, 502, a.code, a.body)
	}
}

// One user's submit-then-cancel cycles cannot make the proxy forget
// another user's job; a store full of live jobs refuses new submits.
func TestTheOwnerStoreNeverEvictsALiveJob(t *testing.T) {
	f := startWith(t, upstream{opts: []queuetest.Option{queuetest.QueueTime(10 * time.Second)}},
		proxy.AllowAnyone(), byHeader, proxy.TrackedJobs(4))
	a := f.try(http.MethodPost, submitTarget, input, "X-User", "bob")
	require.Equal(t, 200, a.code, a.body)
	bobs := requestID(t, a.body)
	for range 10 {
		a := f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
		require.Equal(t, 200, a.code, a.body)
		a = f.try(http.MethodPut, queue+"/requests/"+requestID(t, a.body)+"/cancel", "", "X-User", "alice")
		require.Equal(t, 202, a.code, a.body)
	}
	a = f.try(http.MethodGet, queue+"/requests/"+bobs+"/status", "", "X-User", "bob")
	assert.Equal(t, 202, a.code, "bob's job is still his: %s", a.body)

	// Three live jobs of alice and bob's one fill the store: a fifth is
	// refused, in fal's error shape, with Retry-After.
	for range 3 {
		a := f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
		require.Equal(t, 200, a.code, a.body)
	}
	a = f.try(http.MethodPost, submitTarget, input, "X-User", "carol")
	assert.Equal(t, 429, a.code, a.body)
	assert.Contains(t, a.body, `"detail"`)
	assert.NotEmpty(t, a.retry)
	a = f.try(http.MethodGet, queue+"/requests/"+bobs+"/status", "", "X-User", "bob")
	assert.Equal(t, 202, a.code, a.body)
}

// The store's bound is per user too: one user's live jobs fill their share
// only.
func TestTheOwnerStoreIsBoundedPerUser(t *testing.T) {
	f := startWith(t, upstream{opts: []queuetest.Option{queuetest.QueueTime(10 * time.Second)}},
		proxy.AllowAnyone(), byHeader, proxy.JobsPerUser(0), proxy.TrackedJobsPerUser(2))
	for range 2 {
		a := f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
		require.Equal(t, 200, a.code, a.body)
	}
	a := f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
	assert.Equal(t, 429, a.code, a.body)
	a = f.try(http.MethodPost, submitTarget, input, "X-User", "bob")
	assert.Equal(t, 200, a.code, a.body)
}

// 300 concurrent status streams of one user: at most RequestsPerUser
// (4 times JobsPerUser by default) reach the upstream. The streams that
// got through are held open until all 300 have their answer.
func TestRequestsPerUserBoundStreams(t *testing.T) {
	f := startWith(t, upstream{opts: []queuetest.Option{queuetest.QueueTime(time.Minute)}},
		proxy.AllowAnyone(), byHeader, proxy.JobsPerUser(2))
	a := f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
	require.Equal(t, 200, a.code, a.body)
	id := requestID(t, a.body)
	var answered sync.WaitGroup
	answered.Add(300)
	as := together(300, func(int) answer {
		req, _ := http.NewRequest(http.MethodGet, f.proxy.URL, nil)
		req.Header.Set(proxy.TargetHeader, queue+"/requests/"+id+"/status/stream")
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("X-User", "alice")
		resp, err := http.DefaultClient.Do(req)
		answered.Done()
		if err != nil {
			return answer{err: err}
		}
		answered.Wait() // a stream that got through stays open meanwhile
		resp.Body.Close()
		return answer{code: resp.StatusCode, retry: resp.Header.Get("Retry-After")}
	})
	c := codes(as)
	assert.LessOrEqual(t, f.up.Stats().StreamCalls, int64(8), "%v", c)
	assert.Equal(t, 8, c[200], "%v", c)
	assert.Equal(t, 292, c[429], "%v", c)
	for _, a := range as {
		if a.code == 429 {
			assert.Equal(t, "1", a.retry)
		}
	}
	// Another user is not held up by alice.
	a = f.try(http.MethodPost, submitTarget, input, "X-User", "bob")
	assert.Equal(t, 200, a.code, a.body)
}

// Concurrent big submit bodies never hold more than the budget at once;
// past a short wait they are refused with 429.
func TestSubmitBodiesStayInsideTheBudget(t *testing.T) {
	const mib = 1 << 20
	f := startWith(t, upstream{}, proxy.AllowAnyone(), proxy.JobsPerUser(0), proxy.RequestsPerUser(0),
		proxy.MaxBodyBytes(mib), proxy.BodyBudget(3*mib))
	slow := make([]queuetest.Fault, 20)
	for i := range slow {
		slow[i] = queuetest.Slow(100 * time.Millisecond)
	}
	f.up.Inject(queuetest.OpSubmit, slow...)
	big := `{"image_url":"https://example.com/cat.png","prompt":"` + strings.Repeat("a", mib-100) + `"}`
	as := together(20, func(int) answer { return f.try(http.MethodPost, submitTarget, big) })
	c := codes(as)
	assert.Equal(t, 20, c[200]+c[429], "%v", c)
	assert.GreaterOrEqual(t, c[200], 3, "%v", c)
	peak := proxy.HeldPeak(f.h)
	assert.Greater(t, peak, int64(mib-100), "the bodies were counted")
	assert.LessOrEqual(t, peak, int64(3*mib), "never more than the budget at once")

	// A body that cannot get room soon enough is 429, not a wait forever.
	g := startWith(t, upstream{}, proxy.AllowAnyone(), proxy.JobsPerUser(0), proxy.RequestsPerUser(0),
		proxy.MaxBodyBytes(mib), proxy.BodyBudget(mib))
	proxy.SetBodyWait(g.h, 20*time.Millisecond)
	slow = make([]queuetest.Fault, 5)
	for i := range slow {
		slow[i] = queuetest.Slow(500 * time.Millisecond)
	}
	g.up.Inject(queuetest.OpSubmit, slow...)
	as = together(5, func(int) answer { return g.try(http.MethodPost, submitTarget, big) })
	c = codes(as)
	assert.GreaterOrEqual(t, c[429], 1, "%v", c)
	assert.GreaterOrEqual(t, c[200], 1, "%v", c)
	assert.LessOrEqual(t, proxy.HeldPeak(g.h), int64(mib))
	for _, a := range as {
		if a.code == 429 {
			assert.Equal(t, "1", a.retry)
			assert.Contains(t, a.body, `"detail"`)
		}
	}
	assert.Contains(t, g.logs.String(), "reason=limit")

	_, err := proxy.New(mustClient(t), proxy.AllowAnyone(), proxy.BodyBudget(mib))
	assert.ErrorContains(t, err, "MaxBodyBytes", "a budget below one body is an error")
}

func mustClient(t *testing.T) *wrapper.Client {
	t.Helper()
	c, err := wrapper.New(wrapper.WithBearerToken("k"), wrapper.WithEnvironment(nil))
	require.NoError(t, err)
	return c
}

func httptestServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// A job another user saw COMPLETED but never fetched stays theirs: its
// slot is free, its record is not evictable. bob polls COMPLETED; alice's
// submit-then-cancel cycles through a store of 4 cannot make the proxy
// forget it, and bob's result is his.
func TestACompletedJobNotFetchedIsNotEvicted(t *testing.T) {
	f := start(t, proxy.AllowAnyone(), byHeader, proxy.TrackedJobs(4), proxy.JobsPerUser(1))
	a := f.try(http.MethodPost, submitTarget, input, "X-User", "bob")
	require.Equal(t, 200, a.code, a.body)
	bobs := requestID(t, a.body)
	require.Eventually(t, func() bool {
		a := f.try(http.MethodGet, queue+"/requests/"+bobs+"/status", "", "X-User", "bob")
		return a.code == 200 && strings.Contains(a.body, `"COMPLETED"`)
	}, 10*time.Second, 20*time.Millisecond)
	// COMPLETED frees bob's slot (JobsPerUser 1): he may submit again.
	a = f.try(http.MethodPost, submitTarget, input, "X-User", "bob")
	require.Equal(t, 200, a.code, "COMPLETED frees the job's slot: %s", a.body)
	a = f.try(http.MethodPut, queue+"/requests/"+requestID(t, a.body)+"/cancel", "", "X-User", "bob")
	require.Contains(t, []int{202, 400}, a.code, a.body)
	for range 10 {
		a := f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
		require.Equal(t, 200, a.code, a.body)
		a = f.try(http.MethodPut, queue+"/requests/"+requestID(t, a.body)+"/cancel", "", "X-User", "alice")
		require.Contains(t, []int{202, 400}, a.code, a.body)
	}
	a = f.try(http.MethodGet, queue+"/requests/"+bobs, "", "X-User", "bob")
	assert.Equal(t, 200, a.code, "bob's completed job is still his: %s", a.body)
	assert.Contains(t, a.body, `"images"`)

	// Fetched with a final answer, it is ended: evictable like any other.
	for range 4 {
		a := f.try(http.MethodPost, submitTarget, input, "X-User", "alice")
		require.Equal(t, 200, a.code, a.body)
		a = f.try(http.MethodPut, queue+"/requests/"+requestID(t, a.body)+"/cancel", "", "X-User", "alice")
		require.Contains(t, []int{202, 400}, a.code, a.body)
	}
	a = f.try(http.MethodGet, queue+"/requests/"+bobs, "", "X-User", "bob")
	assert.Equal(t, 403, a.code, "a fetched job may be forgotten: %s", a.body)
}
