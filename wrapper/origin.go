package wrapper

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// sameOrigin reports whether u has the scheme, host and port of base.
func sameOrigin(u, base *url.URL) bool {
	return strings.EqualFold(u.Scheme, base.Scheme) && strings.EqualFold(u.Host, base.Host)
}

// anyOrigin reports whether u has the origin of one of origins.
func anyOrigin(u *url.URL, origins []*url.URL) bool {
	for _, o := range origins {
		if sameOrigin(u, o) {
			return true
		}
	}
	return false
}

// originBound returns a copy of hc that does not follow a redirect off the
// configured origins (the base URL's, the request history's), so the
// Authorization header cannot follow it elsewhere.
func originBound(hc *http.Client, origins ...*url.URL) *http.Client {
	cp := *hc
	next := hc.CheckRedirect
	cp.CheckRedirect = func(req *http.Request, via []*http.Request) (err error) {
		defer func() {
			if err != nil && req.Body != nil {
				req.Body.Close() // made again (GetBody) for a hop that is not made
			}
		}()
		if !anyOrigin(req.URL, origins) {
			return http.ErrUseLastResponse
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &cp
}
