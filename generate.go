// Package fluxi2i is a Go client for FLUX.1 [dev] image-to-image served
// through fal's queue API.
//
// The client lives in package wrapper (github.com/fluxi2i/fluxi2i/wrapper);
// package gen holds the types, the request builders and the input
// validation generated from openapi/openapi.yaml. This root package only
// carries the generate step: oapi-codegen, then genvalidate, which reads
// oapi-codegen's output.
package fluxi2i

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen -config openapi/oapi-codegen.yaml openapi/openapi.yaml
//go:generate go run ./internal/cmd/genvalidate -spec openapi/openapi.yaml -types gen/fluxi2i.gen.go -out gen/validate.gen.go
