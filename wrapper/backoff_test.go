package wrapper

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBackoffIsExponentialWithFullJitter(t *testing.T) {
	b := exponential(100*time.Millisecond, time.Second)
	for attempt, ceil := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 5: time.Second, 60: time.Second} {
		var top time.Duration
		for range 2000 {
			d := b(attempt)
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.Less(t, d, ceil)
			top = max(top, d)
		}
		assert.Greater(t, top, ceil*8/10, "attempt %d spreads over [0, %v)", attempt, ceil)
	}
}

// The default backoff has full jitter: retry n waits anywhere in
// [0, min(10 s, 250 ms·2^(n-1))).
func TestDefaultBackoffHasFullJitter(t *testing.T) {
	b := defaultBackoff()
	ceil := time.Second // the third retry: 250 ms << 2
	lo, hi := ceil, time.Duration(0)
	var sum time.Duration
	const n = 4000
	for range n {
		d := b(3)
		require.True(t, d >= 0 && d < ceil, "%v outside [0, %v)", d, ceil)
		lo, hi, sum = min(lo, d), max(hi, d), sum+d
	}
	assert.Less(t, lo, ceil/10, "some waits are short")
	assert.Greater(t, hi, ceil*9/10, "some are long")
	assert.InDelta(t, float64(ceil/2), float64(sum/n), float64(ceil/10), "uniform on average")
	for range 200 {
		require.Less(t, b(30), 10*time.Second, "capped at 10 s")
	}
}
