package wrapper

import (
	"net/http"

	"github.com/fluxi2i/fluxi2i/wrapper/internal/bridge"
)

func init() {
	bridge.Of = func(client any) bridge.Forwarder { return forwarder{client.(*Client)} }
	bridge.Normalize = normalize
}

// forwarder is a Client as the proxy (wrapper/proxy) sees it.
type forwarder struct{ c *Client }

func (f forwarder) Server() string { return f.c.server }

func (f forwarder) StorageServer() string { return f.c.storeOrigin.String() }

func (f forwarder) Forward(req *http.Request) (*http.Response, error) {
	c := f.c
	x := &exchange{op: "proxy", stream: true}
	req = req.WithContext(x.begin(req.Context(), c.set.idle))
	if err := c.authorize(req.Context(), req); err != nil {
		x.end()
		return nil, err
	}
	resp, err := c.queue.Do(req)
	if err != nil {
		x.end()
		if x.idle.fired.Load() {
			err = errIdle
		}
		return nil, scrubURL(err)
	}
	resp.Body = &progressBody{ReadCloser: resp.Body, idle: x.idle, done: x.end}
	return resp, nil
}
