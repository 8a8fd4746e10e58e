package main

import (
	"encoding/json"
	"net"
	"net/http"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/netguard"
)

// loopbackHosts guards a server bound to loopback against DNS rebinding:
// a request whose Host is not a loopback address or localhost (any port)
// is answered 403, in fal's error shape, without reaching h. A web page
// whose name was rebound to 127.0.0.1 still sends its own name as Host.
// On any other address it returns h unchanged.
func loopbackHosts(ln net.Listener, h http.Handler) http.Handler {
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
		return h
	}
	detail := "this server is bound to loopback and answers only Host localhost or a loopback address"
	body, _ := json.Marshal(gen.PlatformError{Detail: &detail})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !netguard.LoopbackHost(r.Host) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			w.Write(body)
			return
		}
		h.ServeHTTP(w, r)
	})
}
