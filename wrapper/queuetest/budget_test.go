package queuetest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// serve sends one request straight to the handler, as if from the client
// at addr (an IP address: who the caps per client count).
func serve(srv *queuetest.Server, addr, method, path string, body io.Reader, size int64) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "http://queue.example"+path, body)
	req.RemoteAddr = net.JoinHostPort(addr, "40000")
	req.ContentLength = size
	req.Header.Set("Authorization", "Key k")
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, req)
	return w
}

func bigBody(imageBytes int) []byte {
	return []byte(`{"prompt":"p","image_url":"data:image/png;base64,` + strings.Repeat("A", imageBytes) + `"}`)
}

// A flood of concurrent big submits from many clients (the 31 MiB flood
// at a tenth of its scale, budget included, for the race detector's sake;
// wrapper/queuetest/simulator floods at full scale): the bytes held never exceed
// the budget, the submits past it are answered 429 with
// Retry-After in fal's error shape, before their bodies are read; the
// timer gives the bytes back when the jobs expire, with no request.
func TestTheBudgetHoldsUnderAFloodOfBigSubmits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 256 << 20 / 10
		srv := queuetest.New(queuetest.MaxBytes(budget), queuetest.MaxBodyBytes(32<<20/10), queuetest.Retention(time.Minute),
			queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second))
		defer srv.Close()
		body := bigBody(31 << 20 / 10)
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[int]int{}
		for i := range 30 {
			wg.Go(func() {
				w := serve(srv, fmt.Sprintf("10.0.%d.%d", i/10, i%10+1), http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(body), int64(len(body)))
				mu.Lock()
				codes[w.Code]++
				mu.Unlock()
				if w.Code == http.StatusTooManyRequests {
					assert.NotEmpty(t, w.Header().Get("Retry-After"))
					var pe gen.PlatformError
					require.NoError(t, json.Unmarshal(w.Body.Bytes(), &pe))
					require.NotNil(t, pe.Detail)
					assert.Contains(t, *pe.Detail, "memory budget")
				}
			})
		}
		wg.Wait()
		synctest.Wait() // the model has run for every job
		st := srv.Stats()
		assert.LessOrEqual(t, st.PeakBytesHeld, int64(budget), "never more than the budget")
		assert.Positive(t, codes[200])
		assert.Positive(t, codes[429])
		assert.Equal(t, 30, codes[200]+codes[429], "%v", codes)
		assert.EqualValues(t, codes[429], st.Refused)
		assert.GreaterOrEqual(t, st.BytesHeld, int64(codes[200])*int64(len(body)), "each job keeps its body for the history")
		assert.Less(t, st.BytesHeld, int64(codes[200])*int64(len(body))*5/4, "and not a second copy of its image")

		time.Sleep(3*time.Minute + time.Second) // no request meanwhile
		st = srv.Stats()
		assert.Zero(t, st.BytesHeld, "the timer forgot the expired jobs")
		w := serve(srv, "10.9.9.9", http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(body), int64(len(body)))
		assert.Equal(t, 200, w.Code)
	})
}

// One client cannot take every job slot or the whole budget: past its
// share (a quarter by default) it gets 429 while others are still served.
func TestOneClientCannotTakeEverySlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := queuetest.New(queuetest.MaxJobs(8), queuetest.MaxBytes(8<<20), queuetest.Retention(time.Minute))
		defer srv.Close()
		submit := func(addr string, body []byte) *httptest.ResponseRecorder {
			return serve(srv, addr, http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(body), int64(len(body)))
		}
		small := []byte(`{"prompt":"p","image_url":"https://example.com/a.png"}`)
		for range 2 {
			assert.Equal(t, 200, submit("192.0.2.1", small).Code)
		}
		w := submit("192.0.2.1", small)
		assert.Equal(t, 429, w.Code, "a quarter of MaxJobs")
		assert.NotEmpty(t, w.Header().Get("Retry-After"))
		assert.Equal(t, 200, submit("192.0.2.2", small).Code, "another client is served")
		assert.Equal(t, 200, submit("2001:db8::1", small).Code)
		assert.Equal(t, 200, submit("2001:db8::2", small).Code, "an IPv6 client is its /64")
		assert.Equal(t, 429, submit("2001:db8::3", small).Code)

		// Bytes: a quarter of 8 MiB is 2 MiB a client, body and a decoded copy.
		big := bigBody(900 << 10)
		assert.Equal(t, 200, submit("198.51.100.7", big).Code)
		assert.Equal(t, 429, submit("198.51.100.7", big).Code, "a client's share of the bytes")
		assert.Equal(t, 200, submit("198.51.100.8", big).Code)

		w = serve(srv, "192.0.2.9", http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(big), -1)
		assert.Equal(t, 200, w.Code, "a body of unknown length reserves as it is read")
		srv2 := queuetest.New(queuetest.MaxJobs(8), queuetest.MaxJobsPerClient(8))
		defer srv2.Close()
		for range 8 {
			assert.Equal(t, 200, serve(srv2, "192.0.2.1", http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(small), int64(len(small))).Code)
		}
	})
}

// Concurrent result calls of a sync_mode job: the model runs once, the
// result is encoded once and kept (the outputs, delivered inline only,
// are given back), and every caller gets the same bytes.
func TestSyncResultsAreEncodedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var runs int
		var mu sync.Mutex
		img := bytes.Repeat([]byte{0x89, 'P', 'N', 'G'}, 1<<18) // 1 MiB
		model := func(context.Context, string, gen.Input) ([]queuetest.Rendering, error) {
			mu.Lock()
			runs++
			mu.Unlock()
			out := make([]queuetest.Rendering, 4)
			for i := range out {
				out[i] = queuetest.Rendering{ContentType: "image/png", Data: bytes.Clone(img), Width: 1, Height: 1}
			}
			return out, nil
		}
		srv := queuetest.New(queuetest.WithModel(model), queuetest.MaxBytes(256<<20), queuetest.QueueTime(0), queuetest.RunTime(0))
		defer srv.Close()
		body := []byte(`{"prompt":"p","image_url":"https://example.com/a.png","num_images":4,"sync_mode":true}`)
		w := serve(srv, "192.0.2.1", http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(body), int64(len(body)))
		require.Equal(t, 200, w.Code)
		var q gen.Enqueued
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &q))
		time.Sleep(time.Second)
		synctest.Wait()
		outputs := srv.Stats().BytesHeld

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		bodies := make([][]byte, 6)
		var wg sync.WaitGroup
		for i := range bodies {
			wg.Go(func() {
				w := serve(srv, "192.0.2.1", http.MethodGet, "/fal-ai/flux-1/requests/"+q.RequestID, nil, 0)
				require.Equal(t, 200, w.Code)
				bodies[i] = w.Body.Bytes()
			})
		}
		wg.Wait()
		runtime.ReadMemStats(&after)
		size := int64(len(bodies[0]))
		assert.Greater(t, size, int64(4*1<<20*4/3), "four inline images")
		for _, b := range bodies[1:] {
			assert.Equal(t, bodies[0], b)
		}
		assert.Equal(t, 1, runs, "the model ran once")
		// The six recorders hold their copies (6 x size); one encoding adds
		// about one more, six encodings would add six.
		assert.Less(t, int64(after.TotalAlloc-before.TotalAlloc), 6*size*2+3*size, "encoded once")
		st := srv.Stats()
		assert.Less(t, st.BytesHeld, outputs-int64(len(body))+size+int64(len(body))+1<<10, "the encoded result replaces the outputs")
		assert.Greater(t, st.BytesHeld, size)
		var out gen.Output
		require.NoError(t, json.Unmarshal(bodies[0], &out))
		require.Len(t, out.Images, 4)
		assert.True(t, strings.HasPrefix(out.Images[0].URL, "data:image/png;base64,iVBOR"))
	})
}

// With PublicURL, job and image URLs name it whatever Host a request
// sends; the files answer CORS to any origin, GET only.
func TestPublicURLAndCORSOnFiles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := queuetest.New(queuetest.PublicURL("https://sim.example:8443/"), queuetest.QueueTime(0), queuetest.RunTime(0))
		defer srv.Close()
		body := []byte(`{"prompt":"p","image_url":"https://example.com/a.png"}`)
		w := serve(srv, "192.0.2.1", http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(body), int64(len(body)))
		require.Equal(t, 200, w.Code)
		var q gen.Enqueued
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &q))
		require.NotNil(t, q.StatusURL)
		assert.True(t, strings.HasPrefix(*q.StatusURL, "https://sim.example:8443/fal-ai/"), *q.StatusURL)
		synctest.Wait()
		w = serve(srv, "192.0.2.1", http.MethodGet, "/fal-ai/flux-1/requests/"+q.RequestID, nil, 0) // Host: queue.example
		require.Equal(t, 200, w.Code, w.Body.String())
		var out gen.Output
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &out))
		require.Len(t, out.Images, 1)
		u := out.Images[0].URL
		require.True(t, strings.HasPrefix(u, "https://sim.example:8443/files/"), u)
		assert.NotContains(t, u, "queue.example", "never the request's Host")

		path := strings.TrimPrefix(u, "https://sim.example:8443")
		w = serve(srv, "198.51.100.1", http.MethodGet, path, nil, 0)
		assert.Equal(t, 200, w.Code)
		assert.Equal(t, "*", w.Header().Get("Access-Control-Allow-Origin"))
		assert.Empty(t, w.Header().Get("Access-Control-Allow-Credentials"))
		w = serve(srv, "198.51.100.1", http.MethodGet, "/files/nosuchkey/0.jpeg", nil, 0)
		assert.Equal(t, 404, w.Code)
		assert.Equal(t, "*", w.Header().Get("Access-Control-Allow-Origin"), "a miss is readable too")
		w = serve(srv, "198.51.100.1", http.MethodPut, path, nil, 0)
		assert.Equal(t, http.StatusMethodNotAllowed, w.Code, "GET only")
	})
}

// A job keeps one copy of its input: the body as received (for the
// history), not a decoded image_url beside it. Measured on the heap.
func TestAJobHoldsOneCopyOfItsInput(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := queuetest.New(queuetest.QueueTime(0), queuetest.RunTime(0))
		defer srv.Close()
		const n, size = 4, 3 << 20
		body := bigBody(size)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var ids []string
		for range n {
			w := serve(srv, "192.0.2.1", http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(body), int64(len(body)))
			require.Equal(t, 200, w.Code)
			var q gen.Enqueued
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &q))
			ids = append(ids, q.RequestID)
		}
		synctest.Wait() // every model has run
		runtime.GC()
		runtime.ReadMemStats(&after)
		grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		assert.Greater(t, grew, int64(n*size), "the bodies are kept")
		assert.Less(t, grew, int64(n*size*3/2), "and nothing else of that size: %d MiB for %d MiB of bodies", grew>>20, n*size>>20)
		in, _, ok := srv.Job(ids[0])
		require.True(t, ok)
		assert.Len(t, in.ImageURL, size+len("data:image/png;base64,"), "the input is still whole, read from the body")
		runtime.KeepAlive(body)
	})
}

// A body that no state of the server could hold is a 413 that says so,
// not a 429 to retry forever; with or without a Content-Length.
func TestABodyLargerThanAClientMayHoldIs413(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := queuetest.New(queuetest.MaxBytes(8 << 20)) // a client may hold 2 MiB
		defer srv.Close()
		body := bigBody(1536 << 10) // 1.5 MiB: with its copy, 3 MiB
		for _, size := range []int64{int64(len(body)), -1} {
			w := serve(srv, "192.0.2.1", http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(body), size)
			assert.Equal(t, http.StatusRequestEntityTooLarge, w.Code, "size %d", size)
			assert.Contains(t, w.Body.String(), "more than a client may ever hold")
		}
		assert.Zero(t, srv.Stats().BytesHeld)
	})
}
