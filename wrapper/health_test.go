package wrapper_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// While requests keep failing, Stats says what fails and since when; a
// success clears it. A retry that persists past the budget is logged at
// warn level once, not per attempt.
func TestStatsSayWhenTheServerIsGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs syncBuffer
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second)},
			wrapper.WithStatusMode(wrapper.StatusPoll), wrapper.WithRetries(2),
			wrapper.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
		for range 40 {
			srv.Inject(queuetest.OpStatus, queuetest.Fail(503))
		}
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := c.Run(context.Background(), input())
			done <- err
		}()
		time.Sleep(20 * time.Second)
		st := c.Stats()
		assert.Equal(t, "HTTP 503", st.Failing)
		assert.False(t, st.FailingSince.IsZero())
		assert.Less(t, st.FailingSince.Sub(start), time.Second, "since the first failure")
		require.NoError(t, <-done)
		assert.Empty(t, c.Stats().Failing)
		assert.True(t, c.Stats().FailingSince.IsZero())
		assert.Equal(t, 1, strings.Count(logs.String(), "past the retry budget"), logs.String())
	})
}

// A job polled through an outage warns once, not once a poll; a lost
// submit's resubmits warn once.
func TestRetryingPastTheBudgetWarnsOncePerJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var logs syncBuffer
		srv, c := setup(t, []queuetest.Option{queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second), queuetest.WithoutHistory()},
			wrapper.WithStatusMode(wrapper.StatusPoll), wrapper.WithRetries(1),
			wrapper.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
		srv.Inject(queuetest.OpSubmit, queuetest.DropAfter(), queuetest.Fail(503), queuetest.Fail(503), queuetest.Fail(503))
		q, err := c.Submit(context.Background(), input())
		require.NoError(t, err)
		assert.Equal(t, 1, strings.Count(logs.String(), "submitting again after a lost answer"), logs.String())
		// Every status poll's first attempts fail, two in a row: each poll
		// goes past the budget of 1.
		for range 30 {
			srv.Inject(queuetest.OpStatus, queuetest.Fail(503), queuetest.Fail(503))
		}
		_, err = c.Wait(context.Background(), q.RequestID)
		require.NoError(t, err)
		assert.Equal(t, 1, strings.Count(logs.String(), "past the retry budget\" op=status"), logs.String())
	})
}
