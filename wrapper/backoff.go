package wrapper

import (
	"math/rand/v2"
	"time"
)

// Backoff returns how long to wait before retry number attempt (1 for the
// first retry). Inject one with WithBackoff; a Retry-After from the server
// takes precedence over it.
type Backoff interface {
	Delay(attempt int) time.Duration
}

// BackoffFunc adapts a function to Backoff.
type BackoffFunc func(attempt int) time.Duration

// Delay calls f.
func (f BackoffFunc) Delay(attempt int) time.Duration { return f(attempt) }

// ExponentialBackoff is exponential backoff with full jitter: retry n waits
// a random duration in [0, min(Max, Base*2^(n-1))).
type ExponentialBackoff struct {
	Base time.Duration
	Max  time.Duration
}

// DefaultBackoff is the backoff New uses: 250 ms doubling, capped at 10 s,
// with full jitter.
func DefaultBackoff() ExponentialBackoff {
	return ExponentialBackoff{Base: 250 * time.Millisecond, Max: 10 * time.Second}
}

// Delay implements Backoff.
func (b ExponentialBackoff) Delay(attempt int) time.Duration {
	ceil := b.Max
	if attempt < 1 {
		attempt = 1
	}
	if attempt < 40 {
		if d := b.Base << (attempt - 1); d > 0 && d < ceil {
			ceil = d
		}
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil)
}
