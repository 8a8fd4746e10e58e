package main

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/netguard"
)

// loopbackHosts guards a server bound to loopback against DNS rebinding:
// a request whose Host is not a loopback address or localhost (any port)
// is answered 403, in fal's error shape, without reaching h, and logged
// on log as "<who>: refused" with reason=host. A web page whose name was
// rebound to 127.0.0.1 still sends its own name as Host. fluxi2i proxy
// and fluxi2i simulate wrap their outermost handler with it (/healthz and
// /metrics included). On any other address it returns h unchanged.
func loopbackHosts(ln net.Listener, h http.Handler, log *slog.Logger, who string) http.Handler {
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		return h
	}
	const detail = "this server is bound to loopback and answers only Host localhost or a loopback address"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !netguard.LoopbackHost(r.Host) {
			refuseLogged(w, r, log, who, http.StatusForbidden, "host", detail, "host", r.Host)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// refuseLogged answers code with detail in fal's error shape and logs the
// refusal with its reason, as the proxy logs its own.
func refuseLogged(w http.ResponseWriter, r *http.Request, log *slog.Logger, who string, code int, reason, detail string, attrs ...any) {
	body, _ := json.Marshal(gen.PlatformError{Detail: &detail})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(body)
	log.Warn(who+": refused", append([]any{"method", r.Method, "path", r.URL.Path, "status", code, "reason", reason, "detail", detail}, attrs...)...)
}

// notFoundLogged answers every request with a logged 404 in fal's error
// shape: the paths a server does not serve.
func notFoundLogged(log *slog.Logger, who, detail string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuseLogged(w, r, log, who, http.StatusNotFound, "path", detail)
	})
}
