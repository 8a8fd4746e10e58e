// Package openapi carries the contract fluxi2i is generated from: the
// cleaned-up OpenAPI 3.0.3 document of fal's queue API for FLUX.1 [dev]
// image-to-image. Tests and the fake queue server load it to validate wire
// traffic; the client itself never imports it.
package openapi

import _ "embed"

// Spec is openapi.yaml, the single source of truth for paths, schemas,
// ranges, enums and defaults.
//
//go:embed openapi.yaml
var Spec []byte
