package wrapper

import (
	"math/rand/v2"
	"time"
)

// Backoff returns how long to wait before retry number attempt (1 for the
// first retry). Pass one to WithBackoff; a Retry-After from the server
// takes precedence over it. The default is exponential with full jitter:
// retry n waits a random duration in [0, min(10 s, 250 ms·2^(n-1))).
type Backoff func(attempt int) time.Duration

// defaultBackoff is the backoff New uses: 250 ms doubling, capped at 10 s,
// with full jitter.
func defaultBackoff() Backoff { return exponential(250*time.Millisecond, 10*time.Second) }

// exponential is exponential backoff with full jitter: retry n waits a
// random duration in [0, min(ceil, base·2^(n-1))).
func exponential(base, ceil time.Duration) Backoff {
	return func(attempt int) time.Duration {
		top := ceil
		if attempt < 1 {
			attempt = 1
		}
		if attempt < 40 {
			if d := base << (attempt - 1); d > 0 && d < top {
				top = d
			}
		}
		if top <= 0 {
			return 0
		}
		return rand.N(top)
	}
}
