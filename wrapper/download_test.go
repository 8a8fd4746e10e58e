package wrapper_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
)

// imageServer serves a jpeg on every path but /redirect (to ?to=) and
// counts the requests it gets.
func imageServer(t *testing.T, tls bool) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
		case "/html":
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html><body>not an image</body></html>"))
		case "/liar": // says image, sends text
			w.Header().Set("Content-Type", "image/png")
			w.Write([]byte(strings.Repeat("not an image at all ", 40)))
		default:
			w.Header().Set("Content-Type", "image/jpeg")
			w.Write(heads["image/jpeg"])
		}
	})
	srv := httptest.NewUnstartedServer(h)
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, &hits
}

func downloadClient(t *testing.T, base string, opts ...wrapper.Option) *wrapper.Client {
	clearEnv(t)
	c, err := wrapper.New(append([]wrapper.Option{wrapper.WithBearerToken(testToken), wrapper.WithBaseURL(base),
		wrapper.WithBackoff(func(int) time.Duration { return time.Millisecond })}, opts...)...)
	require.NoError(t, err)
	return c
}

func open(c *wrapper.Client, u string) error {
	rc, _, err := c.OpenImage(context.Background(), gen.Image{URL: u})
	if err == nil {
		rc.Close()
	}
	return err
}

// Images come over https from public addresses, or from the base URL's own
// local host: loopback that is not the base host, private, link-local and
// plain http to a public host are refused before any connection, and a
// refusal is not retried.
func TestDownloadTargetsAreRefused(t *testing.T) {
	srv, hits := imageServer(t, false)
	tlsSrv, tlsHits := imageServer(t, true)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	c := downloadClient(t, "https://api.example")
	for _, u := range []string{
		srv.URL + "/a.jpg",                         // loopback, not the base host
		"http://localhost:" + port + "/a.jpg",      // loopback by name: resolved, then refused
		"http://[::ffff:127.0.0.1]:" + port + "/a", // loopback, mapped
		"http://0.0.0.0:" + port + "/a.jpg",
		"http://10.1.2.3/a.jpg", "http://192.168.0.10/a.jpg", "http://[fd00::1]/a.jpg", // private
		"http://169.254.169.254/latest/meta-data/", // link-local
		"http://93.184.216.34/a.jpg",               // plain http to a public host
		tlsSrv.URL + "/a.jpg",                      // https, but loopback
		"ftp://example.com/a.jpg",
	} {
		start := time.Now()
		err := open(c, u)
		require.Error(t, err, u)
		if !strings.HasPrefix(u, "ftp") {
			assert.Contains(t, err.Error(), "refusing to download", u)
		}
		assert.Less(t, time.Since(start), 3*time.Second, "%s: refused, not timed out", u)
	}
	assert.Zero(t, hits.Load(), "no request reached the loopback server")
	assert.Zero(t, tlsHits.Load())

	// A caller's own dialer connects, then the address is checked before a
	// byte is sent; the refusal is permanent (one dial, no retry).
	var dials atomic.Int32
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, srv.Listener.Addr().String()) // whatever the name, loopback
	}}
	c = downloadClient(t, "https://api.example", wrapper.WithHTTPClient(&http.Client{Transport: tr}), wrapper.WithRetries(4))
	err := open(c, "https://images.example/a.jpg")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "refusing to download")
	assert.EqualValues(t, 1, dials.Load(), "not retried")
	assert.Zero(t, hits.Load())
}

// The base URL's own local host may serve images over plain http (the
// simulator, queuetest), on any port; data URIs need no connection.
func TestDownloadsFromTheBaseURLsLocalHost(t *testing.T) {
	api, _ := imageServer(t, false)
	media, hits := imageServer(t, false)
	c := downloadClient(t, api.URL)
	require.NoError(t, open(c, media.URL+"/0.jpeg"), "the same host, another port")
	assert.EqualValues(t, 1, hits.Load())
	require.NoError(t, open(c, "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQ=="))
	_, port, _ := net.SplitHostPort(media.Listener.Addr().String())
	require.NoError(t, open(c, "http://localhost:"+port+"/0.jpeg"), "a loopback base: the machine itself, by any loopback name")
	assert.EqualValues(t, 2, hits.Load())

	// A private base: its own host only.
	c = downloadClient(t, "http://192.168.7.7:8787")
	err := open(c, media.URL+"/0.jpeg")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "refusing to download")
	assert.EqualValues(t, 2, hits.Load())
}

// Every redirect hop is checked by the same rule.
func TestDownloadRedirectsAreRechecked(t *testing.T) {
	api, hits := imageServer(t, false)
	other, otherHits := imageServer(t, false)
	_, otherPort, _ := net.SplitHostPort(other.Listener.Addr().String())
	c := downloadClient(t, api.URL)
	for _, to := range []string{
		"http://10.0.0.1/a.jpg",
		"http://169.254.169.254/",
		"http://93.184.216.34/a.jpg",
		"file:///etc/passwd",
	} {
		err := open(c, api.URL+"/redirect?to="+to)
		require.Error(t, err, to)
		assert.Contains(t, err.Error(), "refusing to download", to)
	}
	assert.Zero(t, otherHits.Load())
	assert.EqualValues(t, 4, hits.Load(), "one request each: refusals are not retried")
	require.NoError(t, open(c, api.URL+"/redirect?to="+other.URL+"/a.jpg"), "the base host, another port")
	require.NoError(t, open(c, api.URL+"/redirect?to=http://localhost:"+otherPort+"/a.jpg"), "the loopback base's machine")
}

// A declared-type mismatch is permanent: the server is asked once.
func TestDownloadTypeMismatchIsNotRetried(t *testing.T) {
	api, hits := imageServer(t, false)
	c := downloadClient(t, api.URL, wrapper.WithRetries(4))
	err := open(c, api.URL+"/html")
	assert.ErrorIs(t, err, wrapper.ErrNotAnImage)
	assert.Contains(t, err.Error(), "text/html")
	assert.EqualValues(t, 1, hits.Load())

	out := &gen.Output{Images: []gen.Image{{URL: api.URL + "/liar", ContentType: ptr("image/png")}}}
	_, err = c.SaveImages(context.Background(), out, t.TempDir(), "r1")
	assert.ErrorIs(t, err, wrapper.ErrNotAnImage)
	assert.EqualValues(t, 2, hits.Load(), "a body that is not an image: asked once")

	out = &gen.Output{Images: []gen.Image{{URL: api.URL + "/html"}}}
	_, err = c.SaveImages(context.Background(), out, t.TempDir(), "r1")
	assert.ErrorIs(t, err, wrapper.ErrNotAnImage)
	assert.EqualValues(t, 3, hits.Load())
}

// roundTripper is a RoundTripper that is not an *http.Transport.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A caller's plain *http.Transport (no dialer of its own) gets the guarded
// dialer too: loopback that is not the base host is refused before
// connecting, over http and https. A RoundTripper that is not an
// *http.Transport has the address of its connection checked when it
// reports it (httptrace), before the request is written.
func TestDownloadGuardHoldsForACallersTransport(t *testing.T) {
	srv, hits := imageServer(t, false)
	tlsSrv, tlsHits := imageServer(t, true)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	_, tlsPort, _ := net.SplitHostPort(tlsSrv.Listener.Addr().String())
	insecure := &tls.Config{InsecureSkipVerify: true}
	for name, tr := range map[string]*http.Transport{
		"plain":       {},
		"tls config":  {TLSClientConfig: insecure},
		"with proxy":  {Proxy: http.ProxyFromEnvironment, TLSClientConfig: insecure},
		"old dial":    {Dial: (&net.Dialer{}).Dial, TLSClientConfig: insecure},
		"old dialTLS": {DialTLS: func(network, addr string) (net.Conn, error) { return tls.Dial(network, addr, insecure) }},
	} {
		c := downloadClient(t, "https://api.example", wrapper.WithHTTPClient(&http.Client{Transport: tr}), wrapper.WithRetries(3))
		for _, u := range []string{
			"http://localhost:" + port + "/a.jpg",
			"https://localhost:" + tlsPort + "/a.jpg",
			srv.URL + "/a.jpg",
		} {
			err := open(c, u)
			require.Error(t, err, "%s: %s", name, u)
			assert.Contains(t, err.Error(), "refusing to download", "%s: %s", name, u)
		}
	}
	assert.Zero(t, hits.Load(), "no request reached the loopback server")
	assert.Zero(t, tlsHits.Load())

	// Another RoundTripper: its connection's address, once reported.
	inner := &http.Transport{TLSClientConfig: insecure, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, tlsSrv.Listener.Addr().String()) // whatever the name, loopback
	}}
	t.Cleanup(inner.CloseIdleConnections)
	var trips atomic.Int32
	rt := roundTripper(func(r *http.Request) (*http.Response, error) { trips.Add(1); return inner.RoundTrip(r) })
	c := downloadClient(t, "https://api.example", wrapper.WithHTTPClient(&http.Client{Transport: rt}), wrapper.WithRetries(3))
	err := open(c, "https://images.example/a.jpg")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "refusing to download")
	assert.EqualValues(t, 1, trips.Load(), "not retried")
	assert.Zero(t, tlsHits.Load(), "no request was written")
	err = open(c, "http://127.0.0.1:"+port+"/a.jpg")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "refusing to download", "the URL's literal address, before any connection")
	assert.EqualValues(t, 1, trips.Load())
}
