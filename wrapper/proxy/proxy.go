// Package proxy serves fal's browser clients from a Go back end, so the
// key stays on the server. A web page configures fal's own JS client
// (@fal-ai/client) with proxyUrl; the browser then sends each request to
// the app's server, the real target in the x-fal-target-url header, and the
// Handler checks it, builds the request to the client's configured base URL
// with gen (the spec's operations, nothing else), adds the credential and
// forwards it, status stream included.
//
//	p, err := proxy.New(client, proxy.Authorize(func(r *http.Request) error {
//		if sessionUser(r) == "" {
//			return errors.New("sign in first")
//		}
//		return nil
//	}), proxy.UserOf(sessionUser))
//	if err != nil { ... }
//	mux.Handle("/api/fal/proxy", p)
//
// Safe by default:
//   - a missing x-fal-target-url is 400; a target that is not https on
//     fal.run or fal.ai (or a subdomain) is 412; a fal target that is not
//     one of this model's five queue operations on queue.fal.run (submit to
//     fal-ai/flux-1/dev/image-to-image; status, status stream, result and
//     cancel under fal-ai/flux-1/requests/) is 403, and never forwarded;
//   - New refuses to build a handler without Authorize unless AllowAnyone
//     is given; Authorize's error is 401 (403 when it wraps ErrForbidden);
//   - the browser's Authorization header and cookies are never forwarded,
//     and only the x-fal-* headers the spec defines, after the spec's
//     checks; a fal_webhook is refused (fal would POST to any URL a visitor
//     names);
//   - a submit body is capped (413) and validated as Submit validates it
//     (422 in fal's error shape) before anything is paid for;
//   - with UserOf, the handler remembers which user submitted which request
//     id, and refuses one user's reads and cancels of another's jobs (403).
//
// What is bounded, and by which default (each an Option; a "user" is
// UserOf's answer, or without UserOf the client's IP address):
//   - jobs in flight per user: 10 (JobsPerUser). The slot is taken before
//     the submit is forwarded and freed when the job ends or the submit
//     definitely failed; past it, 429;
//   - requests in flight per user, status streams and polls included: 4
//     times JobsPerUser, 40 (RequestsPerUser); past it, 429 with
//     Retry-After;
//   - request ids remembered: 100,000 in all (TrackedJobs) and 1,000 per
//     user (TrackedJobsPerUser). Only ended jobs are forgotten to make room
//     (oldest first), never a live one (a job seen COMPLETED stays live
//     until its result is fetched with a final answer, it is cancelled,
//     the upstream says 404, or the hour passed): when full of live jobs,
//     a submit is 429 with Retry-After;
//   - a submit body: 32 MiB (MaxBodyBytes, 413); all bodies in flight: 128
//     MiB (BodyBudget), reserved before a body is read, 429 with
//     Retry-After after a 5 s wait;
//   - connections and header size are the server's: fluxi2i proxy serves
//     256 connections at once, headers within 10 s and 64 KiB.
//
// Host and Origin: with LoopbackOnly (fluxi2i proxy turns it on for a
// loopback address), a request whose Host is not a loopback address or
// localhost is 403, against DNS rebinding. With CORS, a request whose
// Origin is present and neither listed nor the request's own Host is 403,
// whatever its method. An allowed origin's answers carry
// Access-Control-Allow-Origin, Vary: Origin and Access-Control-Expose-Headers
// (X-Fal-Request-Id, X-Fal-Request-Timeout-Type, X-Fal-Billable-Units,
// X-Fal-Error-Type, X-Fal-Retryable, Retry-After).
//
// Answers are the proxy's: the upstream's Access-Control-* and Vary headers
// are dropped, and every answer carries X-Content-Type-Options: nosniff and
// Cache-Control: no-store; job URLs (status_url, response_url, cancel_url,
// in JSON answers and stream events) are rewritten to fal's public ones
// (https://queue.fal.run/fal-ai/flux-1/requests/ID...), never the
// upstream's (a submit or status answer is held whole to be rewritten, up
// to 8 MiB: a longer one is a 502, logged); an answer that carries the
// server's credential is a 502 (or,
// once under way, is cut off), logged without the key.
//
// Each forwarded request is logged with slog (method, operation, request
// id, status, duration; never the key), each refusal with its reason
// (a CORS refusal names the origin and the option to allow it), and Stats
// counts what was forwarded and refused.
package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/internal/bridge"
)

// TargetHeader carries the request's real target, as fal's JS client sends
// it with proxyUrl.
const TargetHeader = "X-Fal-Target-Url"

// notThisModel is the refusal of a target that is not one of the spec's
// operations.
const notThisModel = "only this model's queue operations (submit, status, status stream, result, cancel) on queue.fal.run, and fal storage's upload initiates on rest.fal.ai, are proxied"

// ErrForbidden, wrapped by an Authorize error, makes the answer 403 instead
// of 401: the user is known, and not allowed.
var ErrForbidden = errors.New("proxy: forbidden")

// Handler is the proxy: an http.Handler.
type Handler struct {
	f       bridge.Forwarder
	server  string // the base URL, with the trailing slash gen's builders want
	cfg     config
	routes  *http.ServeMux // gen's routes of the spec: what may pass to the queue
	storage *http.ServeMux // the same, for targets on fal's storage host
	jobs    *jobStore
	calls   gate                // each user's requests in flight
	bodies  *semaphore.Weighted // the bytes of submit bodies in flight
	held    gauge               // the bytes of submit bodies read and held
	stats   counters
}

type config struct {
	authorize    func(*http.Request) error
	anyone       bool
	userOf       func(*http.Request) string
	perUser      int
	perUserCalls int // -1: callsPerJob times perUser
	tracked      int
	trackedUser  int
	inFlight     time.Duration
	origins      map[string]bool
	loopback     bool
	log          *slog.Logger
	maxBody      int64
	bodyBudget   int64
	bodyWait     time.Duration
	observer     Observer
}

// Option configures a Handler.
type Option func(*config) error

// Authorize is the app's own check of the browser's request (its session,
// its token): an error refuses the request with 401, or 403 when the error
// wraps ErrForbidden, before anything is forwarded.
func Authorize(fn func(r *http.Request) error) Option {
	return func(c *config) error {
		if fn == nil {
			return errors.New("proxy: Authorize(nil)")
		}
		c.authorize = fn
		return nil
	}
}

// AllowAnyone lets unauthenticated requests through: anyone who can reach
// the handler can run this model on the key's bill. Only for development,
// or behind an authenticating front.
func AllowAnyone() Option {
	return func(c *config) error { c.anyone = true; return nil }
}

// UserOf names the app's user of a request (after Authorize). With it the
// handler refuses other users' status, result and cancel calls for a job
// (403), and the per-user limits (JobsPerUser, RequestsPerUser,
// TrackedJobsPerUser) count per app user; without it they count per
// client IP address (behind a reverse proxy: one for all).
func UserOf(fn func(r *http.Request) string) Option {
	return func(c *config) error {
		if fn == nil {
			return errors.New("proxy: UserOf(nil)")
		}
		c.userOf = fn
		return nil
	}
}

// JobsPerUser caps the jobs a user has in flight (default 10; 0: no
// cap). A submit takes its slot before it is forwarded, so concurrent
// submits cannot overrun it; the slot is free again when the job ends (its
// result fetched with a final answer, a cancel accepted or refused as too
// late, a 404 from the upstream, or an hour passed) or is seen COMPLETED
// (its record is kept, not evictable, until its result is fetched), or when the submit
// definitely failed (a 4xx answer, or a request that never reached the
// upstream). A submit whose answer was lost keeps its slot for the hour. A
// submit past the cap is refused with 429.
func JobsPerUser(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("proxy: JobsPerUser(%d): must be 0 or more", n)
		}
		c.perUser = n
		return nil
	}
}

// RequestsPerUser bounds the requests one user has in flight at once
// (submits, polls, results, cancels and status streams alike; default
// 4 times JobsPerUser, or 40 when JobsPerUser is 0; 0: no bound). A
// request past it is refused with 429 and Retry-After.
func RequestsPerUser(n int) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("proxy: RequestsPerUser(%d): must be 0 or more", n)
		}
		c.perUserCalls = n
		return nil
	}
}

// TrackedJobs bounds how many request ids the handler remembers, all users
// together (default 100,000). To make room it forgets ended jobs, oldest
// first, never a live one: when every entry is a live job, a new submit is
// refused with 429 and Retry-After.
func TrackedJobs(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("proxy: TrackedJobs(%d): must be at least 1", n)
		}
		c.tracked = n
		return nil
	}
}

// TrackedJobsPerUser bounds how many request ids the handler remembers for
// one user (default 1,000): past it the user's own ended jobs are
// forgotten, oldest first, and when all of them are live a new submit is
// refused with 429. One user can never make the handler forget another
// user's live job.
func TrackedJobsPerUser(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("proxy: TrackedJobsPerUser(%d): must be at least 1", n)
		}
		c.trackedUser = n
		return nil
	}
}

// LoopbackOnly answers only requests whose Host is a loopback address or
// localhost (any port), and refuses every other with 403 before anything
// is forwarded: for a handler listening on loopback, where a web page whose
// name an attacker rebinds to 127.0.0.1 (DNS rebinding) would otherwise
// reach it as its own origin. fluxi2i proxy turns it on when its address is
// loopback.
func LoopbackOnly() Option {
	return func(c *config) error { c.loopback = true; return nil }
}

// CORS lets pages on these origins (scheme://host[:port]) call the
// handler from another origin. Off by default: same-origin pages only.
// With it, a request whose Origin header is present and neither listed nor
// the handler's own (the request's Host) is refused with 403, whatever its
// method, not only a preflight. Allowed origins' answers carry
// Access-Control-Allow-Origin, Vary: Origin, and
// Access-Control-Expose-Headers naming the headers fal's JS client reads
// (X-Fal-Request-Id, X-Fal-Request-Timeout-Type, X-Fal-Billable-Units) and
// X-Fal-Error-Type, X-Fal-Retryable and Retry-After.
func CORS(origins ...string) Option {
	return func(c *config) error {
		for _, o := range origins {
			u, err := url.Parse(o)
			if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
				return fmt.Errorf("proxy: CORS origin %q: want scheme://host[:port]", o)
			}
			c.origins[strings.ToLower(u.Scheme+"://"+u.Host)] = true
		}
		return nil
	}
}

// Logger logs each forwarded and refused request (default: none).
func Logger(l *slog.Logger) Option {
	return func(c *config) error {
		if l != nil {
			c.log = l
		}
		return nil
	}
}

// MaxBodyBytes caps a submit body (default 32 MiB: a 24 MiB image as a
// data URI): a larger one is refused with 413, before it is read when its
// Content-Length says so.
func MaxBodyBytes(n int64) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("proxy: MaxBodyBytes(%d): must be positive", n)
		}
		c.maxBody = n
		return nil
	}
}

// BodyBudget bounds the bytes of submit bodies in flight, all requests
// together (default 128 MiB: four bodies at the default MaxBodyBytes). A
// submit reserves its Content-Length (MaxBodyBytes when it has none)
// before reading its body, waits up to 5 s for room, then is refused with
// 429 and Retry-After. The budget counts body bytes: decoding and
// re-encoding the input holds up to about three times that (20 concurrent
// submits of 31 MiB peak at about 390 MB of RSS with the default). It must
// be at least MaxBodyBytes.
func BodyBudget(n int64) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("proxy: BodyBudget(%d): must be positive", n)
		}
		c.bodyBudget = n
		return nil
	}
}

// New returns the proxy for client: it forwards to the client's configured
// base URL with its credential, so the same handler fronts fal, the
// aggregator or the simulator. It fails without Authorize or AllowAnyone.
func New(client *wrapper.Client, opts ...Option) (*Handler, error) {
	if client == nil {
		return nil, errors.New("proxy: nil client")
	}
	cfg := config{
		perUser:      10,
		perUserCalls: -1,
		tracked:      100_000,
		trackedUser:  1_000,
		inFlight:     time.Hour,
		origins:      map[string]bool{},
		log:          slog.New(slog.DiscardHandler),
		maxBody:      32 << 20,
		bodyBudget:   128 << 20,
		bodyWait:     5 * time.Second,
	}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.authorize == nil && !cfg.anyone {
		return nil, errors.New("proxy: no Authorize: give the app's user check, or AllowAnyone to let anyone run the model on this key")
	}
	if cfg.bodyBudget < cfg.maxBody {
		return nil, fmt.Errorf("proxy: BodyBudget(%d) is below MaxBodyBytes(%d): no body of the largest size could ever be read", cfg.bodyBudget, cfg.maxBody)
	}
	if cfg.perUserCalls < 0 {
		cfg.perUserCalls = callsPerJob * cfg.perUser
		if cfg.perUser == 0 {
			cfg.perUserCalls = callsPerJob * 10
		}
	}
	f := bridge.Of(client)
	h := &Handler{f: f, server: f.Server() + "/", cfg: cfg, routes: http.NewServeMux(),
		jobs:   newJobStore(cfg.tracked, cfg.trackedUser, cfg.perUser, cfg.inFlight),
		calls:  gate{max: cfg.perUserCalls, users: map[string]int{}},
		bodies: semaphore.NewWeighted(cfg.bodyBudget),
	}
	gen.HandlerWithOptions(operations{refuseAll{h}, h}, gen.StdHTTPServerOptions{
		BaseRouter: h.routes,
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			h.refuse(w, r, http.StatusBadRequest, "parameter", err.Error())
		},
	})
	h.storage = http.NewServeMux()
	gen.HandlerWithOptions(storageOps{refuseAll{h}, h}, gen.StdHTTPServerOptions{
		BaseRouter: h.storage,
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			h.refuse(w, r, http.StatusBadRequest, "parameter", err.Error())
		},
	})
	// Whatever the spec's routes do not match (another path, or a method
	// the operation does not take) is refused.
	for _, m := range []*http.ServeMux{h.routes, h.storage} {
		m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			h.refuse(w, r, http.StatusForbidden, "operation", notThisModel)
		})
	}
	return h, nil
}

// callsPerJob is how many requests a user may have in flight per job slot
// by default: a status stream or poll, a result and a cancel at once, and a
// submit.
const callsPerJob = 4

// Stats counts what a Handler did.
type Stats struct {
	Forwarded int64 // requests forwarded upstream
	// Refused counts the requests refused, by reason: "target" (400, 412),
	// "operation" (403: another model or operation), "auth" (401, 403),
	// "owner" (403: another user's job), "limit" (429), "input" (413, 422),
	// "parameter" (400), "method" (405), "upstream" (502), "host" (403: a
	// Host that is not loopback under LoopbackOnly), "origin" (403: an
	// Origin CORS does not allow).
	Refused map[string]int64
}

type counters struct {
	forwarded atomic.Int64
	refused   [len(reasons)]atomic.Int64
}

var reasons = [...]string{"target", "operation", "auth", "owner", "limit", "input", "parameter", "method", "upstream", "host", "origin"}

// Stats returns the handler's counters.
func (h *Handler) Stats() Stats {
	s := Stats{Forwarded: h.stats.forwarded.Load(), Refused: map[string]int64{}}
	for i, r := range reasons {
		if n := h.stats.refused[i].Load(); n > 0 {
			s.Refused[r] = n
		}
	}
	return s
}

// ownHeaders are the headers the proxy sets on every answer; the
// upstream's are never copied over them.
var ownHeaders = map[string]string{
	"X-Content-Type-Options": "nosniff",
	"Cache-Control":          "no-store", // answers are one user's
}

// exposed are the answer headers a cross-origin page may read: what fal's
// JS client reads (the request id, the timeout type), the billing and
// error headers, and Retry-After.
const exposed = "X-Fal-Request-Id, X-Fal-Request-Timeout-Type, X-Fal-Billable-Units, X-Fal-Error-Type, X-Fal-Retryable, Retry-After"

// ServeHTTP checks the request and forwards it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for k, v := range ownHeaders {
		w.Header().Set(k, v)
	}
	if h.cfg.loopback && !loopbackHost(r.Host) {
		h.refuse(w, r, http.StatusForbidden, "host", "this proxy answers only requests to a loopback address or localhost", "host", r.Host)
		return
	}
	if h.cors(w, r) {
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodPut:
	default:
		w.Header().Set("Allow", "GET, POST, PUT")
		h.refuse(w, r, http.StatusMethodNotAllowed, "method", "the proxy forwards GET, POST and PUT")
		return
	}
	raw := r.Header.Get(TargetHeader)
	if raw == "" {
		h.refuse(w, r, http.StatusBadRequest, "target", "missing the "+TargetHeader+" header")
		return
	}
	target, err := url.Parse(raw)
	if err != nil || target.Scheme != "https" || !falHost(target.Hostname()) || target.User != nil || target.Port() != "" {
		h.refuse(w, r, http.StatusPreconditionFailed, "target", "the target must be an https URL on fal.run or fal.ai", "target", raw)
		return
	}
	if err := h.authorized(r); err != nil {
		code := http.StatusUnauthorized
		if errors.Is(err, ErrForbidden) {
			code = http.StatusForbidden
		}
		h.refuse(w, r, code, "auth", err.Error())
		return
	}
	routes := h.routes
	if strings.EqualFold(target.Hostname(), falStorageHost) {
		routes = h.storage // the upload initiates of fal's JS client, nothing else
	}
	if (routes == h.routes && !strings.EqualFold(target.Hostname(), "queue.fal.run")) || path.Clean("/"+target.Path) != target.Path {
		h.refuse(w, r, http.StatusForbidden, "operation", notThisModel, "target", raw)
		return
	}
	c := &call{h: h, user: h.userOf(r)}
	if !h.calls.enter(c.user) {
		w.Header().Set("Retry-After", "1")
		h.refuse(w, r, http.StatusTooManyRequests, "limit", "too many requests in flight for this user: "+strconv.Itoa(h.cfg.perUserCalls)+" at once", "user", c.user)
		return
	}
	defer h.calls.leave(c.user)
	// Only the queue of this model, as the spec's routes match it: the
	// target's path and query, the browser's method, headers and body.
	tr := r.WithContext(withCall(r.Context(), c))
	tr.URL = &url.URL{Path: target.Path, RawPath: target.RawPath, RawQuery: target.RawQuery}
	tr.Host, tr.RequestURI = "", ""
	routes.ServeHTTP(w, tr)
}

// userOf is the user the limits count a request against: UserOf's answer,
// or without UserOf the client's address.
func (h *Handler) userOf(r *http.Request) string {
	if h.cfg.userOf != nil {
		return h.cfg.userOf(r)
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "address " + host
}

func (h *Handler) authorized(r *http.Request) error {
	if h.cfg.authorize == nil {
		return nil // AllowAnyone
	}
	return h.cfg.authorize(r)
}

// falHost reports fal.run, fal.ai and their subdomains.
func falHost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, d := range []string{"fal.run", "fal.ai"} {
		if host == d || strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
}

// loopbackHost reports a Host header naming localhost or a loopback
// address, with or without a port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(host, "]"), "["), ".")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// cors answers a preflight, refuses an origin that is not allowed, or marks
// an allowed origin's request; it reports whether the request was answered.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	allowed := origin != "" && h.cfg.origins[strings.ToLower(origin)]
	if len(h.cfg.origins) > 0 {
		// The answer depends on Origin, allowed or not: caches must know.
		w.Header().Add("Vary", "Origin")
	}
	if allowed {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Set("Access-Control-Expose-Headers", exposed)
	}
	refuse := func() bool {
		h.refuse(w, r, http.StatusForbidden, "origin", "origin "+origin+" is not allowed to call this proxy",
			"origin", origin, "hint", "allow it with the CORS option (fluxi2i proxy --cors "+origin+")")
		return true
	}
	if r.Method != http.MethodOptions {
		if !allowed && origin != "" && len(h.cfg.origins) > 0 && !sameOrigin(origin, r) {
			return refuse()
		}
		return false
	}
	if !allowed {
		return refuse()
	}
	w.Header().Set("Access-Control-Allow-Methods", "GET, POST, PUT")
	w.Header().Set("Access-Control-Allow-Headers", "Content-Type, Accept, Authorization, "+TargetHeader+", X-Fal-Queue-Priority, X-Fal-Runner-Hint, X-Fal-Request-Timeout, X-Fal-Store-Io, X-Fal-Object-Lifecycle-Preference, X-Fal-Object-Lifecycle, X-Fal-No-Retry, Traceparent, Tracestate")
	w.Header().Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return true
}

// sameOrigin reports an Origin naming the host the request was sent to:
// the handler's own page.
func sameOrigin(origin string, r *http.Request) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// refuse answers in fal's error shape ({"detail": detail}), counts and
// logs the refusal with its reason and the attributes given (key, value
// pairs).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, code int, reason, detail string, attrs ...any) {
	h.refuseWith(w, r, code, reason, detail, map[string]any{"detail": detail}, attrs...)
}
