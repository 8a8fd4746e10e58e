package queuetest_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// history asks the request history with query q.
func (c *tc) history(auth string, q url.Values) (int, gen.RequestHistory) {
	c.t.Helper()
	if q.Get("endpoint_id") == "" {
		q.Set("endpoint_id", "fal-ai/flux-1/dev/image-to-image")
	}
	u, err := url.Parse(c.srv.URL)
	require.NoError(c.t, err)
	resp, b := c.do(c.hc, http.MethodGet, u.Scheme+"://"+u.Host+"/v1/models/requests/by-endpoint?"+q.Encode(), auth, "")
	var page gen.RequestHistory
	if resp.StatusCode == http.StatusOK {
		require.NoError(c.t, json.Unmarshal(b, &page))
	}
	return resp.StatusCode, page
}

func TestTheHistoryListsEndedJobsWithTheirInputs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t, queuetest.QueueTime(time.Second), queuetest.RunTime(time.Second))
		var ids []string
		for range 3 {
			resp, b := c.do(c.hc, http.MethodPost, "/fal-ai/flux-1/dev/image-to-image", "Key k", body)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var q gen.Enqueued
			require.NoError(t, json.Unmarshal(b, &q))
			ids = append(ids, q.RequestID)
			time.Sleep(time.Second)
		}
		code, page := c.history("Key k", url.Values{"expand": {"payloads"}})
		require.Equal(t, http.StatusOK, code)
		require.Len(t, page.Items, 2, "the last job still runs: only ended jobs are listed")
		assert.Equal(t, ids[1], page.Items[0].RequestID, "newest first")
		assert.Equal(t, ids[0], page.Items[1].RequestID)
		in, err := json.Marshal(page.Items[0].JSONInput)
		require.NoError(t, err)
		assert.JSONEq(t, body, string(in), "json_input as received")
		assert.EqualValues(t, 200, *page.Items[0].StatusCode)
		assert.NotNil(t, page.Items[0].SentAt)

		_, page = c.history("Key k", url.Values{})
		require.Len(t, page.Items, 2)
		assert.Nil(t, page.Items[0].JSONInput, "payloads only with expand=payloads")

		time.Sleep(2 * time.Second)
		_, page = c.history("Key k", url.Values{"limit": {"2"}})
		require.Len(t, page.Items, 2)
		require.True(t, page.HasMore)
		_, next := c.history("Key k", url.Values{"limit": {"2"}, "cursor": {*page.NextCursor}})
		require.Len(t, next.Items, 1)
		assert.False(t, next.HasMore)
		assert.Equal(t, ids[0], next.Items[0].RequestID)

		_, page = c.history("Key k", url.Values{"start": {time.Now().Add(-1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)}})
		assert.Len(t, page.Items, 1, "start bounds the end time")
		_, page = c.history("Key k", url.Values{"end": {time.Now().Add(-1500 * time.Millisecond).UTC().Format(time.RFC3339Nano)}})
		assert.Len(t, page.Items, 2, "end is exclusive")
		_, page = c.history("Key k", url.Values{"request_id": {ids[1]}})
		require.Len(t, page.Items, 1)
		assert.Equal(t, ids[1], page.Items[0].RequestID)
		_, page = c.history("Key k", url.Values{"endpoint_id": {"fal-ai/other"}})
		assert.Empty(t, page.Items)

		resp, _ := c.raw(http.MethodGet, "http://queue.test/v1/models/requests/by-endpoint?endpoint_id=x", "", "")
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "the key is needed")
	})
}

func TestTheHistoryKeepsNoPayloadWithoutStoreIO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := start(t, queuetest.QueueTime(0), queuetest.RunTime(0))
		req, err := http.NewRequest(http.MethodPost, c.srv.URL+"/fal-ai/flux-1/dev/image-to-image", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Key k")
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Fal-Store-IO", "0")
		resp, err := c.hc.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		time.Sleep(time.Millisecond)
		_, page := c.history("Key k", url.Values{"expand": {"payloads"}})
		require.Len(t, page.Items, 1)
		assert.Nil(t, page.Items[0].JSONInput)
	})
}

func TestWithoutHistoryAnswers404(t *testing.T) {
	c := start(t, queuetest.WithoutHistory())
	code, _ := c.history("Key k", url.Values{})
	assert.Equal(t, http.StatusNotFound, code)
}
