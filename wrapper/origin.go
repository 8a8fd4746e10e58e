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

// originBound returns a copy of hc that does not follow a redirect off the
// configured origin, so the Authorization header cannot follow it there.
func originBound(hc *http.Client, base *url.URL) *http.Client {
	cp := *hc
	next := hc.CheckRedirect
	cp.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if !sameOrigin(req.URL, base) {
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

// endpoints are the status, result and cancel URLs of one job.
type endpoints struct {
	status, result, cancel string
}

// appPath is where a job's status, result and cancel live: owner/app
// fal-ai/flux-1, no sub-path (a test checks it against the generated
// request builders, which follow the spec).
const appPath = "/fal-ai/flux-1/requests/"

// endpointsFor builds a job's URLs from the base URL, or takes the ones the
// server returned when they are on the configured origin (and so will get
// the credential) and point at this job of this app, whatever prefix a
// gateway puts before it. Any other URL is ignored.
func (c *Client) endpointsFor(id string, returned *Queued) endpoints {
	job := c.server + appPath + url.PathEscape(id)
	built := endpoints{status: job + "/status", result: job, cancel: job + "/cancel"}
	if returned == nil {
		return built
	}
	pick := func(raw, builtURL string) string {
		if raw == "" {
			return builtURL
		}
		// The job's own path, as the spec builds it, must end the URL.
		tail := strings.TrimPrefix(strings.TrimPrefix(builtURL, c.server), "/")
		u, err := url.Parse(raw)
		if err != nil || !sameOrigin(u, c.base) || u.RawQuery != "" || u.User != nil || !strings.HasSuffix(u.EscapedPath(), "/"+tail) {
			c.log.Debug("fluxi2i: not using a job URL the server returned", "request_id", id, "url_host", hostOf(raw))
			return builtURL
		}
		return u.String()
	}
	return endpoints{
		status: pick(returned.StatusURL, built.status),
		result: pick(returned.ResponseURL, built.result),
		cancel: pick(returned.CancelURL, built.cancel),
	}
}

func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Host
	}
	return ""
}
