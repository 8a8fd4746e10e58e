// Package endpoint names the model's endpoint as fal's Platform API and
// the GenAI conventions do: its submit path in the spec without the
// leading slash (fal-ai/flux-1/dev/image-to-image), as gen builds it.
package endpoint

import (
	"strings"
	"sync"

	"github.com/fluxi2i/fluxi2i/gen"
)

// ID is the endpoint id, built once.
var ID = sync.OnceValue(func() string {
	req, err := gen.NewSubmitRequestWithBody("http://h", nil, "application/json", nil)
	if err != nil {
		panic(err) // the spec's own path: cannot fail
	}
	return strings.TrimPrefix(req.URL.Path, "/")
})
