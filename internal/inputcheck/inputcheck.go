// Package inputcheck is the one check of a model input that the client
// (wrapper.Validate) and the fake queue (wrapper/queuetest's 422s) share,
// so that both answer the same: the validation generated from the spec
// (gen.ValidateInput) and the form of image_url, which the spec leaves a
// plain string, as fal does.
package inputcheck

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/media"
)

// Normalize returns in as the client sends it: the upstream docs'
// "default" value of output_format and acceleration means leaving the
// field out. The client (Submit, Validate), the proxy and batch's input
// digests all apply it.
func Normalize(in gen.Input) gen.Input {
	if in.OutputFormat != nil && *in.OutputFormat == "default" {
		in.OutputFormat = nil
	}
	if in.Acceleration != nil && *in.Acceleration == "default" {
		in.Acceleration = nil
	}
	return in
}

// Input returns one violation per bad field of in: the form of a
// non-empty image_url (ImageURL) first, then gen.ValidateInput's, in name
// order. It takes in as it is: the upstream docs' "default" of
// output_format and acceleration is not a value of the spec's enums (the
// client leaves such a field out before it checks).
func Input(in *gen.Input) []gen.FieldViolation {
	var bad []gen.FieldViolation
	if in.ImageURL != "" {
		if msg := ImageURL(in.ImageURL); msg != "" {
			bad = append(bad, gen.FieldViolation{Field: "image_url", Message: msg})
		}
	}
	return append(bad, gen.ValidateInput(in)...)
}

// ImageURL returns what is wrong with a non-empty image_url, or "": it must
// be an http(s) URL with a host, or a base64 data URI of a jpeg, png, webp,
// gif or avif image (the scheme in any case, media type parameters
// allowed).
func ImageURL(s string) string {
	const allowed = "must be an http(s) URL or a base64 data URI of a " +
		"jpeg, png, webp, gif or avif image"
	if media.IsDataURI(s) {
		d, err := media.ParseDataURI(s)
		switch {
		case err != nil:
			return err.Error() + ": " + allowed
		case !media.IsImageType(d.MediaType):
			return fmt.Sprintf("data URI type %.30s is not allowed: %s", d.MediaType, allowed)
		case !d.Base64:
			return "data URI is not base64: " + allowed
		}
		if err := d.CheckPayload(); err != nil {
			return err.Error()
		}
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || (!strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https")) {
		return allowed
	}
	if u.Host == "" || strings.ContainsAny(s, " \t\r\n") {
		return "is not a valid URL: " + allowed
	}
	return ""
}
