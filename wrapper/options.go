package wrapper

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/errprefix"
)

// Option is one setting. The same type configures a Client (New) and one
// call (Submit, Wait, Run, Updates); each option says where it applies,
// and passing one where it does not apply is an error, never ignored:
// WithImage to Wait, or WithBaseURL to Run, fails the call before anything
// is sent. A call's options override the client's for that call only.
type Option struct {
	name  string
	needs scope // what the call must do for the option to apply
	set   func(*settings) error
}

// scope is what a call does: New applies to everything but a single call.
type scope uint8

const (
	scopeClient scope = 1 << iota // only New
	scopeCall                     // only a single call
	scopeSubmit                   // the call submits (Submit, Run)
	scopeWait                     // the call waits (Wait, Run, Updates)
)

// What each entry point provides.
const (
	forNew     = scopeClient | scopeSubmit | scopeWait
	forSubmit  = scopeCall | scopeSubmit
	forWait    = scopeCall | scopeWait
	forRun     = scopeCall | scopeSubmit | scopeWait
	forUpdates = scopeCall | scopeWait
)

// where names the calls an option applies to, for errors.
func (s scope) where() string {
	switch {
	case s&scopeClient != 0:
		return "New only"
	case s&(scopeSubmit|scopeWait) == scopeSubmit|scopeWait:
		return "Run (or New)"
	case s&scopeSubmit != 0 && s&scopeCall != 0:
		return "Submit and Run"
	case s&scopeSubmit != 0:
		return "New, Submit and Run"
	case s&scopeWait != 0 && s&scopeCall != 0:
		return "Wait, Run and Updates"
	case s&scopeWait != 0:
		return "New, Wait, Run and Updates"
	}
	return "every call"
}

// settings is everything an Option can set. A Client holds its defaults;
// every call works on a copy.
type settings struct {
	// New only.
	base       *url.URL
	auth       *credential
	autoKey    string // WithAPIKey: the scheme follows the base URL
	hc         *http.Client
	log        *slog.Logger
	userAgent  string
	maxBody    int64
	maxStreams int
	idle       time.Duration
	getenv     func(string) string
	history    *url.URL // WithHistoryURL; nil: from the base URL
	observer   Observer // WithObserver

	// New and calls.
	backoff    Backoff
	retries    int
	atMostOnce bool
	window     time.Duration // WithSettleWindow; 0: from the start timeout, or defaultSettleWindow
	pollFirst  time.Duration
	pollMax    time.Duration
	cancelWait time.Duration // deadline of the best-effort cancel; 0: none
	mode       StatusMode

	// Submit.
	params   gen.SubmitParams
	headers  http.Header
	image    *InputImage
	onQueued func(*Queued)

	// Wait.
	onUpdate func(Status)
}

// apply sets opts on s for a call that provides have.
func (s *settings) apply(have scope, call string, opts []Option) error {
	var errs []error
	for _, o := range opts {
		if o.set == nil {
			errs = append(errs, errors.New("fluxi2i: the zero Option does not apply to anything: build options with the With... functions"))
			continue
		}
		if o.needs&^have != 0 {
			errs = append(errs, fmt.Errorf("fluxi2i: %s does not apply to %s: it applies to %s", o.name, call, o.needs.where()))
			continue
		}
		if err := o.set(s); err != nil {
			errs = append(errs, err)
		}
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return optionErrors(errs)
}

// optionErrors is several options refused at once: one message, with one
// prefix, that unwraps to each.
type optionErrors []error

func (e optionErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = errprefix.Strip(err.Error())
	}
	return errprefix.Prefix + strings.Join(msgs, "; ")
}

func (e optionErrors) Unwrap() []error { return e }

func option(name string, needs scope, set func(*settings) error) Option {
	return Option{name: name, needs: needs, set: set}
}

func invalid(field, format string, args ...any) error {
	return &InputError{Fields: []FieldError{{Field: field, Message: fmt.Sprintf(format, args...)}}}
}

// ---- Where and who: New only ----

// WithBaseURL sets the API's base URL (default AggregatorURL; FalURL for
// fal directly). A path prefix is kept: every call goes below it.
func WithBaseURL(raw string) Option {
	return option("WithBaseURL", scopeClient, func(s *settings) error {
		u, err := parseBase(raw)
		s.base = u
		return err
	})
}

// WithBearerToken authenticates with "Authorization: Bearer <token>", as
// the aggregator expects.
func WithBearerToken(token string) Option {
	return option("WithBearerToken", scopeClient, func(s *settings) error { return s.setAuth("Bearer", token) })
}

// WithFalKey authenticates with fal's "Authorization: Key <key>" scheme. It
// does not change the base URL: add WithBaseURL(FalURL) to call fal
// directly.
func WithFalKey(key string) Option {
	return option("WithFalKey", scopeClient, func(s *settings) error { return s.setAuth("Key", key) })
}

// WithAPIKey authenticates with key in the scheme the base URL calls for:
// fal's Key scheme at fal's queue host, Bearer anywhere else. It is how
// FLUXI2I_API_KEY and the CLI's --api-key are read.
func WithAPIKey(key string) Option {
	return option("WithAPIKey", scopeClient, func(s *settings) error {
		if err := s.setAuth("Bearer", key); err != nil {
			return err
		}
		s.autoKey = s.auth.key
		return nil
	})
}

// WithEnvironment makes New read FLUXI2I_API_KEY, FLUXI2I_BASE_URL and
// FAL_KEY through getenv instead of os.Getenv; nil reads nothing. See New
// for how the environment and the options combine.
func WithEnvironment(getenv func(string) string) Option {
	return option("WithEnvironment", scopeClient, func(s *settings) error {
		if getenv == nil {
			getenv = func(string) string { return "" }
		}
		s.getenv = getenv
		return nil
	})
}

// WithHTTPClient sends every request through hc (default: one client
// shared by every Client, over a clone of http.DefaultTransport keeping
// up to 1,024 idle connections a host; http.DefaultClient when the program
// replaced http.DefaultTransport) (its Transport, Timeout
// and Jar are used; redirects off the configured origin are not followed
// for API calls). A Timeout bounds each request, the status stream
// included: a stream it cuts short falls back to polling, so keep it well
// above a poll's round trip, or leave it 0 and rely on WithIdleTimeout.
func WithHTTPClient(hc *http.Client) Option {
	return option("WithHTTPClient", scopeClient, func(s *settings) error {
		if hc == nil {
			return errors.New("fluxi2i: WithHTTPClient: nil *http.Client")
		}
		s.hc = hc
		return nil
	})
}

// WithLogger logs requests and retries at debug level and retried submits
// at warn level. The API key is never logged.
func WithLogger(l *slog.Logger) Option {
	return option("WithLogger", scopeClient, func(s *settings) error {
		if l != nil {
			s.log = l
		}
		return nil
	})
}

// WithUserAgent puts product in front of the library's own User-Agent.
func WithUserAgent(product string) Option {
	return option("WithUserAgent", scopeClient, func(s *settings) error {
		if strings.ContainsAny(product, "\r\n") {
			return invalid("User-Agent", "must be one line")
		}
		s.userAgent = strings.TrimSpace(product) + " " + s.userAgent
		return nil
	})
}

// WithMaxResponseBytes caps how much of one response body is read, image
// downloads included (default 64 MiB, room for sync_mode images).
func WithMaxResponseBytes(n int64) Option {
	return option("WithMaxResponseBytes", scopeClient, func(s *settings) error {
		if n <= 0 {
			return fmt.Errorf("fluxi2i: WithMaxResponseBytes(%d): must be positive", n)
		}
		s.maxBody = n
		return nil
	})
}

// WithMaxStreams caps how many status streams the client holds open at
// once. By default the transport decides: over HTTP/1.x, where each
// stream holds a connection, half of an *http.Transport's MaxConnsPerHost
// when it is set (no cap when it is not); once the queue answers over
// HTTP/2, where streams share connections, no cap. In StatusAuto a job that finds every stream
// taken polls instead; in StatusStream it waits for one.
func WithMaxStreams(n int) Option {
	return option("WithMaxStreams", scopeClient, func(s *settings) error {
		if n < 1 {
			return fmt.Errorf("fluxi2i: WithMaxStreams(%d): must be at least 1", n)
		}
		s.maxStreams = n
		return nil
	})
}

// WithIdleTimeout sets how long any request may go without progress
// (default 30 s): no response headers, no body bytes, no event or
// keepalive of the status stream. Past it the attempt fails as a timeout
// and is retried like one; a silent status stream falls back to polling.
func WithIdleTimeout(d time.Duration) Option {
	return option("WithIdleTimeout", scopeClient, func(s *settings) error {
		if d <= 0 {
			return fmt.Errorf("fluxi2i: WithIdleTimeout(%v): must be positive", d)
		}
		s.idle = d
		return nil
	})
}

// ---- Retrying: New and every call ----

// WithRetries sets how many times a failed request is retried (default 4;
// 0 turns retries off). Waiting for a job that exists is not bounded by it:
// see Wait.
func WithRetries(n int) Option {
	return option("WithRetries", 0, func(s *settings) error {
		if n < 0 {
			return fmt.Errorf("fluxi2i: WithRetries(%d): must be 0 or more", n)
		}
		s.retries = n
		return nil
	})
}

// WithBackoff replaces the wait between retries (default: exponential with
// full jitter, 250 ms doubling to 10 s). A Retry-After from the server wins.
func WithBackoff(b Backoff) Option {
	return option("WithBackoff", 0, func(s *settings) error {
		if b == nil {
			return errors.New("fluxi2i: WithBackoff: nil Backoff")
		}
		s.backoff = b
		return nil
	})
}

// ---- Submitting: New, Submit and Run ----

// WithAtMostOnce makes submits at-most-once: retried only where the server
// cannot have started the job. See the package documentation.
func WithAtMostOnce() Option {
	return option("WithAtMostOnce", scopeSubmit, func(s *settings) error { s.atMostOnce = true; return nil })
}

// WithSettleWindow is how long after a submit whose answer was lost its
// job is looked for in the request history before the client concludes
// that no job was created (see the package documentation). The default is
// the start timeout plus two minutes with WithStartTimeout, otherwise ten
// minutes.
func WithSettleWindow(d time.Duration) Option {
	return option("WithSettleWindow", scopeSubmit, func(s *settings) error {
		if d <= 0 {
			return invalid("settle window", "%v: must be positive", d)
		}
		s.window = d
		return nil
	})
}

// WithHistoryURL sets where the request history (fal's Platform API) is
// asked when a submit's outcome must be settled: by default
// https://api.fal.ai for fal's queue, the base URL's own origin otherwise.
// The credential is sent there too, and to no other origin.
func WithHistoryURL(raw string) Option {
	return option("WithHistoryURL", scopeClient, func(s *settings) error {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			return fmt.Errorf("fluxi2i: WithHistoryURL %q: need http(s)://host", raw)
		}
		s.history = &url.URL{Scheme: u.Scheme, Host: u.Host}
		return nil
	})
}

// WithWebhook asks fal to POST the job's outcome to target when it ends
// (verify deliveries with WebhookVerifier before trusting them).
func WithWebhook(target string) Option {
	return option("WithWebhook", scopeSubmit, func(s *settings) error {
		u, err := url.Parse(target)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return invalid("fal_webhook", "must be an absolute http(s) URL")
		}
		s.params.FalWebhook = &target
		return nil
	})
}

// Priority is the queue priority of a job.
type Priority = gen.SubmitParamsXFalQueuePriority

// Queue priorities (X-Fal-Queue-Priority).
const (
	PriorityNormal Priority = gen.SubmitParamsXFalQueuePriorityNormal
	PriorityLow    Priority = gen.SubmitParamsXFalQueuePriorityLow
)

// WithPriority sets the queue priority (normal or low).
func WithPriority(p Priority) Option {
	return option("WithPriority", scopeSubmit, func(s *settings) error {
		if !p.Valid() {
			return invalid("X-Fal-Queue-Priority", "%q is not one of %s, %s", p, PriorityNormal, PriorityLow)
		}
		s.params.XFalQueuePriority = &p
		return nil
	})
}

// WithRunnerHint passes a routing or session-affinity hint.
func WithRunnerHint(hint string) Option {
	return option("WithRunnerHint", scopeSubmit, func(s *settings) error {
		if strings.ContainsAny(hint, "\r\n") {
			return invalid("X-Fal-Runner-Hint", "must be one line")
		}
		s.params.XFalRunnerHint = &hint
		return nil
	})
}

// WithStartTimeout is how long the job may wait in the queue to START
// (more than 1 s). Past it the server answers 504 with a user timeout,
// which is never retried.
func WithStartTimeout(d time.Duration) Option {
	return option("WithStartTimeout", scopeSubmit, func(s *settings) error {
		if d <= time.Second {
			return invalid("X-Fal-Request-Timeout", "%v: must be more than 1s", d)
		}
		secs := d.Seconds()
		s.params.XFalRequestTimeout = &secs
		return nil
	})
}

// WithNoStoreIO asks fal not to keep the request and response payloads.
func WithNoStoreIO() Option {
	return option("WithNoStoreIO", scopeSubmit, func(s *settings) error {
		v := gen.SubmitParamsXFalStoreION0
		s.params.XFalStoreIO = &v
		return nil
	})
}

// WithNoServerRetry asks fal not to retry the run on its side
// (X-Fal-No-Retry).
func WithNoServerRetry() Option {
	return option("WithNoServerRetry", scopeSubmit, func(s *settings) error {
		v := gen.SubmitParamsXFalNoRetryN1
		s.params.XFalNoRetry = &v
		return nil
	})
}

// WithMediaExpiry asks fal to delete the output media after d (whole
// seconds, at least 1).
func WithMediaExpiry(d time.Duration) Option {
	return option("WithMediaExpiry", scopeSubmit, func(s *settings) error {
		if d < time.Second {
			return invalid("X-Fal-Object-Lifecycle-Preference", "%v: must be at least 1s", d)
		}
		v := `{"expiration_duration_seconds":` + strconv.FormatInt(int64(d/time.Second), 10) + `}`
		s.params.XFalObjectLifecyclePreference = &v
		return nil
	})
}

// WithMaxQueueLength makes the submit fail fast: when more than n jobs wait
// in the queue, the server answers 429 at once instead of queueing the job
// (fal_max_queue_length). The 429 is retried like any other.
func WithMaxQueueLength(n int) Option {
	return option("WithMaxQueueLength", scopeSubmit, func(s *settings) error {
		if n < 0 {
			return invalid("fal_max_queue_length", "%d: must be 0 or more", n)
		}
		s.params.FalMaxQueueLength = &n
		return nil
	})
}

// WithHeader adds a request header to submits. Authorization, Host,
// Content-Type and Content-Length are the client's own, and the spec's
// header parameters have options of their own: neither can be set this
// way.
func WithHeader(key, value string) Option {
	return option("WithHeader", scopeSubmit, func(s *settings) error {
		k := textproto.CanonicalMIMEHeaderKey(key)
		switch {
		case k == "Authorization" || k == "Host" || k == "Content-Type" || k == "Content-Length":
			return invalid("header "+k, "is set by the client")
		case gen.SubmitHeaders[k]:
			return invalid("header "+k, "is a parameter of the spec: set it with its option (WithPriority, WithRunnerHint, WithStartTimeout, WithNoStoreIO, WithNoServerRetry, WithMediaExpiry), which checks it")
		}
		if key == "" || strings.ContainsAny(key+value, "\r\n") {
			return invalid("header "+key, "must be a non-empty one-line name and a one-line value")
		}
		h := s.headers.Clone() // never write into the client's defaults
		if h == nil {
			h = http.Header{}
		}
		h.Add(k, value)
		s.headers = h
		return nil
	})
}

// WithImage makes Submit or Run send im as image_url, replacing
// Input.ImageURL, streamed into the request body.
func WithImage(im *InputImage) Option {
	return option("WithImage", scopeCall|scopeSubmit, func(s *settings) error {
		if im == nil {
			return invalid("image_url", "WithImage(nil)")
		}
		s.image = im
		return nil
	})
}

// WithOnQueued calls fn with the submit's answer as soon as Run has queued
// the job, before it waits: store the request id there, so a crashed
// caller can resume with Wait.
func WithOnQueued(fn func(*Queued)) Option {
	return option("WithOnQueued", scopeSubmit|scopeWait, func(s *settings) error { s.onQueued = fn; return nil })
}

// ---- Waiting: New, Wait, Run and Updates ----

// WithPollInterval sets the first wait between status polls and the cap it
// grows to (default 100 ms growing to 2 s). No poll comes sooner than
// first after the one before, whatever a Retry-After says.
func WithPollInterval(first, max time.Duration) Option {
	return option("WithPollInterval", scopeWait, func(s *settings) error {
		if first <= 0 || max < first {
			return fmt.Errorf("fluxi2i: WithPollInterval(%v, %v): need 0 < first <= max", first, max)
		}
		s.pollFirst, s.pollMax = first, max
		return nil
	})
}

// WithCancelOnExit sets the deadline of the best-effort Cancel that Run and
// Wait send when their context ends (default 5 s); 0 turns it off, so the
// job keeps running and can be resumed with Wait.
func WithCancelOnExit(deadline time.Duration) Option {
	return option("WithCancelOnExit", scopeWait, func(s *settings) error {
		if deadline < 0 {
			return fmt.Errorf("fluxi2i: WithCancelOnExit(%v): must be 0 or more", deadline)
		}
		s.cancelWait = deadline
		return nil
	})
}

// WithStatusMode sets how jobs are followed (default StatusAuto).
func WithStatusMode(m StatusMode) Option {
	return option("WithStatusMode", scopeWait, func(s *settings) error {
		if m < StatusAuto || m > StatusStream {
			return fmt.Errorf("fluxi2i: WithStatusMode(%v): unknown mode", m)
		}
		s.mode = m
		return nil
	})
}

// WithOnUpdate calls fn with every status change while Run or Wait waits:
// the queue position, and each log line once, in order (Status.NewLogs). fn
// runs on the waiting goroutine; keep it quick.
func WithOnUpdate(fn func(Status)) Option {
	return option("WithOnUpdate", scopeWait, func(s *settings) error { s.onUpdate = fn; return nil })
}
