package wrapper

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/errprefix"
	"github.com/fluxi2i/fluxi2i/internal/media"
	"github.com/fluxi2i/fluxi2i/internal/names"
	"github.com/fluxi2i/fluxi2i/internal/netguard"
)

// OpenImage opens one output image, whether its url is http(s) or a data
// URI (sync_mode), and returns its bytes with the type sniffed from them.
// A download goes through the client's send path without the API key: it
// honours ctx, the idle limit and the response size limit, and opening it
// is retried like any request (transport errors, 408, 429, 5xx,
// Retry-After). It goes only over https to a public address, or to the
// base URL's own host when that is loopback or private (a local
// simulator), redirects included, checked on every connection after DNS
// resolution; another target is refused, not retried. It fails, without
// a retry, when the answer's Content-Type is not an image type, or the
// bytes are not an image or not of the type the output declares.
func (c *Client) OpenImage(ctx context.Context, img gen.Image) (io.ReadCloser, string, error) {
	var im *openedImage
	_, err := c.do(ctx, &c.set, op{name: "download", via: c.downloads()}, func(ctx context.Context, a *attempt) error {
		var err error
		im, err = c.openImage(ctx, a, img)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return im, im.typ, nil
}

// openedImage is an image being read, of the type its first bytes show.
type openedImage struct {
	*bufio.Reader
	io.Closer
	typ string
}

// openImage is one attempt at opening img, for OpenImage and SaveImages
// alike: its bytes must begin as an image of the type the output declares.
// A body that breaks before its first bytes are in is a failed attempt
// (retried); bytes that are not an image, or not the type declared, are
// a permanent failure.
func (c *Client) openImage(ctx context.Context, a *attempt, img gen.Image) (*openedImage, error) {
	rc, err := c.fetchImage(ctx, a, img)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(rc, 512)
	head, perr := br.Peek(512)
	typ, ok := media.Sniff(head)
	switch {
	case !ok && perr != nil && perr != io.EOF:
		err = perr // a broken body (a *sendError): try again
	case !ok:
		err = permanent{ErrNotAnImage} // what the server sent is not an image
	default:
		if declared := deref(img.ContentType); declared != "" && !sameImageType(declared, typ) {
			err = permanent{fmt.Errorf("fluxi2i: the output declares %.40q but the bytes are %s", declared, typ)}
		}
	}
	if err != nil {
		rc.Close()
		return nil, err
	}
	return &openedImage{Reader: br, Closer: rc, typ: typ}, nil
}

// fetchImage opens img's bytes: a data URI's at once (nothing is sent),
// an http(s) URL's through the send path as the attempt a.
func (c *Client) fetchImage(ctx context.Context, a *attempt, img gen.Image) (io.ReadCloser, error) {
	switch {
	case media.IsDataURI(img.URL):
		d, err := media.ParseDataURI(img.URL)
		if err != nil {
			return nil, fmt.Errorf("fluxi2i: image url: %w", err)
		}
		if int64(d.EncodedLen())/4*3 > c.set.maxBody {
			return nil, fmt.Errorf("fluxi2i: image url: %w", &tooLargeError{c.set.maxBody})
		}
		data, err := d.Decode()
		if err != nil {
			return nil, fmt.Errorf("fluxi2i: image url: %w", err)
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	case hasHTTPScheme(img.URL):
		req, err := http.NewRequest(http.MethodGet, img.URL, nil)
		if err != nil {
			return nil, fmt.Errorf("fluxi2i: image url: %w", err)
		}
		if err := checkDownloadURL(req.URL, c.set.base.Hostname()); err != nil {
			return nil, err
		}
		resp, err := c.send(ctx, a, req)
		var refused *downloadRefused
		if errors.As(err, &refused) {
			return nil, permanent{refused} // the rule, not a failure
		}
		if err != nil {
			return nil, err
		}
		if err := checkAnswer(a, resp); err != nil {
			return nil, err
		}
		switch ct := resp.Header.Get("Content-Type"); {
		case resp.StatusCode != http.StatusOK:
			err = &APIError{Op: "download", StatusCode: resp.StatusCode, Detail: "from " + req.URL.Host}
		case !imageContentType(ct):
			err = permanent{fmt.Errorf("%w: the answer from %s declares %.40q", ErrNotAnImage, req.URL.Host, ct)}
		case resp.ContentLength > c.set.maxBody:
			err = &sendError{op: a.op, id: a.id, sent: true, err: &tooLargeError{c.set.maxBody}}
		}
		if err != nil {
			resp.Body.Close()
			return nil, err
		}
		return resp.Body, nil
	}
	return nil, fmt.Errorf("fluxi2i: image url %.40q is neither http(s) nor a data URI", img.URL)
}

// imageContentType reports a Content-Type an image may come with: none, an
// image type, or a generic binary one (storage buckets serve those).
func imageContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return strings.HasPrefix(mt, "image/") || mt == "application/octet-stream" || mt == "binary/octet-stream"
}

func hasHTTPScheme(s string) bool {
	i := strings.Index(s, "://")
	return i > 0 && (strings.EqualFold(s[:i], "http") || strings.EqualFold(s[:i], "https"))
}

func sameImageType(declared, sniffed string) bool {
	mt, _, err := mime.ParseMediaType(declared)
	if err != nil {
		return false
	}
	return mt == sniffed || (mt == "image/jpg" && sniffed == "image/jpeg")
}

// errTooManyImages is returned by SaveImages for an output with more
// images than the spec allows a job to make (num_images' maximum).
var errTooManyImages = fmt.Errorf("fluxi2i: more than %d images in one output", gen.InputNumImagesMaximum)

// SaveImages writes every image of out into dir as prefix-N.ext, the
// extension following the image's type, and returns the paths. Each image
// is downloaded with retries, restarting from its first byte, written to a
// temporary file, synced and renamed: a file is written whole or not at
// all. prefix must be a plain file name by the rule of internal/names (no
// separator, no "..", no control, bidirectional or zero-width character,
// at most 200 bytes): a request id from the server is checked, never
// trusted.
func (c *Client) SaveImages(ctx context.Context, out *gen.Output, dir, prefix string) ([]string, error) {
	if err := names.Check(prefix); err != nil {
		return nil, fmt.Errorf("fluxi2i: file name prefix: %w", err)
	}
	if len(out.Images) > gen.InputNumImagesMaximum {
		return nil, fmt.Errorf("%w: %d", errTooManyImages, len(out.Images))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fluxi2i: saving images: %w", err)
	}
	var paths []string
	for i, img := range out.Images {
		var path string
		_, err := c.do(ctx, &c.set, op{name: "download", id: prefix, via: c.downloads()}, func(ctx context.Context, a *attempt) error {
			im, err := c.openImage(ctx, a, img)
			if err != nil {
				return err
			}
			defer im.Close()
			path = filepath.Join(dir, prefix+"-"+strconv.Itoa(i)+"."+media.Extension(im.typ))
			err = writeAtomic(path, im)
			var se *sendError
			if err != nil && !errors.As(err, &se) {
				err = permanent{err} // the file, not the download, failed
			}
			return err
		})
		if err != nil {
			return paths, errprefix.Errorf("fluxi2i: image %d: %w", i, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// writeAtomic writes r to path through a synced temporary file in the same
// directory, renamed into place.
func writeAtomic(path string, r io.Reader) error {
	dir := filepath.Dir(path)
	if rel, err := filepath.Rel(dir, path); err != nil || rel != filepath.Base(path) {
		return fmt.Errorf("fluxi2i: %s is not in %s", path, dir)
	}
	tmp, err := os.CreateTemp(dir, ".fluxi2i-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename itself survives a crash once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Where downloads may go. An output names its image URLs, so a hostile or
// intercepted API server could name any address; a download is let through
// only over https to a public address (netguard.PublicAddr), or to the
// configured base URL's own host when that host is loopback or private (a
// local simulator, queuetest), by any scheme; a loopback base's own host
// is the machine itself, by any loopback name or address. The rule is
// checked on the URL (scheme, a literal address) of every hop, redirects
// included, whatever the transport, and on the address every connection
// is made to, after DNS resolution:
//
//   - an *http.Transport (the default one, or the caller's, cloned):
//     without a dialer of its own (DialContext, or the deprecated Dial)
//     it gets one that checks the address before connecting; with one,
//     each connection it makes (DialContext, DialTLSContext, or the
//     deprecated Dial and DialTLS) is checked as soon as it has connected,
//     before a byte is sent;
//   - another http.RoundTripper decides how it connects: the connection it
//     reports through net/http/httptrace (GotConn, which http.Transport
//     and the wrappers around one report) is checked before the request
//     is written, and closed when refused. One that reports no connection
//     has only the URL rule; one behind a proxy reports the proxy's
//     address, judged by the rule like any other.
//
// A connection that is not to an IP address (the caller's transport
// dialing a pipe or a socket of its own) is the caller's choice and is not
// judged; nor is the target behind a proxy an *http.Transport's Proxy
// chose (its literal address is).

// downloadRefused is a download the rule refuses: permanent, not retried.
type downloadRefused struct{ host, why string }

func (e *downloadRefused) Error() string {
	return fmt.Sprintf("fluxi2i: refusing to download an image from %.80q: %s (images come over https from public addresses, or from the base URL's own local host)", e.host, e.why)
}

// downloads is c's route for images: c's HTTP client guarded by the rule
// above, made once; its idle connections are closed when c is dropped.
func (c *Client) downloads() *route {
	c.dlOnce.Do(func() {
		hc := guardDownloads(c.set.hc, c.set.base)
		c.dlRoute = route{hc: hc, capped: true}
		runtime.AddCleanup(c, func(hc *http.Client) { hc.CloseIdleConnections() }, hc)
	})
	return &c.dlRoute
}

// guardDownloads returns a copy of hc whose connections and redirects
// follow the download rule for the base URL base.
func guardDownloads(hc *http.Client, base *url.URL) *http.Client {
	g := *hc
	baseHost := base.Hostname()
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	if tr, ok := rt.(*http.Transport); ok {
		// Without a dialer of the caller's, ours checks addresses before
		// connecting (the default transport's dialer is a plain one).
		ours := ownTransport(rt) || (tr.DialContext == nil && tr.Dial == nil)
		g.Transport = &byScheme{plain: guardTransport(tr, baseHost, false, ours), tls: guardTransport(tr, baseHost, true, ours)}
	} else {
		// Another RoundTripper decides where it connects: the connection
		// it reports is checked, and the URL rule holds.
		g.Transport = &traceGuard{next: rt, baseHost: baseHost}
	}
	next := hc.CheckRedirect
	g.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if err := checkDownloadURL(req.URL, baseHost); err != nil {
			return err
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &g
}

// checkDownloadURL applies the rule to what a URL says: its scheme, and
// its host when that is a literal address.
func checkDownloadURL(u *url.URL, baseHost string) error {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return &downloadRefused{u.Host, "not http(s)"}
	}
	if a, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil && !allowedAddr(u.Hostname(), baseHost, a, scheme == "https") {
		return &downloadRefused{u.Host, "not an address images come from"}
	}
	return nil
}

// allowedAddr is the rule for a connection to a of host.
func allowedAddr(host, baseHost string, a netip.Addr, tls bool) bool {
	a = a.Unmap()
	if tls && netguard.PublicAddr(a) {
		return true
	}
	return baseHostOf(host, baseHost) && netguard.LocalAddr(a)
}

// baseHostOf reports whether host is the base URL's host baseHost: the
// same name or address, or, when the base is loopback, any loopback name
// or address (the machine itself: localhost and 127.0.0.1 are one host).
func baseHostOf(host, baseHost string) bool {
	host, baseHost = strings.Trim(host, "[]"), strings.Trim(baseHost, "[]")
	return strings.EqualFold(host, baseHost) || (netguard.LoopbackHost(baseHost) && netguard.LoopbackHost(host))
}

// byScheme sends https requests through one transport and http ones
// through another: their connections follow different rules.
type byScheme struct{ plain, tls *http.Transport }

func (b *byScheme) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.EqualFold(req.URL.Scheme, "https") {
		return b.tls.RoundTrip(req)
	}
	return b.plain.RoundTrip(req)
}

// CloseIdleConnections closes both transports' idle connections.
func (b *byScheme) CloseIdleConnections() {
	b.plain.CloseIdleConnections()
	b.tls.CloseIdleConnections()
}

// guardTransport is a clone of tr whose connections follow the rule for
// tls or plain requests. With ours, tr's dialer is the default one (or
// none) and is replaced by one that checks the address before connecting;
// otherwise each of tr's dialers is wrapped to check what it connected to.
func guardTransport(tr *http.Transport, baseHost string, tls, ours bool) *http.Transport {
	t := tr.Clone()
	var proxies sync.Map // host:port of the proxies the caller's Proxy chose
	if p := t.Proxy; p != nil {
		t.Proxy = func(r *http.Request) (*url.URL, error) {
			u, err := p(r)
			if u != nil {
				port := u.Port()
				if port == "" {
					port = map[string]string{"https": "443", "socks5": "1080"}[u.Scheme]
					if port == "" {
						port = "80"
					}
				}
				proxies.Store(net.JoinHostPort(u.Hostname(), port), true)
			}
			return u, err
		}
	}
	check := func(host string, a netip.Addr) error {
		if !allowedAddr(host, baseHost, a, tls) {
			return &downloadRefused{host, "not an address images come from"}
		}
		return nil
	}
	guard := func(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dial == nil {
			return nil
		}
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if _, proxy := proxies.Load(addr); proxy {
				return conn, nil
			}
			if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
				host, _, _ := net.SplitHostPort(addr)
				if a, ok := netip.AddrFromSlice(ta.IP); ok {
					if err := check(host, a); err != nil {
						conn.Close()
						return nil, err
					}
				}
			}
			return conn, nil
		}
	}
	if ours {
		t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(addr)
			_, proxy := proxies.Load(addr)
			d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
				ap, err := netip.ParseAddrPort(address)
				if err != nil {
					return &downloadRefused{host, "not an IP address"}
				}
				if proxy {
					return nil
				}
				return check(host, ap.Addr())
			}}
			return d.DialContext(ctx, network, addr)
		}
		t.Dial = nil
	} else {
		if t.DialContext == nil && t.Dial != nil {
			dial := t.Dial
			t.DialContext = func(_ context.Context, network, addr string) (net.Conn, error) { return dial(network, addr) }
			t.Dial = nil
		}
		t.DialContext = guard(t.DialContext)
	}
	if t.DialTLSContext == nil && t.DialTLS != nil {
		dial := t.DialTLS
		t.DialTLSContext = func(_ context.Context, network, addr string) (net.Conn, error) { return dial(network, addr) }
		t.DialTLS = nil
	}
	t.DialTLSContext = guard(t.DialTLSContext)
	return t
}

// traceGuard applies the rule to the connections a RoundTripper that is
// not an *http.Transport reports through httptrace: one to an address the
// rule refuses is closed when it is reported, before the request is
// written, and the request fails with the refusal.
type traceGuard struct {
	next     http.RoundTripper
	baseHost string
}

func (g *traceGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	var refused atomic.Pointer[downloadRefused]
	tls := strings.EqualFold(req.URL.Scheme, "https")
	host := req.URL.Hostname()
	ctx := httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if info.Conn == nil {
			return
		}
		ta, ok := info.Conn.RemoteAddr().(*net.TCPAddr)
		if !ok {
			return // not an IP connection: the caller's choice
		}
		if a, ok := netip.AddrFromSlice(ta.IP); ok && !allowedAddr(host, g.baseHost, a, tls) {
			refused.CompareAndSwap(nil, &downloadRefused{req.URL.Host, "not an address images come from"})
			info.Conn.Close()
		}
	}})
	resp, err := g.next.RoundTrip(req.WithContext(ctx))
	if r := refused.Load(); r != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, r
	}
	return resp, err
}

// CloseIdleConnections closes the RoundTripper's idle connections, if it
// has any.
func (g *traceGuard) CloseIdleConnections() {
	if c, ok := g.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
