package wrapper

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxi2i/fluxi2i/internal/errprefix"
)

// The library's version, and the base URLs of the two ways to reach the
// model.
const (
	// Version is the library version sent in the User-Agent.
	Version = "0.2.0"
	// AggregatorURL is the aggregator of the seeds (Bearer tokens); the default.
	AggregatorURL = "https://api.chainhub.tech"
	// FalURL is fal's own queue (Key scheme).
	FalURL = "https://queue.fal.run"
)

// Environment variables New reads when no credential option is given.
const (
	EnvAPIKey  = "FLUXI2I_API_KEY"  // read as WithAPIKey: Bearer, or Key at fal's queue host
	EnvBaseURL = "FLUXI2I_BASE_URL" // base URL; default AggregatorURL
	EnvFalKey  = "FAL_KEY"          // fal's key: means fal directly (FalURL) with the Key scheme
)

// Client talks to the queue of fal-ai/flux-1/dev/image-to-image. It is safe
// for concurrent use; construct it once.
type Client struct {
	set         settings      // the client's defaults; calls copy them
	server      string        // the base URL as a string
	apiServer   string        // the base URL, as gen's request builders take it (with a final slash)
	histServer  string        // the request history's origin, likewise
	apiRoute    route         // API calls: bound to the configured origins, with the key
	streamRoute route         // status streams: likewise, uncapped (each event is capped)
	proxyRoute  route         // the proxy's forwards: likewise, uncapped (the proxy caps)
	dlOnce      sync.Once     // makes dlRoute
	dlRoute     route         // images: guarded (download.go), never with the key
	streamSlots chan struct{} // one token per open status stream; nil: no cap
	multiplexed atomic.Bool   // an answer came over HTTP/2: streams share connections
	paused      sync.Map      // op name -> *atomic.Int64: unix nanoseconds until which that operation waits (a 429)
	userAgent   []string      // {the User-Agent}, set without allocating
	histOrigin  *url.URL
	storeOrigin *url.URL               // fal's storage, for the proxy's upload initiates
	histDown    atomic.Pointer[string] // why the history cannot be used, once known for good
	known       idSet                  // request ids this client learned: never claimed from the history
	health      health                 // since when requests keep failing
	warned      sync.Map               // warnKey -> struct{}: warned of retrying past the budget
	warnedN     atomic.Int64           // entries of warned

	stats struct {
		submits, submitRetries, retries atomic.Int64
		polls, streams, fallbacks       atomic.Int64
		settled, unsettled              atomic.Int64
	}
}

// New returns a Client. Options win over the environment. Without a
// credential option, FLUXI2I_API_KEY is read (as WithAPIKey), then FAL_KEY,
// which means fal directly (FalURL, Key scheme) unless a base URL is set;
// without WithBaseURL, FLUXI2I_BASE_URL is read, then AggregatorURL is
// used. With no key anywhere New fails with ErrNoCredentials, except for a
// loopback base URL (localhost, 127.0.0.0/8, ::1: a local simulator or
// fake queue), which gets the placeholder "Bearer local".
func New(opts ...Option) (*Client, error) {
	s := settings{
		hc:         defaultHTTPClient(),
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		userAgent:  "fluxi2i-go/" + Version,
		backoff:    defaultBackoff(),
		retries:    4,
		pollFirst:  100 * time.Millisecond,
		pollMax:    2 * time.Second,
		cancelWait: 5 * time.Second,
		maxBody:    64 << 20,
		idle:       30 * time.Second,
		getenv:     os.Getenv,
	}
	if err := s.apply(forNew, "New", opts); err != nil {
		return nil, err
	}
	if err := s.fromEnv(); err != nil {
		return nil, err
	}
	if s.auth == nil && loopbackHost(s.base.Hostname()) {
		// A local simulator or fake queue: it wants a credential, any.
		s.auth = newCredential("Bearer", "local")
	}
	if s.auth == nil {
		return nil, ErrNoCredentials
	}
	if s.autoKey != "" && isFalHost(s.base) {
		s.auth = newCredential("Key", s.autoKey)
	}
	c := &Client{
		set:         s,
		server:      s.base.String(),
		histOrigin:  historyOrigin(s.base, s.history),
		storeOrigin: storageOrigin(s.base),
		userAgent:   []string{s.userAgent},
	}
	if n := streamCap(&s); n > 0 {
		c.streamSlots = make(chan struct{}, n)
	}
	c.apiServer, c.histServer = c.server+"/", c.histOrigin.String()+"/"
	queue := originBound(s.hc, s.base, c.histOrigin, c.storeOrigin)
	c.apiRoute = route{hc: queue, auth: true, capped: true, paced: true}
	c.streamRoute = route{hc: queue, auth: true, paced: true}
	c.proxyRoute = route{hc: queue, auth: true}
	return c, nil
}

// The HTTP client of a Client made without WithHTTPClient: one for every
// such Client, over a clone of http.DefaultTransport that keeps idle
// connections for as many requests as thousands of jobs have in flight
// (http.DefaultTransport keeps 2 a host: at scale, every connection past
// them is closed after its answer, to be dialed again for the next
// request). A program that replaced http.DefaultTransport gets
// http.DefaultClient, which uses it.
var (
	sharedMu   sync.Mutex
	sharedFrom *http.Transport // the http.DefaultTransport shared was cloned from
	shared     *http.Client
)

// defaultIdlePerHost is the shared transport's MaxIdleConnsPerHost.
const defaultIdlePerHost = 1024

func defaultHTTPClient() *http.Client {
	tr, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return http.DefaultClient
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedFrom != tr {
		t := tr.Clone()
		t.MaxIdleConnsPerHost = defaultIdlePerHost
		t.MaxIdleConns = max(t.MaxIdleConns, defaultIdlePerHost)
		sharedFrom, shared = tr, &http.Client{Transport: t}
	}
	return shared
}

// ownTransport reports http.DefaultTransport or the shared clone of it:
// their dialer is a plain net.Dialer.
func ownTransport(rt http.RoundTripper) bool {
	if rt == http.DefaultTransport {
		return true
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	return shared != nil && rt == shared.Transport
}

// streamCap is how many status streams a client holds open at once:
// WithMaxStreams' number; otherwise, while answers come over HTTP/1.x
// (where a stream holds a connection of its own), half the connections
// the transport allows per host when it limits them (the other half for
// the jobs' calls), and no cap when it does not. Over HTTP/2, streams
// share connections: only WithMaxStreams caps them (see watch).
func streamCap(s *settings) int {
	if s.maxStreams > 0 {
		return s.maxStreams
	}
	rt := s.hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	if tr, ok := rt.(*http.Transport); ok && tr.MaxConnsPerHost > 0 {
		return max(1, tr.MaxConnsPerHost/2)
	}
	return 0
}

// fromEnv fills what the options left unset from the environment.
func (s *settings) fromEnv() error {
	env := func(k string) string { return strings.TrimSpace(s.getenv(k)) }
	if s.auth == nil {
		switch {
		case env(EnvAPIKey) != "":
			if err := WithAPIKey(env(EnvAPIKey)).set(s); err != nil {
				return errprefix.Errorf("fluxi2i: %s: %w", EnvAPIKey, err)
			}
		case env(EnvFalKey) != "":
			if err := s.setAuth("Key", env(EnvFalKey)); err != nil {
				return errprefix.Errorf("fluxi2i: %s: %w", EnvFalKey, err)
			}
			if s.base == nil && env(EnvBaseURL) == "" {
				s.base, _ = parseBase(FalURL)
			}
		}
	}
	if s.base == nil {
		raw := env(EnvBaseURL)
		if raw == "" {
			raw = AggregatorURL
		}
		u, err := parseBase(raw)
		if err != nil {
			return errprefix.Errorf("fluxi2i: %s: %w", EnvBaseURL, err)
		}
		s.base = u
	}
	return nil
}

// falPlatformURL is fal's Platform API, where the request history of
// fal's queue lives.
const falPlatformURL = "https://api.fal.ai"

// historyOrigin is where the request history is asked: the override, fal's
// Platform API for fal's queue, otherwise the base URL's own origin.
func historyOrigin(base, override *url.URL) *url.URL {
	switch {
	case override != nil:
		return override
	case isFalHost(base):
		u, _ := url.Parse(falPlatformURL)
		return u
	}
	return &url.URL{Scheme: base.Scheme, Host: base.Host}
}

// loopbackHost reports localhost and loopback addresses.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// falStorageURL is fal's storage, where fal's JS client initiates uploads.
const falStorageURL = "https://rest.fal.ai"

// storageOrigin is where fal's storage is for base: fal's for fal's queue,
// the base URL's own origin otherwise (the simulator serves it there).
func storageOrigin(base *url.URL) *url.URL {
	if isFalHost(base) {
		u, _ := url.Parse(falStorageURL)
		return u
	}
	return &url.URL{Scheme: base.Scheme, Host: base.Host}
}

// isFalHost reports fal's own queue host, which wants the Key scheme.
func isFalHost(u *url.URL) bool { return strings.EqualFold(u.Hostname(), "queue.fal.run") }

func parseBase(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("fluxi2i: base URL %q: %v", raw, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("fluxi2i: base URL %q: need http(s)://host", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("fluxi2i: base URL %q: no user info, query or fragment allowed", u.Redacted())
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func (s *settings) setAuth(scheme, key string) error {
	key = strings.TrimSpace(key)
	if key == "" {
		return ErrNoCredentials
	}
	if strings.ContainsAny(key, "\r\n") {
		return errors.New("fluxi2i: API key contains a line break")
	}
	s.auth, s.autoKey = newCredential(scheme, key), ""
	return nil
}

// call returns the client's settings with opts applied for a call that
// provides have.
func (c *Client) call(have scope, name string, opts []Option) (*settings, error) {
	if len(opts) == 0 {
		return &c.set, nil // read only: no copy needed
	}
	s := c.set
	if err := s.apply(have, name, opts); err != nil {
		return nil, err
	}
	return &s, nil
}

// BaseURL is the configured base URL.
func (c *Client) BaseURL() string { return c.server }

// String describes the client without its credential.
func (c *Client) String() string {
	return fmt.Sprintf("fluxi2i.Client{base: %s, auth: %s [REDACTED]}", c.server, c.set.auth.scheme)
}

// Stats counts what the client did; submits retried after an ambiguous
// failure may have run twice.
type Stats struct {
	Submits       int64 // Submit calls that got a request id
	SubmitRetries int64 // submit attempts beyond the first
	Retries       int64 // attempts beyond the first, all operations
	StatusPolls   int64 // status requests (Status, and polling waits)
	Streams       int64 // status streams opened
	Fallbacks     int64 // jobs whose stream failed and polling took over
	// Settled counts submits whose answer was lost and whose job the
	// request history found; Unsettled those it could not settle (not
	// found within the window, or the history unavailable).
	Settled, Unsettled int64
	// HistoryUnavailable says why the request history cannot settle lost
	// submits on this client ("" while it can, or before it was needed):
	// the server answered 404 (the aggregator), 401 or 403 (the key's
	// scope).
	HistoryUnavailable string
	// FailingSince is when requests started failing without a success
	// since (zero while the last request succeeded), and Failing what the
	// last failure was ("connection refused", "HTTP 503", ...).
	FailingSince time.Time
	Failing      string
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	st := Stats{
		Submits:       c.stats.submits.Load(),
		SubmitRetries: c.stats.submitRetries.Load(),
		Retries:       c.stats.retries.Load(),
		StatusPolls:   c.stats.polls.Load(),
		Streams:       c.stats.streams.Load(),
		Fallbacks:     c.stats.fallbacks.Load(),
		Settled:       c.stats.settled.Load(),
		Unsettled:     c.stats.unsettled.Load(),
	}
	if why := c.histDown.Load(); why != nil {
		st.HistoryUnavailable = *why
	}
	st.FailingSince, st.Failing = c.health.failing()
	return st
}

// credential holds the Authorization scheme and key. It never prints.
type credential struct {
	scheme, key, value string
	values             []string // {value}: a header value set without allocating
}

func newCredential(scheme, key string) *credential {
	v := scheme + " " + key
	return &credential{scheme: scheme, key: key, value: v, values: []string{v}}
}

func (c *credential) header() string     { return c.value }
func (*credential) String() string       { return "[REDACTED]" }
func (*credential) GoString() string     { return "[REDACTED]" }
func (*credential) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }
