// Package bridge lets the packages below wrapper (the proxy) use what a
// *wrapper.Client holds without widening wrapper's exported surface.
package bridge

import "net/http"

// Forwarder is what the proxy needs of a client.
type Forwarder interface {
	// Server is the configured base URL, for gen's request builders.
	Server() string
	// StorageServer is where fal's storage is for that base URL
	// (https://rest.fal.ai for fal's queue, the base URL's origin
	// otherwise); the credential goes there too.
	StorageServer() string
	// Forward sends req, built by gen against Server(), with the
	// credential, through the client's origin-bound HTTP client and its
	// idle limit: no retries, no error funnel; the answer comes back as it
	// is. The body's Close ends the attempt.
	Forward(req *http.Request) (*http.Response, error)
}

// Of returns the Forwarder of a *wrapper.Client; wrapper sets it.
var Of func(client any) Forwarder
