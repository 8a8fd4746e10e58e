// Package wrapper is the Go client for FLUX.1 [dev] image-to-image
// (fal-ai/flux-1/dev/image-to-image) over fal's queue API, at fal directly
// or through an aggregator that proxies it.
//
//	c, err := wrapper.New(wrapper.WithBearerToken(token)) // or WithFalKey, or the environment
//	out, err := c.Run(ctx, gen.Input{ImageURL: url, Prompt: "..."},
//		wrapper.WithOnUpdate(func(s wrapper.Status) { log.Println(s.Status, s.QueuePosition) }))
//
// The input and output types are those generated from the OpenAPI spec into
// package gen. Every call that does I/O takes a context first; every wait
// ends when the context does.
//
// # Waiting
//
// Run is Submit then Wait. Wait looks at the job at once, so a finished job
// returns without sleeping, then polls with an interval that starts short
// (100 ms) and grows to a cap (2 s), honouring Retry-After. When the
// context ends before the job completes, a best-effort Cancel goes out under
// its own short deadline (WithCancelOnExit(0) turns this off) and the
// returned *JobError names the request id. A job left running can be
// resumed with Wait(ctx, id): no paid result is lost. Use WithOnQueued to
// store the request id before the wait begins. A job that exists is never
// given up for a transient failure: Wait keeps retrying status and result
// calls that get no answer or a retryable one until the job ends or the
// context does.
//
// # Retries
//
// Requests are retried on transport errors, on an idle timeout (no
// headers, bytes or events for 30 s; WithIdleTimeout), on a body cut short,
// on 408, 429, 500, 502, 503 and 504, and on a 2xx answer whose body cannot
// be decoded: up to 4 retries (WithRetries), waiting the server's
// Retry-After (seconds or an HTTP date, at most 2 min, at least the first
// poll interval) when it sends one and otherwise an exponential backoff
// with full jitter (250 ms doubling to 10 s; WithBackoff replaces it).
// Image downloads are retried the same way, from their first byte. A 504 with X-Fal-Request-Timeout-Type: user (the StartTimeout the
// caller set has passed) and an answer marked X-Fal-Retryable: false are
// never retried.
//
// A 429 is the account's limit: it pauses every call of that kind (every
// submit, say) of the client for its Retry-After, not only the one that met
// it, so many jobs on one client slow down together.
//
// Submit is a paid POST and fal offers no idempotency key. When a
// submit's answer is lost after the request may have reached the server
// (a transport failure after sending, an idle timeout, a 2xx body cut short
// or broken without the X-Fal-Request-Id header, a retryable 5xx other
// than 503), the client settles it through fal's request history
// (settle.go): it looks for an item of this endpoint whose json_input
// equals what it sent, sent within a minute of that submit's attempts,
// whose request id it does not already know. The history lists jobs only
// once they have ended, so it asks at once and then every 1 s doubling to
// 15 s until the settle window has passed: the start timeout plus two
// minutes with WithStartTimeout, ten minutes otherwise (WithSettleWindow).
// Found, the job is the submit's (Queued.FromHistory) and is waited for as
// usual. Not found, WithAtMostOnce returns a *SubmitError matching
// ErrOutcomeUnknown and ErrNotInHistory, and the default submits again
// (counted in Stats().SubmitRetries as a possible duplicate). Where the
// history cannot help (404 at the aggregator, 401/403 for the key,
// WithNoStoreIO) the default submits again at once and at-most-once
// returns ErrOutcomeUnknown; the error matches ErrHistoryUnavailable and
// says why, as Stats().HistoryUnavailable does. In the default mode a
// submit that may have created its job is retried past the budget, until
// the context ends: giving up would lose it. With WithAtMostOnce a submit
// is retried only where the server cannot have started the job (429, 503,
// and a connection that could not be made). The history is asked at
// https://api.fal.ai for fal's queue and on the base URL's origin
// otherwise (WithHistoryURL overrides it), with the same credential.
//
// A finished job's result call persists through every transient fault;
// a plain 5xx there (no X-Fal-Error-Type) is the model's own answer only
// when the same status and body come three times in a row.
//
// Stats().FailingSince and Failing say since when requests keep failing,
// and how; a retry that persists past the budget logs at warn level once.
//
// # The send path
//
// One function sends every request the client makes (queue calls, the
// status stream, the request history, image downloads, and package proxy's
// forwards): it attaches the credential for a configured origin, arms the
// idle limit, tells the Observer, and hands back the answer with a body
// whose Close ends the attempt (an answer body is capped at
// WithMaxResponseBytes, but for a proxy forward, which package proxy
// caps; a read that fails is a failed attempt). One
// loop runs the attempts of an operation, deciding each retry by a pure
// classification of the attempt's outcome and a pure delay (Retry-After or
// the backoff); the attempt's state is a value that loop owns. An attempt
// sends under a context and an idle timer of its own, or under the ones a
// job's Run or Wait lends its calls (their lane), shared by one request
// after another while each ends cleanly (its answer, an error answer
// included, read to its end, its request body closed by the transport),
// and given back before each pause of a polling wait. gen builds
// every API request from the spec and parses every answer; a non-2xx
// answer becomes an *APIError in one place before a parser sees it. The
// status stream is an attempt like any other: in StatusStream a broken
// stream is retried (its budget starts afresh after a stream that
// delivered events); in StatusAuto its first failure hands the job to
// polling.
//
// At scale: the number of status streams open at once follows the
// transport (WithMaxStreams): over HTTP/1.x, where each holds a
// connection, half of an *http.Transport's MaxConnsPerHost when it is
// set, no cap when it is not; once the queue answers over HTTP/2, no cap.
// After COMPLETED a stream is read to its end (for 10 ms at most), so its
// connection carries the result call, and Clients made without
// WithHTTPClient share one transport that keeps up to 1,024 idle
// connections a host (http.DefaultTransport keeps 2).
//
// # Errors
//
// Non-2xx answers are *APIError values (status code, request id,
// error_type, retryable flag, the field errors of a 422, the raw body read
// through a size limit); errors.Is(err, ErrNotFound) tells an unknown
// request id. Input is validated before anything is sent, against the
// ranges and enums of the spec: an *InputError names every bad field and
// what is allowed. Once a job is queued, Wait and Run return *JobError
// values naming its request id, wrapping the cause: a job that completed but
// whose result call fails returns the model's *APIError, never an empty
// output. Every message starts with "fluxi2i: ", once: an error that wraps
// another (a *JobError, a *SubmitError) puts the wrapped message after its
// own text without that prefix.
//
// # Credentials
//
// The key is sent only to the configured origins: the base URL's, the
// request history's (https://api.fal.ai for fal's queue) and fal's
// storage's (https://rest.fal.ai for fal's queue, used by package proxy
// for a browser's upload initiates); for any other base URL the last two
// are its own origin. The send path checks the origin where it attaches
// the key, redirects off those origins are not followed, and image
// downloads never carry it. The key never appears in errors, logs or
// String.
//
// # Around the client
//
// Package queuetest serves a fake queue in-process for tests (spectest adds
// the spec's check of its traffic); package batch runs many jobs with a
// journal that survives a crash; package proxy serves fal's browser
// clients (proxyUrl) from a Go back end without exposing the key.
package wrapper
