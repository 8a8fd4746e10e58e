package wrapper

import (
	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/inputcheck"
)

// Validate checks in before anything is sent, returning an *InputError
// naming every bad field and what is allowed. The upstream docs' "default"
// value of output_format and acceleration means leaving the field out, and
// is accepted as such (Submit leaves it out). The required fields, ranges
// and enums are those of openapi/openapi.yaml (gen.ValidateInput, generated
// from it; NaN and infinities are refused). image_url is a plain string in
// the contract, as at fal; Validate also checks its form: an http(s) URL
// with a host, or a base64 data URI of a jpeg, png, webp, gif or avif image
// (the scheme in any case, media type parameters allowed).
func Validate(in gen.Input) error { return validate(inputcheck.Normalize(in)) }

// validate is Validate of a normalized input.
func validate(in gen.Input) error {
	var bad []FieldError
	for _, v := range inputcheck.Input(&in) {
		bad = append(bad, FieldError{Field: v.Field, Message: v.Message})
	}
	if len(bad) > 0 {
		return &InputError{Fields: bad}
	}
	return nil
}

// validateParams checks the submit's query and header parameters against
// the spec (gen.ValidateSubmitParams, generated from it).
func validateParams(p *gen.SubmitParams) error {
	var bad []FieldError
	for _, v := range gen.ValidateSubmitParams(p) {
		bad = append(bad, FieldError{Field: v.Field, Message: v.Message})
	}
	if len(bad) > 0 {
		return &InputError{Fields: bad}
	}
	return nil
}
