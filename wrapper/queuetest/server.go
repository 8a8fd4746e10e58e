// Package queuetest is an in-process fake of fal's queue for
// fal-ai/flux-1/dev/image-to-image, in the spirit of net/http/httptest: use
// it to test code that calls the model, without a network or a key.
//
// It speaks the protocol of the real queue (submit, status, status stream,
// result, cancel) with its status codes and bodies, on the routes gen
// generates from the project's OpenAPI spec; it checks the credential
// before reading a body and caps bodies (413); on request it bounds what
// it holds (MaxBytes, MaxJobs, and a client's share of each: 429 with
// Retry-After) and forgets finished jobs on a timer (Retention); given a
// Contract (package spectest gives the spec's), it checks every request
// and every answer against it (a violation is answered 422 or 400 and
// counted); it runs jobs through IN_QUEUE and IN_PROGRESS on configurable
// times, and misbehaves on request: scripted status codes with
// Retry-After, dropped connections, truncated or garbled bodies, slow
// answers, broken streams, and job URLs on a foreign origin whose traffic
// (and any credential sent there) it counts. With Webhooks it delivers
// signed webhooks as fal does (webhooks.go).
//
// NewServer serves on loopback; NewPipeServer serves over in-memory pipes,
// which testing/synctest can fake time over; New returns an unstarted
// http.Handler to mount anywhere.
package queuetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper/webhooktest"
)

// The hosts of a pipe server.
const (
	PipeHost        = "queue.test"
	PipeForeignHost = "foreign.test"
)

// Server is a fake queue. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL of the API ("" for New until it serves a request).
	URL string
	// ForeignURL is the base URL of the foreign origin: where job URLs
	// point when ForeignURLs is on, and where result images are served
	// ("" for New: images are then served by the server itself).
	ForeignURL string

	cfg     config
	mux     *http.ServeMux
	foreign atomic.Bool

	mu          sync.Mutex
	jobs        map[string]*job
	files       map[string]*job // by file key
	faults      map[Op][]Fault
	faultCounts map[string]int64
	violations  []string
	uploads     map[string]*upload // by token
	uploadFiles map[string]*upload // by file key
	uploadBytes int64

	stats  counters
	budget *budget

	hooks webhookRunner // webhook deliveries (webhooks.go)

	renders   sync.WaitGroup // the model's runs, and the eviction timer
	stopEvict chan struct{}
	client    *http.Client
	closers   []func()
	closeOnce sync.Once
}

type counters struct {
	submits, jobs, status, stream, result, cancel, cancelled atomic.Int64
	foreignRequests, foreignAuthorized, unauthorized         atomic.Int64
	violations, faults, files, history, storage              atomic.Int64
	refused                                                  atomic.Int64
}

// Stats counts what a Server received.
type Stats struct {
	Submits      int64 // submit requests received
	Jobs         int64 // jobs queued
	StatusCalls  int64
	StreamCalls  int64
	ResultCalls  int64
	CancelCalls  int64
	HistoryCalls int64 // request history lookups
	StorageCalls int64 // storage calls (initiate, PUT, complete)
	Cancelled    int64 // jobs a cancel stopped
	// ForeignRequests counts requests to the foreign origin;
	// ForeignAuthorized those of them that carried an Authorization header.
	ForeignRequests   int64
	ForeignAuthorized int64
	Unauthorized      int64 // requests refused with 401
	Violations        int64 // requests that broke the spec
	FaultsInjected    int64 // faults consumed
	FileDownloads     int64 // result images served
	// BytesHeld is what the server holds now against MaxBytes (bodies
	// being read, inputs kept, the model's reservations, outputs, encoded
	// sync results); PeakBytesHeld the most it ever held at once.
	BytesHeld, PeakBytesHeld int64
	// Refused counts requests answered 429 for a cap of the server:
	// MaxJobs, MaxBytes or a client's share of them.
	Refused int64
}

type config struct {
	queueTime, runTime time.Duration
	logLines           int
	model              Model
	apiKey             string
	basePath           string
	foreign            bool
	chaos              *chaos
	contract           Contract
	maxBody            int64
	keepAlive          time.Duration
	retention          time.Duration
	maxJobs            int
	noHistory          bool
	noStorage          bool
	maxUploads         int64
	webhooks           *webhooktest.Signer
	maxBytes           int64
	maxJobsPerClient   int
	maxBytesPerClient  int64
	publicURL          string
}

// FaultHeader marks an answer that the server breaks on purpose
// (truncated or garbled): a Contract checks its status, not its body.
const FaultHeader = "X-Queuetest-Fault"

// Contract checks the traffic a Server sees; spectest.Contract checks it
// against openapi/openapi.yaml.
type Contract interface {
	// Request checks a request and its body, and returns the check of the
	// answer to it (nil when the request matched no operation).
	Request(r *http.Request, body []byte) (answer func(code int, header http.Header, body []byte) error, err error)
	// Event checks the data of one status stream event.
	Event(data []byte) error
}

// Retention forgets a job, its input and its images, d after it ended
// (completed or cancelled); its status then answers 404. Without it jobs
// are kept for the server's life, as tests want.
func Retention(d time.Duration) Option { return func(c *config) { c.retention = max(d, 0) } }

// MaxJobs caps the jobs held at once: past it a submit is answered 429
// with Retry-After until retained jobs expire.
func MaxJobs(n int) Option { return func(c *config) { c.maxJobs = max(n, 0) } }

// KeepAlive makes the status stream send a comment line (": keepalive")
// whenever d passes without an event, as proxies in front of fal do.
func KeepAlive(d time.Duration) Option { return func(c *config) { c.keepAlive = max(d, 0) } }

// WithContract checks every request and answer against c, counting and
// recording violations (Violations).
func WithContract(c Contract) Option { return func(cfg *config) { cfg.contract = c } }

// MaxBodyBytes caps a request body (default 64 MiB): a larger one is
// answered 413 without being read further.
func MaxBodyBytes(n int64) Option { return func(c *config) { c.maxBody = max(n, 1) } }

// Option configures a Server.
type Option func(*config)

// QueueTime is how long each job stays IN_QUEUE (default 100 ms).
func QueueTime(d time.Duration) Option { return func(c *config) { c.queueTime = max(d, 0) } }

// RunTime is how long each job stays IN_PROGRESS (default 300 ms).
func RunTime(d time.Duration) Option { return func(c *config) { c.runTime = max(d, 0) } }

// LogLines is how many log lines a job emits while it runs (default 3).
func LogLines(n int) Option { return func(c *config) { c.logLines = max(n, 0) } }

// WithModel replaces the model (default: tiny placeholder images).
func WithModel(m Model) Option { return func(c *config) { c.model = m } }

// WithAPIKey accepts only this credential (Bearer or Key scheme); without
// it any credential is accepted, but one must be sent.
func WithAPIKey(key string) Option { return func(c *config) { c.apiKey = key } }

// WithBasePath serves the API below a path prefix, as a proxy would.
func WithBasePath(p string) Option {
	return func(c *config) { c.basePath = "/" + strings.Trim(p, "/") }
}

// PublicURL builds the job URLs and result image URLs the server hands
// out on u (scheme://host[:port], how clients reach it), never on a
// request's Host header, which a client or a proxy in front chooses. By
// default a Server from New builds them on each request's Host; NewServer
// and NewPipeServer on their own URLs.
func PublicURL(u string) Option { return func(c *config) { c.publicURL = strings.TrimRight(u, "/") } }

// ForeignURLs starts the server handing out job URLs on the foreign origin
// (see SetForeignURLs).
func ForeignURLs() Option { return func(c *config) { c.foreign = true } }

func newServer(opts []Option) *Server {
	cfg := config{queueTime: 100 * time.Millisecond, runTime: 300 * time.Millisecond, logLines: 3, maxBody: 64 << 20}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.basePath == "/" {
		cfg.basePath = ""
	}
	if cfg.model == nil {
		cfg.model = PlaceholderModel
	}
	if cfg.maxJobsPerClient == 0 {
		cfg.maxJobsPerClient = (cfg.maxJobs + 3) / 4
	}
	if cfg.maxBytesPerClient == 0 {
		cfg.maxBytesPerClient = cfg.maxBytes / 4
	}
	s := &Server{
		cfg:         cfg,
		jobs:        map[string]*job{},
		files:       map[string]*job{},
		uploads:     map[string]*upload{},
		uploadFiles: map[string]*upload{},
		faults:      map[Op][]Fault{},
		faultCounts: map[string]int64{},
		budget:      newBudget(cfg.maxBytes, cfg.maxBytesPerClient),
		stopEvict:   make(chan struct{}),
	}
	s.foreign.Store(cfg.foreign)
	s.mux = s.routes()
	if cfg.retention > 0 {
		s.renders.Add(1)
		go s.evictLoop(min(max(cfg.retention/10, time.Second), time.Minute))
	}
	return s
}

// evictLoop forgets expired jobs every period until Close, so memory is
// given back even when no request comes.
func (s *Server) evictLoop(period time.Duration) {
	defer s.renders.Done()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.stopEvict:
			return
		case now := <-t.C:
			s.mu.Lock()
			s.evict(now)
			s.mu.Unlock()
		}
	}
}

// New returns an unstarted Server: mount it (it is an http.Handler) where
// you like. Job and image URLs are built on its PublicURL or, without one,
// on each request's Host.
func New(opts ...Option) *Server {
	s := newServer(opts)
	s.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	return s
}

// NewServer starts a Server on loopback, with a second listener as the
// foreign origin. Close it when done.
func NewServer(opts ...Option) *Server {
	s := newServer(opts)
	api := httptest.NewServer(s)
	foreign := httptest.NewServer(http.HandlerFunc(s.serveForeign))
	s.URL = api.URL + s.cfg.basePath
	s.ForeignURL = foreign.URL
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	s.client = &http.Client{Transport: tr}
	s.closers = append(s.closers, tr.CloseIdleConnections, api.Close, foreign.Close)
	return s
}

// NewPipeServer starts a Server reachable only through Client(), over
// in-memory pipes: http://queue.test for the API and http://foreign.test
// for the foreign origin. Inside a testing/synctest bubble, its queue and
// run times pass in fake time. Close it before the bubble ends.
func NewPipeServer(opts ...Option) *Server {
	s := newServer(opts)
	s.URL = "http://" + PipeHost + s.cfg.basePath
	s.ForeignURL = "http://" + PipeForeignHost
	listeners := map[string]*pipeListener{}
	for host, h := range map[string]http.Handler{PipeHost: s, PipeForeignHost: http.HandlerFunc(s.serveForeign)} {
		l := newPipeListener(host)
		srv := &http.Server{Handler: h}
		done := make(chan struct{})
		go func() { defer close(done); srv.Serve(l) }()
		listeners[host+":80"] = l
		s.closers = append(s.closers, func() { srv.Close(); <-done })
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			l, ok := listeners[addr]
			if !ok {
				return nil, &net.OpError{Op: "dial", Net: "pipe", Err: fmt.Errorf("no such host %s", addr)}
			}
			return l.dial(ctx)
		},
		MaxIdleConnsPerHost: 256,
	}
	s.client = &http.Client{Transport: tr}
	s.closers = append([]func(){tr.CloseIdleConnections}, s.closers...)
	return s
}

// Client returns an *http.Client that reaches the server and its foreign
// origin. Wrap its Transport (for instance in a validating RoundTripper),
// don't replace it: for a pipe server it is the only way in.
func (s *Server) Client() *http.Client { return s.client }

// Close stops the server, its eviction timer and the model's runs, and
// closes the idle connections of Client(). A Server from New must be
// closed too when it has a Retention.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.hooks.close()
		close(s.stopEvict)
		s.mu.Lock()
		for _, j := range s.jobs {
			j.stop()
		}
		s.mu.Unlock()
		for _, c := range s.closers {
			c()
		}
		s.renders.Wait()
	})
}

// SetForeignURLs switches the response_url, status_url and cancel_url the
// server hands out to the foreign origin (as an aggregator echoing fal's
// own URLs does), or back.
func (s *Server) SetForeignURLs(on bool) { s.foreign.Store(on) }

// Inject queues faults for op: each of the next requests of op consumes
// one, in order.
func (s *Server) Inject(op Op, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[op] = append(s.faults[op], faults...)
}

func (s *Server) popFault(op Op) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f *Fault
	if q := s.faults[op]; len(q) > 0 {
		f = &q[0]
		s.faults[op] = q[1:]
	} else if s.cfg.chaos != nil {
		f = s.cfg.chaos.draw(op)
	}
	if f != nil {
		s.stats.faults.Add(1)
		s.faultCounts[string(op)+":"+f.String()]++
	}
	return f
}

// FaultCounts counts the faults served, keyed "op:fault" (for example
// "submit:drop-after").
func (s *Server) FaultCounts() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.faultCounts))
	for k, v := range s.faultCounts {
		out[k] = v
	}
	return out
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	st := Stats{
		Submits: c.submits.Load(), Jobs: c.jobs.Load(),
		StatusCalls: c.status.Load(), StreamCalls: c.stream.Load(),
		ResultCalls: c.result.Load(), CancelCalls: c.cancel.Load(), HistoryCalls: c.history.Load(), StorageCalls: c.storage.Load(),
		Cancelled:         c.cancelled.Load(),
		ForeignRequests:   c.foreignRequests.Load(),
		ForeignAuthorized: c.foreignAuthorized.Load(),
		Unauthorized:      c.unauthorized.Load(),
		Violations:        c.violations.Load(),
		FaultsInjected:    c.faults.Load(),
		FileDownloads:     c.files.Load(),
		Refused:           c.refused.Load(),
	}
	s.budget.mu.Lock()
	st.BytesHeld, st.PeakBytesHeld = s.budget.held, s.budget.peak
	s.budget.mu.Unlock()
	return st
}

// Violations returns a description of every request that broke the spec.
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// serveForeign is the foreign origin: it counts every request (and every
// credential sent to it) and then serves like the real server would, so a
// client that leaks its key there still appears to work.
func (s *Server) serveForeign(w http.ResponseWriter, r *http.Request) {
	s.stats.foreignRequests.Add(1)
	if r.Header.Get("Authorization") != "" {
		s.stats.foreignAuthorized.Add(1)
	}
	s.mux.ServeHTTP(w, r)
}

// newKey is 128 random bits in hex.
func newKey() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Job reports a job's input and whether it was cancelled, for assertions.
// With X-Fal-Store-IO: 0 its image_url is gone once the model has read it.
func (s *Server) Job(id string) (in gen.Input, cancelled, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return gen.Input{}, false, false
	}
	in = j.in
	if j.urlInRaw {
		in.ImageURL = imageURLOf(j.raw) // kept once, in the body as received
	}
	return in, j.cancelled.Load() != 0, true
}

// Detection reports when a job completed (by the server's clock) and when
// its result was first requested: the gap is how long a client took to
// notice. ok is false for an unknown, cancelled or unfetched job.
func (s *Server) Detection(id string) (completed, resultRequested time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, found := s.jobs[id]
	if !found || j.cancelled.Load() != 0 || j.resultAt.IsZero() {
		return time.Time{}, time.Time{}, false
	}
	return j.submitted.Add(s.cfg.queueTime + s.cfg.runTime), j.resultAt, true
}
