// Package wrapper is the Go client for FLUX.1 [dev] image-to-image
// (fal-ai/flux-1/dev/image-to-image) over fal's queue API, at fal directly
// or through an aggregator that proxies it.
//
//	c, err := wrapper.New(wrapper.WithBearerToken(token)) // or WithFalKey, or the environment
//	out, err := c.Run(ctx, gen.Input{ImageURL: url, Prompt: "..."},
//		wrapper.OnUpdate(func(s wrapper.Status) { log.Println(s.Status, s.QueuePosition) }))
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
// its own short deadline (KeepRunningOnExit or WithCancelOnExit(0) turn this
// off) and the returned *JobError names the request id. A job left running
// can be resumed with Wait(ctx, id): no paid result is lost. Use OnQueued to
// store the request id before the wait begins.
//
// # Retries
//
// Status, result and cancel calls are retried on transport errors, on 408,
// 429, 500, 502, 503 and 504, and on a 2xx answer whose body cannot be
// decoded: up to 4 retries (WithRetries), waiting the server's Retry-After
// (seconds or an HTTP date) when it sends one and otherwise an exponential
// backoff with full jitter (250 ms doubling to 10 s; WithBackoff replaces
// it). A 504 with X-Fal-Request-Timeout-Type: user (the StartTimeout the
// caller set has passed) and an answer marked X-Fal-Retryable: false are
// never retried.
//
// Submit is a paid POST and fal offers no idempotency key. By default it is
// retried on the same failures, as fal's own clients do: when the server
// queued the job but its answer was lost in transit, the retry queues a
// second job, which runs and is billed too. Retried submits are counted in
// Stats().SubmitRetries and in Queued.Attempts, and logged at warn level.
// With WithAtMostOnce (per client) or AtMostOnce (per call), a submit is
// retried only where the server cannot have started the job (429, 503, and
// a connection that could not be made); any other failure after the request
// was sent returns a *SubmitError matching ErrOutcomeUnknown, saying the
// job may exist.
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
// output.
//
// # Credentials
//
// The key is sent only to the configured base URL's origin. Status, result
// and cancel URLs returned by the server are used only when they are on that
// origin, otherwise they are built from the base URL; redirects off the
// origin are not followed. The key never appears in errors, logs or String.
//
// For tests, package queuetest serves a fake queue in-process.
package wrapper
