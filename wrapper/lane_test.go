package wrapper

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
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

// A submit answered with a redirect to another origin: net/http makes the
// body again (GetBody) before the origin guard refuses the hop, and the
// guard closes it. A streamed image's source used to stay open (once a
// refused redirect), and the lane, waiting for that body, was ended after
// an error answer read to its end. The answer is off the spec by design
// (a redirect), as in TestRedirectOffOriginIsNotFollowed.
func TestARefusedRedirectClosesTheBodyMadeForIt(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Location", "http://elsewhere.invalid"+r.URL.Path)
		w.WriteHeader(http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	png := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), make([]byte, 64)...)
	im, err := ImageBytes(png)
	require.NoError(t, err)
	var opens, closes atomic.Int32
	source := im.open
	im.open = func() (io.ReadCloser, error) {
		opens.Add(1)
		rc, err := source()
		return &countedClose{ReadCloser: rc, closes: &closes}, err
	}
	c, err := New(WithBaseURL(srv.URL), WithBearerToken("sk-test-0123456789-secret"), WithEnvironment(nil), WithRetries(0))
	require.NoError(t, err)
	s := c.set
	s.image = im
	l := &lane{shared: true}
	defer l.end()
	_, err = c.submit(context.Background(), gen.Input{Prompt: "a cat"}, &s, l)
	require.Error(t, err, "the redirect is not followed")
	assert.Equal(t, opens.Load(), closes.Load(), "every opening of the image source is closed")
	assert.NotNil(t, l.idle, "an error answer read to its end leaves the lane as it is")
}

type countedClose struct {
	io.ReadCloser
	closes *atomic.Int32
	once   atomic.Bool
}

func (c *countedClose) Close() error {
	if c.once.CompareAndSwap(false, true) {
		c.closes.Add(1)
	}
	return c.ReadCloser.Close()
}
