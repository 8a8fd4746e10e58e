package wrapper

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Version is the library version sent in the User-Agent.
const Version = "0.1.0"

// Base URLs of the two ways to reach the model.
const (
	// AggregatorURL is the aggregator of the seeds (Bearer tokens); the default.
	AggregatorURL = "https://api.chainhub.tech"
	// FalURL is fal's own queue (Key scheme).
	FalURL = "https://queue.fal.run"
)

// Environment variables New reads when no credential option is given.
const (
	EnvAPIKey  = "FLUXI2I_API_KEY"  // Bearer token (Key scheme when EnvBaseURL is fal's queue)
	EnvBaseURL = "FLUXI2I_BASE_URL" // base URL; default AggregatorURL
	EnvFalKey  = "FAL_KEY"          // fal's key: means fal direct with the Key scheme
)

// ErrNoCredentials is returned by New when no API key was given and none is
// in the environment.
var ErrNoCredentials = errors.New("fluxi2i: no API key: use WithBearerToken or WithFalKey, or set " + EnvAPIKey + " or " + EnvFalKey)

// Client talks to the queue of fal-ai/flux-1/dev/image-to-image. It is safe
// for concurrent use; construct it once.
type Client struct {
	base        *url.URL     // scheme://host[:port][/prefix], no trailing slash
	server      string       // base as a string, for the generated request builders
	auth        *credential  // full Authorization header value; a pointer so fmt never prints it
	scheme      string       // "Bearer" or "Key", for String
	http        *http.Client // bound to the configured origin
	download    *http.Client // the caller's client as given, for images (never with the key)
	log         *slog.Logger
	userAgent   string
	backoff     Backoff
	maxRetries  int
	atMostOnce  bool
	pollFirst   time.Duration
	pollMax     time.Duration
	cancelWait  time.Duration // deadline of the best-effort cancel; 0 disables it
	maxBody     int64
	mode        StatusMode
	streamIdle  time.Duration
	streamSlots chan struct{} // one token per open status stream

	stats struct {
		submits, submitRetries, retries atomic.Int64
		polls, streams, fallbacks       atomic.Int64
	}
}

// Option configures a Client in New.
type Option func(*Client) error

// WithBaseURL sets the API's base URL (default AggregatorURL; FalURL for fal
// directly). A path prefix is kept: every call goes below it.
func WithBaseURL(raw string) Option {
	return func(c *Client) error { return c.setBase(raw) }
}

// WithBearerToken authenticates with "Authorization: Bearer <token>", as the
// aggregator expects.
func WithBearerToken(token string) Option {
	return func(c *Client) error { return c.setAuth("Bearer", token) }
}

// WithFalKey authenticates with fal's "Authorization: Key <key>" scheme. It
// does not change the base URL: add WithBaseURL(FalURL) to call fal directly.
func WithFalKey(key string) Option {
	return func(c *Client) error { return c.setAuth("Key", key) }
}

// WithHTTPClient sends every request through hc (its Transport, Timeout and
// Jar are used; redirects off the configured origin are not followed). A
// Timeout bounds each request, the status stream included: a stream it cuts
// short falls back to polling, so keep it well above a poll's round trip.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("fluxi2i: WithHTTPClient: nil *http.Client")
		}
		c.http = hc
		return nil
	}
}

// WithLogger logs requests and retries at debug level and retried submits
// at warn level. The API key is never logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *Client) error {
		if l != nil {
			c.log = l
		}
		return nil
	}
}

// WithUserAgent puts product in front of the library's own User-Agent.
func WithUserAgent(product string) Option {
	return func(c *Client) error {
		c.userAgent = strings.TrimSpace(product) + " " + c.userAgent
		return nil
	}
}

// WithRetries sets how many times a failed call is retried (default 4; 0
// turns retries off).
func WithRetries(n int) Option {
	return func(c *Client) error {
		if n < 0 {
			return fmt.Errorf("fluxi2i: WithRetries(%d): must be 0 or more", n)
		}
		c.maxRetries = n
		return nil
	}
}

// WithBackoff replaces the wait between retries (default: exponential with
// full jitter, 250 ms doubling to 10 s). A Retry-After from the server wins.
func WithBackoff(b Backoff) Option {
	return func(c *Client) error {
		if b == nil {
			return errors.New("fluxi2i: WithBackoff: nil Backoff")
		}
		c.backoff = b
		return nil
	}
}

// WithAtMostOnce makes every Submit of this client at-most-once: it is
// retried only where the server cannot have started the job. See the
// package documentation.
func WithAtMostOnce() Option {
	return func(c *Client) error { c.atMostOnce = true; return nil }
}

// WithPollInterval sets the first wait between status polls and the cap it
// grows to (default 100 ms growing to 2 s).
func WithPollInterval(first, max time.Duration) Option {
	return func(c *Client) error {
		if first <= 0 || max < first {
			return fmt.Errorf("fluxi2i: WithPollInterval(%v, %v): need 0 < first <= max", first, max)
		}
		c.pollFirst, c.pollMax = first, max
		return nil
	}
}

// WithCancelOnExit sets the deadline of the best-effort Cancel that Run and
// Wait send when their context ends (default 5 s); 0 turns it off, so the
// job keeps running and can be resumed with Wait.
func WithCancelOnExit(deadline time.Duration) Option {
	return func(c *Client) error {
		if deadline < 0 {
			return fmt.Errorf("fluxi2i: WithCancelOnExit(%v): must be 0 or more", deadline)
		}
		c.cancelWait = deadline
		return nil
	}
}

// WithMaxResponseBytes caps how much of one response body is read (default
// 64 MiB, room for sync_mode images).
func WithMaxResponseBytes(n int64) Option {
	return func(c *Client) error {
		if n <= 0 {
			return fmt.Errorf("fluxi2i: WithMaxResponseBytes(%d): must be positive", n)
		}
		c.maxBody = n
		return nil
	}
}

// New returns a Client. Options win over the environment: without a
// credential option, FLUXI2I_API_KEY (Bearer) and FLUXI2I_BASE_URL are read,
// then FAL_KEY, which means fal directly (FalURL, Key scheme). With no key
// anywhere New fails with ErrNoCredentials.
func New(opts ...Option) (*Client, error) {
	c := &Client{
		http:       http.DefaultClient,
		log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		userAgent:  "fluxi2i-go/" + Version,
		backoff:    DefaultBackoff(),
		maxRetries: 4,
		pollFirst:  100 * time.Millisecond,
		pollMax:    2 * time.Second,
		cancelWait: 5 * time.Second,
		maxBody:    64 << 20,
		streamIdle: 30 * time.Second,
	}
	c.streamSlots = make(chan struct{}, 512)
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if err := c.fromEnv(); err != nil {
		return nil, err
	}
	if c.auth == nil {
		return nil, ErrNoCredentials
	}
	c.download = c.http
	c.http = originBound(c.http, c.base)
	return c, nil
}

func (c *Client) fromEnv() error {
	if c.auth == nil {
		if k := strings.TrimSpace(os.Getenv(EnvAPIKey)); k != "" {
			scheme := "Bearer"
			if c.base == nil {
				if err := c.setBase(envOr(EnvBaseURL, AggregatorURL)); err != nil {
					return fmt.Errorf("%s: %w", EnvBaseURL, err)
				}
			}
			if c.base.Host == "queue.fal.run" {
				scheme = "Key"
			}
			if err := c.setAuth(scheme, k); err != nil {
				return err
			}
		} else if k := strings.TrimSpace(os.Getenv(EnvFalKey)); k != "" {
			if c.base == nil {
				if err := c.setBase(FalURL); err != nil {
					return err
				}
			}
			if err := c.setAuth("Key", k); err != nil {
				return err
			}
		}
	}
	if c.base == nil {
		if err := c.setBase(envOr(EnvBaseURL, AggregatorURL)); err != nil {
			return fmt.Errorf("%s: %w", EnvBaseURL, err)
		}
	}
	return nil
}

func envOr(k, def string) string {
	if v := strings.TrimSpace(os.Getenv(k)); v != "" {
		return v
	}
	return def
}

func (c *Client) setBase(raw string) error {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return fmt.Errorf("fluxi2i: base URL %q: %v", raw, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("fluxi2i: base URL %q: need http(s)://host", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("fluxi2i: base URL %q: no user info, query or fragment allowed", u.Redacted())
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	c.base = u
	c.server = u.String()
	return nil
}

func (c *Client) setAuth(scheme, key string) error {
	key = strings.TrimSpace(key)
	if key == "" {
		return ErrNoCredentials
	}
	if strings.ContainsAny(key, "\r\n") {
		return errors.New("fluxi2i: API key contains a line break")
	}
	c.scheme = scheme
	c.auth = &credential{header: scheme + " " + key}
	return nil
}

// BaseURL is the configured base URL.
func (c *Client) BaseURL() string { return c.server }

// String describes the client without its credential.
func (c *Client) String() string {
	return fmt.Sprintf("fluxi2i.Client{base: %s, auth: %s [REDACTED]}", c.server, c.scheme)
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
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Submits:       c.stats.submits.Load(),
		SubmitRetries: c.stats.submitRetries.Load(),
		Retries:       c.stats.retries.Load(),
		StatusPolls:   c.stats.polls.Load(),
		Streams:       c.stats.streams.Load(),
		Fallbacks:     c.stats.fallbacks.Load(),
	}
}

// credential holds the Authorization header value. It never prints.
type credential struct{ header string }

func (*credential) String() string       { return "[REDACTED]" }
func (*credential) GoString() string     { return "[REDACTED]" }
func (*credential) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }
