package wrapper

import (
	"net/http"

	"github.com/fluxi2i/fluxi2i/wrapper/internal/bridge"
)

func init() {
	bridge.Of = func(client any) bridge.Forwarder { return forwarder{client.(*Client)} }
}

// forwarder is a Client as the proxy (wrapper/proxy) sees it.
type forwarder struct{ c *Client }

func (f forwarder) Server() string { return f.c.server }

func (f forwarder) StorageServer() string { return f.c.storeOrigin.String() }

// Forward sends the proxy's request through the send path as one attempt,
// with the credential and the idle limit; the answer, whatever its status,
// is the proxy's to relay (it caps what it reads), and closing its body
// ends the attempt.
func (f forwarder) Forward(req *http.Request) (*http.Response, error) {
	a := &attempt{op: "proxy", via: &f.c.proxyRoute}
	resp, err := f.c.send(req.Context(), a, req)
	a.judge(err) // the proxy relays whatever came; closing the body ends the attempt
	return resp, err
}
