package wrapper

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A shared lane keeps its context across attempts that end cleanly, is
// refused to a second attempt while one is under it, and is made again
// after an attempt that did not end cleanly or whose timer fired.
func TestALaneIsReusedOnlyAfterACleanEnd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &lane{shared: true}
		defer l.end()
		ctx := context.Background()

		first, ok := l.enter(ctx, time.Second)
		require.True(t, ok)
		_, ok = l.enter(ctx, time.Second)
		assert.False(t, ok, "a second attempt while the first is under the lane")
		l.leave(true)

		again, ok := l.enter(ctx, time.Second)
		require.True(t, ok)
		assert.True(t, again == first, "a clean end leaves the context for the next attempt")
		l.leave(false)
		assert.Error(t, first.Err(), "an unclean end ends the context")

		fresh, ok := l.enter(ctx, time.Second)
		require.True(t, ok)
		assert.True(t, fresh != first)
		time.Sleep(2 * time.Second) // the attempt stalls: its timer fires
		synctest.Wait()
		assert.Error(t, fresh.Err(), "the idle timer ended the stalled attempt's context")
		l.leave(true) // its answer came to an end anyway
		next, ok := l.enter(ctx, time.Second)
		require.True(t, ok)
		assert.True(t, next != fresh, "a lane whose timer fired is made again")
		assert.NoError(t, next.Err())
		l.leave(true)
	})
}
