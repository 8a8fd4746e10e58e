package wrapper_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// rawJob is the baseline: a minimal net/http client making the same three
// calls (submit, status, result), encoding the same input (in every job, as
// any client must: the wrapper does) and decoding the same types.
func rawJob(b testing.TB, hc *http.Client, base, auth string, in gen.Input) {
	body, err := json.Marshal(in)
	if err != nil {
		b.Fatal(err)
	}
	do := func(method, url string, payload []byte, into any) {
		var r io.Reader
		if payload != nil {
			r = bytes.NewReader(payload)
		}
		req, _ := http.NewRequest(method, url, r)
		req.Header.Set("Authorization", auth)
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			b.Fatalf("%s %s: %d", method, url, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			b.Fatal(err)
		}
	}
	var q gen.Enqueued
	do(http.MethodPost, base+"/fal-ai/flux-1/dev/image-to-image", body, &q)
	var st gen.QueueStatus
	do(http.MethodGet, base+"/fal-ai/flux-1/requests/"+q.RequestID+"/status", nil, &st)
	if st.Status != "COMPLETED" {
		b.Fatalf("status %s", st.Status)
	}
	var out gen.Output
	do(http.MethodGet, base+"/fal-ai/flux-1/requests/"+q.RequestID, nil, &out)
}

// benchRun runs whole jobs with a polling wrapper client: the same three
// calls as rawJob.
func benchRun(b *testing.B, base string, hc *http.Client, in gen.Input) {
	c, err := wrapper.New(wrapper.WithBaseURL(base), wrapper.WithBearerToken(testToken), wrapper.WithHTTPClient(hc), wrapper.WithStatusMode(wrapper.StatusPoll))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Run(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJobLoopback: one whole job against queuetest on loopback (which
// validates every request against the spec: that server cost is in both).
func BenchmarkJobLoopback(b *testing.B) {
	srv := queuetest.NewServer(queuetest.QueueTime(0), queuetest.RunTime(0))
	defer srv.Close()
	in := input()

	b.Run("raw-net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rawJob(b, srv.Client(), srv.URL, "Bearer "+testToken, in)
		}
	})
	b.Run("wrapper", func(b *testing.B) {
		// Polling: the same three calls as the baseline.
		benchRun(b, srv.URL, srv.Client(), in)
	})
}

// canned answers the three calls from memory, so only client work is
// measured.
type canned struct{ submit, status, result []byte }

func (c *canned) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	body, code := c.result, 200
	switch {
	case req.Method == http.MethodPost:
		body = c.submit
	case strings.HasSuffix(req.URL.Path, "/status"):
		body = c.status
	}
	return &http.Response{StatusCode: code, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Request: req}, nil
}

// cannedJob is canned answers of one job, r-1, at base.
func cannedJob() *canned {
	return &canned{
		submit: []byte(`{"status":"IN_QUEUE","request_id":"r-1","status_url":"http://queue.test/fal-ai/flux-1/requests/r-1/status","response_url":"http://queue.test/fal-ai/flux-1/requests/r-1","cancel_url":"http://queue.test/fal-ai/flux-1/requests/r-1/cancel","queue_position":0}`),
		status: []byte(`{"status":"COMPLETED","request_id":"r-1","metrics":{"inference_time":1.5}}`),
		result: []byte(`{"images":[{"url":"https://fal.media/files/x.jpeg","content_type":"image/jpeg","width":1024,"height":768}],"timings":{"inference":1.5},"seed":12345678901234567,"has_nsfw_concepts":[false],"prompt":"a cat dressed as a wizard"}`),
	}
}

// BenchmarkJobClientOnly: the same job against canned in-memory answers:
// the client's own cost, without network or server. interleaved runs a
// job of each in turn and reports their times and ratio.
func BenchmarkJobClientOnly(b *testing.B) {
	const base = "http://queue.test"
	hc := &http.Client{Transport: cannedJob()}
	in := input()
	b.Run("raw-net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rawJob(b, hc, base, "Bearer "+testToken, in)
		}
	})
	b.Run("wrapper", func(b *testing.B) {
		benchRun(b, base, hc, in)
	})
	// The two, one job each in turn, each timed on its own: whatever else
	// the machine does meanwhile falls on both alike, so the ratio holds
	// from run to run where the two above, minutes apart, drift.
	b.Run("interleaved", func(b *testing.B) {
		c, err := wrapper.New(wrapper.WithBaseURL(base), wrapper.WithBearerToken(testToken), wrapper.WithHTTPClient(hc), wrapper.WithStatusMode(wrapper.StatusPoll))
		if err != nil {
			b.Fatal(err)
		}
		var raw, lib time.Duration
		for b.Loop() {
			t0 := time.Now()
			rawJob(b, hc, base, "Bearer "+testToken, in)
			t1 := time.Now()
			if _, err := c.Run(context.Background(), in); err != nil {
				b.Fatal(err)
			}
			raw, lib = raw+t1.Sub(t0), lib+time.Since(t1)
		}
		b.ReportMetric(float64(raw.Nanoseconds())/float64(b.N), "raw-ns/job")
		b.ReportMetric(float64(lib.Nanoseconds())/float64(b.N), "wrapper-ns/job")
		b.ReportMetric(float64(lib)/float64(raw), "ratio")
	})
}

// BenchmarkDetection: how soon after the server marks a job COMPLETED the
// client asks for its result, streaming versus polling (default intervals),
// against queuetest on loopback. Reports p50 and p99 in ms, and the status
// polls and streams each job cost.
func BenchmarkDetection(b *testing.B) {
	for _, mode := range []wrapper.StatusMode{wrapper.StatusStream, wrapper.StatusPoll} {
		b.Run(mode.String(), func(b *testing.B) {
			srv := queuetest.NewServer(queuetest.QueueTime(10*time.Millisecond), queuetest.RunTime(40*time.Millisecond), queuetest.LogLines(2))
			defer srv.Close()
			c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken(testToken), wrapper.WithHTTPClient(srv.Client()), wrapper.WithStatusMode(mode))
			if err != nil {
				b.Fatal(err)
			}
			var lat []time.Duration
			var id string
			for b.Loop() {
				if _, err := c.Run(context.Background(), input(), wrapper.WithOnQueued(func(q *wrapper.Queued) { id = q.RequestID })); err != nil {
					b.Fatal(err)
				}
				done, asked, ok := srv.Detection(id)
				if !ok {
					b.Fatal("no detection record")
				}
				lat = append(lat, asked.Sub(done))
			}
			slices.Sort(lat)
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
			}
			st := srv.Stats()
			n := float64(len(lat))
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(st.StatusCalls)/n, "polls/job")
			b.ReportMetric(float64(st.StreamCalls)/n, "streams/job")
		})
	}
}

// BenchmarkSubmitLargeImage: submitting a 20 MB image, streamed from its
// file (WithImage) versus the usual way (read the file, build the data URI
// string, submit it). Reports, per input byte, the bytes allocated per
// submit and the peak heap growth sampled during the run.
func BenchmarkSubmitLargeImage(b *testing.B) {
	const size = 20 << 20
	path := filepath.Join(b.TempDir(), "big.png")
	if err := os.WriteFile(path, pngBytes(b, size), 0o644); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"IN_QUEUE","request_id":"r-1"}`)
	}))
	defer srv.Close()
	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken(testToken))
	if err != nil {
		b.Fatal(err)
	}
	cases := map[string]func() error{
		"streamed": func() error {
			im, err := wrapper.ImageFile(path)
			if err != nil {
				return err
			}
			_, err = c.Submit(context.Background(), input(), wrapper.WithImage(im))
			return err
		},
		"in-memory-baseline": func() error {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			in := input()
			in.ImageURL = "data:image/png;base64," + base64.StdEncoding.EncodeToString(data)
			_, err = c.Submit(context.Background(), in)
			return err
		},
	}
	for _, name := range []string{"streamed", "in-memory-baseline"} {
		b.Run(name, func(b *testing.B) {
			run := cases[name]
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			stop := make(chan struct{})
			peak := make(chan uint64)
			go func() {
				var top uint64
				var m runtime.MemStats
				t := time.NewTicker(200 * time.Microsecond)
				defer t.Stop()
				for {
					select {
					case <-stop:
						peak <- top
						return
					case <-t.C:
						runtime.ReadMemStats(&m)
						top = max(top, m.HeapAlloc)
					}
				}
			}()
			b.ReportAllocs()
			for b.Loop() {
				if err := run(); err != nil {
					b.Fatal(err)
				}
			}
			close(stop)
			top := <-peak
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			growth := float64(0)
			if top > before.HeapAlloc {
				growth = float64(top - before.HeapAlloc)
			}
			b.ReportMetric(growth/size, "peak-heap/input")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/size, "alloc/input")
		})
	}
}

var inflightBench = flag.Int("inflight.bench", 10000, "jobs at once in BenchmarkJobsInFlight")

// BenchmarkJobsInFlight: 10,000 jobs submitted at once in one process
// against queuetest over in-memory pipes (each queues 1 s and runs 1 s),
// all completing. Reports the peak live heap above the starting point
// (client and fake server together; the live bytes the GC marked, forced
// every 100 ms) and
// the peak goroutine count, for the wrapper polling, the wrapper in its
// default mode (32 streams at once, half the pool of 64, the rest polling), and the baseline: a
// minimal net/http client polling every 500 ms as fal's JS client does.
func BenchmarkJobsInFlight(b *testing.B) {
	n := *inflightBench
	opts := []queuetest.Option{queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second), queuetest.LogLines(2)}
	body, _ := json.Marshal(input())
	run := func(b *testing.B, job func(srv *queuetest.Server) func() error) {
		for b.Loop() {
			srv := queuetest.NewPipeServer(opts...)
			// What a client of 10,000 jobs configures: a bounded pool of
			// connections (the rest of the requests wait their turn).
			srv.Client().Transport.(*http.Transport).MaxConnsPerHost = 64
			do := job(srv)
			base := liveHeap()
			stop := make(chan struct{})
			peaks := make(chan [2]uint64)
			go func() {
				var heap, gor uint64
				t := time.NewTicker(100 * time.Millisecond)
				defer t.Stop()
				for {
					select {
					case <-stop:
						peaks <- [2]uint64{heap, gor}
						return
					case <-t.C:
						live := liveHeap()
						heap = max(heap, live-min(live, base))
						gor = max(gor, uint64(runtime.NumGoroutine()))
					}
				}
			}()
			var wg sync.WaitGroup
			var failed atomic.Int64
			for range n {
				wg.Go(func() {
					if err := do(); err != nil {
						failed.Add(1)
					}
				})
			}
			wg.Wait()
			close(stop)
			p := <-peaks
			srv.Close()
			if failed.Load() > 0 || srv.Stats().Jobs != int64(n) {
				b.Fatalf("%d of %d jobs failed", failed.Load(), n)
			}
			b.ReportMetric(float64(p[0])/(1<<20), "peak-heap-MB")
			b.ReportMetric(float64(p[1]), "peak-goroutines")
		}
	}
	b.Run("raw-net-http-poll-500ms", func(b *testing.B) {
		run(b, func(srv *queuetest.Server) func() error {
			hc := srv.Client()
			return func() error {
				call := func(method, url string, payload []byte, into any) error {
					var r io.Reader
					if payload != nil {
						r = bytes.NewReader(payload)
					}
					req, _ := http.NewRequest(method, url, r)
					req.Header.Set("Authorization", "Key k")
					req.Header.Set("Content-Type", "application/json")
					resp, err := hc.Do(req)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					return json.NewDecoder(resp.Body).Decode(into)
				}
				var q gen.Enqueued
				if err := call(http.MethodPost, srv.URL+"/fal-ai/flux-1/dev/image-to-image", body, &q); err != nil {
					return err
				}
				for {
					var st gen.QueueStatus
					if err := call(http.MethodGet, srv.URL+"/fal-ai/flux-1/requests/"+q.RequestID+"/status?logs=1", nil, &st); err != nil {
						return err
					}
					if st.Status == "COMPLETED" {
						break
					}
					time.Sleep(500 * time.Millisecond)
				}
				var out gen.Output
				return call(http.MethodGet, srv.URL+"/fal-ai/flux-1/requests/"+q.RequestID, nil, &out)
			}
		})
	})
	for _, mode := range []wrapper.StatusMode{wrapper.StatusPoll, wrapper.StatusAuto} {
		b.Run("wrapper-"+mode.String(), func(b *testing.B) {
			run(b, func(srv *queuetest.Server) func() error {
				c, err := wrapper.New(wrapper.WithBaseURL(srv.URL), wrapper.WithFalKey("k"), wrapper.WithHTTPClient(srv.Client()), wrapper.WithStatusMode(mode))
				if err != nil {
					b.Fatal(err)
				}
				return func() error {
					_, err := c.Run(context.Background(), input(), wrapper.WithOnUpdate(func(wrapper.Status) {}))
					return err
				}
			})
		})
	}
}

// liveHeap forces a GC and returns the heap it found live (the garbage
// allocated meanwhile is not counted, as it would be in HeapAlloc).
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
