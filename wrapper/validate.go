package wrapper

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/fluxi2i/fluxi2i/gen"
)

// The input's ranges, as openapi/openapi.yaml gives them. tests/ checks
// that Validate and the spec agree on every boundary.
var ranges = []struct {
	field    string
	min, max float64
	get      func(*gen.Input) (float64, bool)
}{
	{"strength", 0.01, 1, func(in *gen.Input) (float64, bool) { return fptr(in.Strength) }},
	{"num_inference_steps", 10, 50, func(in *gen.Input) (float64, bool) { return iptr(in.NumInferenceSteps) }},
	{"guidance_scale", 1, 20, func(in *gen.Input) (float64, bool) { return fptr(in.GuidanceScale) }},
	{"num_images", 1, 4, func(in *gen.Input) (float64, bool) { return iptr(in.NumImages) }},
}

// imageTypes are the image types image_url may carry as a data URI.
var imageTypes = []string{"jpeg", "jpg", "png", "webp", "gif", "avif"}

func fptr(p *float64) (float64, bool) {
	if p == nil {
		return 0, false
	}
	return *p, true
}

func iptr(p *int) (float64, bool) {
	if p == nil {
		return 0, false
	}
	return float64(*p), true
}

// Normalize returns in with the upstream docs' "default" value of
// output_format and acceleration turned into leaving the field out, which
// is what it means.
func Normalize(in gen.Input) gen.Input {
	if in.OutputFormat != nil && *in.OutputFormat == "default" {
		in.OutputFormat = nil
	}
	if in.Acceleration != nil && *in.Acceleration == "default" {
		in.Acceleration = nil
	}
	return in
}

// Validate checks in against the spec's required fields, ranges and enums,
// and image_url's form, returning an *InputError naming every bad field and
// what is allowed. Submit and Run call it before anything is sent.
func Validate(in gen.Input) error {
	var bad []FieldError
	add := func(field, format string, args ...any) {
		bad = append(bad, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	if msg := checkImageURL(in.ImageUrl); msg != "" {
		add("image_url", "%s", msg)
	}
	if in.Prompt == "" {
		add("prompt", "is required and must not be empty")
	}
	for _, r := range ranges {
		v, ok := r.get(&in)
		if !ok {
			continue
		}
		if v < r.min || v > r.max {
			add(r.field, "%v is out of range: allowed %v to %v", v, r.min, r.max)
		}
	}
	if in.OutputFormat != nil && !in.OutputFormat.Valid() {
		add("output_format", "%q is not allowed: use jpeg or png (or leave it out)", *in.OutputFormat)
	}
	if in.Acceleration != nil && !in.Acceleration.Valid() {
		add("acceleration", "%q is not allowed: use none, regular or high (or leave it out)", *in.Acceleration)
	}
	if len(bad) > 0 {
		return &InputError{Fields: bad}
	}
	return nil
}

// checkImageURL returns what is wrong with an image_url, or "".
func checkImageURL(s string) string {
	const allowed = "must be an http(s) URL or a data:image/{jpeg,png,webp,gif,avif};base64 URI"
	switch {
	case s == "":
		return "is required: " + allowed
	case strings.HasPrefix(s, "data:"):
		rest, ok := strings.CutPrefix(s, "data:image/")
		if !ok {
			return "data URI is not an image: " + allowed
		}
		typ, payload, ok := strings.Cut(rest, ";base64,")
		if !ok {
			return "data URI is not base64: " + allowed
		}
		known := false
		for _, t := range imageTypes {
			known = known || typ == t
		}
		if !known {
			return fmt.Sprintf("data URI type image/%.20s is not allowed: %s", typ, allowed)
		}
		for i := 0; i < len(payload); i++ {
			if !isBase64(payload[i]) {
				return fmt.Sprintf("data URI payload has a non-base64 byte at %d", i)
			}
		}
		return ""
	case strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://"):
		u, err := url.Parse(s)
		if err != nil || u.Host == "" || strings.ContainsAny(s, " \t\r\n") {
			return "is not a valid URL: " + allowed
		}
		return ""
	}
	return allowed
}

func isBase64(b byte) bool {
	return b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '+' || b == '/' || b == '='
}
