package wrapper_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest/spectest"
)

// Knobs of BenchmarkScale, for attributing its figures (the defaults are
// what the benchmark measures).
var (
	scaleIdleConns  = flag.Int("scale.idleconns", 0, "BenchmarkScale: MaxIdleConnsPerHost of both clients' transport (0: the fake's client as it is, 256)")
	scaleMaxStreams = flag.Int("scale.maxstreams", 0, "BenchmarkScale: WithMaxStreams of the wrapper (0: the default)")
	scaleContract   = flag.Bool("scale.contract", true, "BenchmarkScale: the fake checks every request, answer and event against openapi.yaml")
	scaleBurst      = flag.Bool("scale.burst", false, "BenchmarkScale: start every worker at once, so that jobs complete in waves of the shape's concurrency (the default spreads the starts over one job's time)")
	scaleTrace      = flag.Bool("scale.trace", false, "BenchmarkScale: split detection into its legs (the COMPLETED event read by the client, the result request sent, the request received), timed client-side")
)

// traceLegs times, client-side, when each job's COMPLETED event is read
// from its status stream and when its result request is handed to the
// transport (-scale.trace).
type traceLegs struct {
	http.RoundTripper
	event, ask sync.Map // request id -> time.Time
}

func (t *traceLegs) RoundTrip(req *http.Request) (*http.Response, error) {
	_, job, isJob := strings.Cut(req.URL.Path, "/requests/")
	id, rest, _ := strings.Cut(job, "/")
	if isJob && rest == "" && req.Method == http.MethodGet {
		t.ask.LoadOrStore(id, time.Now())
	}
	resp, err := t.RoundTripper.RoundTrip(req)
	if err == nil && isJob && rest == "status/stream" {
		resp.Body = &eventTimer{ReadCloser: resp.Body, id: id, at: &t.event}
	}
	return resp, err
}

type eventTimer struct {
	io.ReadCloser
	id   string
	at   *sync.Map
	seen bool
}

func (e *eventTimer) Read(p []byte) (int, error) {
	n, err := e.ReadCloser.Read(p)
	if !e.seen && bytes.Contains(p[:n], []byte(`"COMPLETED"`)) {
		e.seen = true
		e.at.LoadOrStore(e.id, time.Now())
	}
	return n, err
}

// BenchmarkScale runs many whole jobs at once against queuetest on real
// loopback TCP (NewServer, httptest), in two shapes, each job going
// through queue positions 2, 1, 0 and IN_PROGRESS before COMPLETED (a
// status stream is worth it):
//   - 2000x20: 2,000 jobs 20 at a time, each queued 20 ms and run 50 ms;
//   - 5000x2000: 5,000 jobs 2,000 at a time, each queued 1 s and run 1 s:
//     1,000 jobs a second, which two cores hold for the floor (at 20 ms and
//     50 ms, 2,000 jobs at once would ask for 28,000 jobs a second, and
//     detection would measure nothing but a saturated CPU, the floor's
//     p50 included: 240-450 ms).
//
// The conc workers start spread evenly over one job's time (queued and
// run), so that jobs complete at the shape's steady rate, 1,000 a second
// at 5000x2000, as a service's jobs do, and not in waves. With
// -scale.burst every worker starts at once: each wave of conc jobs then
// completes within the same few milliseconds, and detection measures how
// long two cores take to work through 2,000 completions at once (the
// floor's p50 from 7 to 74 ms from one run to the next).
//
// One iteration is a whole shape (run it with -benchtime 1x):
//
//	go test -run '^$' -bench Scale -benchtime 1x ./wrapper
//
// Two clients, each against a fresh server, in the same run:
//   - raw-net-http, the floor: three requests a job, with hand-written
//     URLs: the submit, the status stream (read line by line until the
//     COMPLETED event, then to its end, so that the connection goes back to
//     the pool) and the result, decoded into gen's types;
//   - wrapper: wrapper.New with defaults only (base URL, token and the same
//     HTTP client settings) calling Run.
//
// Both send through a clone of the fake's client transport
// (http.DefaultTransport's settings with MaxIdleConnsPerHost 256;
// -scale.idleconns changes it for both), with a dial counter.
//
// It reports: cpu-ms/job, the process's CPU (user+sys, getrusage) over
// the shape's run divided by the jobs: the fake server's CPU (and, by
// default, its checks of the traffic against openapi.yaml, which
// -scale.contract=false turns off) is in it for both clients; p50-ms and
// p99-ms, the detection latency of every job (from the moment the fake
// completes it to the moment its result is requested, srv.Detection);
// req/job, the submits, status calls, status streams and result calls the
// server received per job; dials/job, the TCP connections the client
// opened per job; peak-goroutines (client and server, sampled every
// 5 ms); and allocs/job and alloc-KiB/job, the heap allocations of the
// whole process (client and server) per job.
//
// The -scale.* flags (after the package: go test ... ./wrapper
// -scale.maxstreams 5000) attribute the figures: -scale.maxstreams (the
// wrapper's stream cap), -scale.idleconns (both transports' idle pool),
// -scale.contract=false (no spec checks in the fake), -scale.burst (the
// workers start together), and -scale.trace, which splits detection into event-p50-ms
// (completion to the COMPLETED event read by the client), ask-p50-ms (to
// the result request handed to the transport) and send-p50-ms (to the
// server receiving it).
func BenchmarkScale(b *testing.B) {
	shapes := []scaleShape{
		{jobs: 2000, conc: 20, queue: 20 * time.Millisecond, run: 50 * time.Millisecond},
		{jobs: 5000, conc: 2000, queue: time.Second, run: time.Second},
	}
	body, _ := json.Marshal(input())
	for _, sh := range shapes {
		b.Run(fmt.Sprintf("%dx%d", sh.jobs, sh.conc), func(b *testing.B) {
			b.Run("raw-net-http", func(b *testing.B) {
				scaleRun(b, sh, func(srv *queuetest.Server, hc *http.Client) func(context.Context) (string, error) {
					auth := "Bearer " + testToken
					return func(ctx context.Context) (string, error) { return rawStreamJob(ctx, hc, srv.URL, auth, body) }
				})
			})
			b.Run("wrapper", func(b *testing.B) {
				scaleRun(b, sh, func(srv *queuetest.Server, hc *http.Client) func(context.Context) (string, error) {
					opts := []wrapper.Option{wrapper.WithBaseURL(srv.URL), wrapper.WithBearerToken(testToken), wrapper.WithHTTPClient(hc)}
					if *scaleMaxStreams > 0 {
						opts = append(opts, wrapper.WithMaxStreams(*scaleMaxStreams))
					}
					c, err := wrapper.New(opts...)
					if err != nil {
						b.Fatal(err)
					}
					return func(ctx context.Context) (string, error) {
						res, err := c.Run(ctx, input())
						if err != nil {
							return "", err
						}
						return res.RequestID, nil
					}
				})
			})
		})
	}
}

// scaleShape is a load of BenchmarkScale: jobs jobs, conc at a time, each
// queued and run for the fake's times.
type scaleShape struct {
	jobs, conc int
	queue, run time.Duration
}

// scaleRun runs the shape's jobs per iteration, each iteration against a
// fresh server, and reports the figures BenchmarkScale describes. client
// makes the job function for a server and HTTP client; the job returns its
// request id.
func scaleRun(b *testing.B, sh scaleShape, client func(*queuetest.Server, *http.Client) func(context.Context) (string, error)) {
	jobs, conc := sh.jobs, sh.conc
	var cpu time.Duration
	var lat []time.Duration
	var requests, dials int64
	var allocs, allocBytes uint64
	var legs [3][]time.Duration // -scale.trace
	var peak int
	runs := 0
	for b.Loop() {
		opts := []queuetest.Option{queuetest.QueueTime(sh.queue), queuetest.RunTime(sh.run), queuetest.LogLines(0)}
		if *scaleContract {
			opts = append(opts, queuetest.WithContract(spectest.Contract()))
		}
		srv := queuetest.NewServer(opts...)
		tr := srv.Client().Transport.(*http.Transport).Clone()
		if *scaleIdleConns > 0 {
			tr.MaxIdleConnsPerHost = *scaleIdleConns
		}
		var dialed atomic.Int64
		d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed.Add(1)
			return d.DialContext(ctx, network, addr)
		}
		hc := &http.Client{Transport: tr}
		var trace *traceLegs
		if *scaleTrace {
			trace = &traceLegs{RoundTripper: tr}
			hc = &http.Client{Transport: trace}
		}
		job := client(srv, hc)

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		ids := make([]string, jobs)
		var next atomic.Int64
		var failed atomic.Int64
		var firstErr error
		var errOnce sync.Once
		stop := make(chan struct{})
		peakc := make(chan int)
		go func() {
			top := 0
			t := time.NewTicker(5 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					peakc <- top
					return
				case <-t.C:
					top = max(top, runtime.NumGoroutine())
				}
			}
		}()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		before := rusageCPU()
		var wg sync.WaitGroup
		for w := range conc {
			wg.Go(func() {
				// The workers start spread over one job's time (queued and
				// run), so that jobs complete at the shape's steady rate;
				// with -scale.burst they start together, and so complete
				// in waves of conc at once.
				if !*scaleBurst {
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Duration(w) * (sh.queue + sh.run) / time.Duration(conc)):
					}
				}
				for {
					i := next.Add(1) - 1
					if i >= int64(jobs) || ctx.Err() != nil {
						return
					}
					id, err := job(ctx)
					if err != nil {
						failed.Add(1)
						errOnce.Do(func() { firstErr = err })
						continue
					}
					ids[i] = id
				}
			})
		}
		wg.Wait()
		cpu += rusageCPU() - before
		runtime.ReadMemStats(&m1)
		allocs += m1.Mallocs - m0.Mallocs
		allocBytes += m1.TotalAlloc - m0.TotalAlloc
		close(stop)
		peak = max(peak, <-peakc)
		cancel()
		st := srv.Stats()
		violations := srv.Violations()
		for _, id := range ids {
			if id == "" {
				continue
			}
			done, asked, ok := srv.Detection(id)
			if !ok {
				b.Fatalf("no detection record for %s", id)
			}
			lat = append(lat, asked.Sub(done))
			if trace != nil {
				ev, ok1 := trace.event.Load(id)
				ask, ok2 := trace.ask.Load(id)
				if !ok1 || !ok2 {
					b.Fatalf("no trace of %s", id)
				}
				legs[0] = append(legs[0], ev.(time.Time).Sub(done))
				legs[1] = append(legs[1], ask.(time.Time).Sub(ev.(time.Time)))
				legs[2] = append(legs[2], asked.Sub(ask.(time.Time)))
			}
		}
		tr.CloseIdleConnections()
		srv.Close()
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d of %d jobs failed; the first: %v", n, jobs, firstErr)
		}
		if len(violations) > 0 {
			b.Fatalf("traffic that broke openapi/openapi.yaml: %d, the first: %s", len(violations), violations[0])
		}
		if st.Jobs != int64(jobs) {
			b.Fatalf("the server queued %d jobs, not %d", st.Jobs, jobs)
		}
		requests += st.Submits + st.StatusCalls + st.StreamCalls + st.ResultCalls
		dials += dialed.Load()
		runs++
	}
	n := float64(runs * jobs)
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(float64(cpu)/float64(time.Millisecond)/n, "cpu-ms/job")
	b.ReportMetric(pct(0.50), "p50-ms")
	if *scaleTrace {
		for i, name := range []string{"event", "ask", "send"} {
			slices.Sort(legs[i])
			b.ReportMetric(float64(legs[i][len(legs[i])/2])/float64(time.Millisecond), name+"-p50-ms")
		}
	}
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(requests)/n, "req/job")
	b.ReportMetric(float64(dials)/n, "dials/job")
	b.ReportMetric(float64(peak), "peak-goroutines")
	b.ReportMetric(float64(allocs)/n, "allocs/job")
	b.ReportMetric(float64(allocBytes)/1024/n, "alloc-KiB/job")
}

// rusageCPU is the process's CPU time so far, user and system.
func rusageCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rawStreamJob is the floor of BenchmarkScale: a plain net/http client
// making the three requests of a job (submit, status stream, result) with
// hand-written URLs, decoding gen's types. It returns the request id.
func rawStreamJob(ctx context.Context, hc *http.Client, base, auth string, body []byte) (string, error) {
	send := func(method, url, accept string, payload []byte) (*http.Response, error) {
		var r io.Reader
		if payload != nil {
			r = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, url, r)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", auth)
		req.Header.Set("Accept", accept)
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 300 {
			resp.Body.Close()
			return nil, fmt.Errorf("%s %s: HTTP %d", method, url, resp.StatusCode)
		}
		return resp, nil
	}
	decode := func(method, url string, payload []byte, into any) error {
		resp, err := send(method, url, "application/json", payload)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(into)
	}
	var q gen.Enqueued
	if err := decode(http.MethodPost, base+"/fal-ai/flux-1/dev/image-to-image", body, &q); err != nil {
		return "", err
	}
	job := base + "/fal-ai/flux-1/requests/" + q.RequestID
	resp, err := send(http.MethodGet, job+"/status/stream", "text/event-stream", nil)
	if err != nil {
		return "", err
	}
	completed := false
	sc := bufio.NewScanner(resp.Body)
	for !completed && sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		var st gen.QueueStatus
		if err := json.Unmarshal(data, &st); err != nil {
			resp.Body.Close()
			return "", err
		}
		completed = st.Status == wrapper.StatusCompleted
	}
	io.Copy(io.Discard, resp.Body) // to its end: the connection is reused
	resp.Body.Close()
	if !completed {
		return "", errors.Join(errors.New("the status stream ended before COMPLETED"), sc.Err())
	}
	var out gen.Output
	if err := decode(http.MethodGet, job, nil, &out); err != nil {
		return "", err
	}
	return q.RequestID, nil
}
