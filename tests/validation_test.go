package tests

import (
	"encoding/json"
	"errors"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
)

// verdicts runs one submit body through the spec's validator and through
// wrapper.Validate (after Normalize, as Submit does).
func verdicts(t *testing.T, body map[string]any) (specOK, wrapperOK bool, wrapperErr error) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	var in gen.Input
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatalf("%s does not decode into gen.Input: %v", b, err)
	}
	wrapperErr = wrapper.Validate(in)
	// What Submit sends: the upstream docs' "default" left out.
	sent := map[string]any{}
	for k, v := range body {
		if v != "default" {
			sent[k] = v
		}
	}
	normalized, err := json.Marshal(sent)
	require.NoError(t, err)
	return submitRequest(t, normalized) == nil, wrapperErr == nil, wrapperErr
}

func names(err error, field string) bool {
	var ie *wrapper.InputError
	if !errors.As(err, &ie) {
		return false
	}
	for _, f := range ie.Fields {
		if f.Field == field {
			return true
		}
	}
	return false
}

// TestValidationAgreesWithSpec walks the spec's Input schema, so a range or
// enum changed in the spec and not in the wrapper fails here.
func TestValidationAgreesWithSpec(t *testing.T) {
	in := inputSchema(t)
	base := func() map[string]any {
		return map[string]any{"image_url": "https://example.com/cat.png", "prompt": "a cat"}
	}
	check := func(field string, value any) {
		body := base()
		body[field] = value
		specOK, wrapOK, err := verdicts(t, body)
		assert.Equal(t, specOK, wrapOK, "%s=%v: spec accepts=%v, wrapper accepts=%v (%v)", field, value, specOK, wrapOK, err)
		if !wrapOK {
			assert.True(t, names(err, field), "%s=%v: the error names the field: %v", field, value, err)
		}
	}
	ranged, enums := 0, 0
	for name, ref := range in.Properties {
		s := ref.Value
		switch {
		case s.Min != nil || s.Max != nil:
			ranged++
			require.NotNil(t, s.Min, name)
			require.NotNil(t, s.Max, name)
			if s.Type.Is("integer") {
				for _, v := range []float64{*s.Min - 1, *s.Min, *s.Min + 1, *s.Max - 1, *s.Max, *s.Max + 1} {
					check(name, int(v))
				}
			} else {
				for _, v := range []float64{
					math.Nextafter(*s.Min, math.Inf(-1)), *s.Min, math.Nextafter(*s.Min, math.Inf(1)),
					math.Nextafter(*s.Max, math.Inf(-1)), *s.Max, math.Nextafter(*s.Max, math.Inf(1)),
				} {
					check(name, v)
				}
			}
		case len(s.Enum) > 0:
			enums++
			for _, v := range s.Enum {
				check(name, v)
			}
			check(name, "bogus")
			check(name, "JPEG")
			// The upstream docs' "default" means leaving the field out.
			body := base()
			body[name] = "default"
			specOK, wrapOK, _ := verdicts(t, body)
			assert.True(t, specOK && wrapOK, "%s=default is normalised away", name)
		}
	}
	assert.Equal(t, 4, ranged, "strength, num_inference_steps, guidance_scale, num_images")
	assert.Equal(t, 2, enums, "output_format, acceleration")

	for _, field := range in.Required {
		body := base()
		delete(body, field)
		specOK, wrapOK, err := verdicts(t, body)
		assert.False(t, specOK, field)
		assert.False(t, wrapOK, field)
		assert.True(t, names(err, field), "missing %s is named: %v", field, err)
	}
	check("prompt", "")

	// image_url is a plain string in the contract, as at fal; the client
	// checks its form on top, so it refuses a subset of what the spec
	// accepts and never a form fal accepts.
	for u, want := range map[string]bool{
		"https://example.com/a.png": true, "http://example.com/a": true, "HTTPS://example.com/A.PNG": true,
		"data:image/png;base64,iVBORw0KGgo=": true, "data:image/jpeg;base64,/9j/4AAQ": true, "data:image/jpg;base64,/9j/": true,
		"data:image/webp;base64,UklGRg==": true, "data:image/gif;base64,R0lGOD==": true, "data:image/avif;base64,AAAAHGZ0eXA=": true,
		"DATA:image/PNG;base64,iVBORw0KGgo=": true, "data:image/png;name=cat.png;base64,iVBORw0KGgo=": true,
		"ftp://example.com/a.png": false, "example.com/a.png": false, "https://": false, "https://exa mple.com/a.png": false,
		"data:image/bmp;base64,Qk0=": false, "data:text/plain;base64,aGk=": false, "data:image/png,rawbytes": false,
		"data:image/png;base64,not base64!": false, "": false,
	} {
		body := base()
		body["image_url"] = u
		specOK, wrapOK, err := verdicts(t, body)
		assert.Equal(t, want, wrapOK, "image_url=%q: %v", u, err)
		if wrapOK {
			assert.True(t, specOK, "image_url=%q: the client accepts only what the spec accepts", u)
		} else {
			assert.True(t, names(err, "image_url"), "image_url=%q: the error names the field: %v", u, err)
		}
	}
}

// TestValidateRefusesNonFiniteNumbers: NaN and infinities never reach the
// wire (encoding/json cannot encode them), and the error names the field.
func TestValidateRefusesNonFiniteNumbers(t *testing.T) {
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		in := gen.Input{ImageURL: "https://example.com/cat.png", Prompt: "a cat", Strength: &v, GuidanceScale: &v}
		err := wrapper.Validate(in)
		require.Error(t, err)
		assert.True(t, names(err, "strength"), "%v", err)
		assert.True(t, names(err, "guidance_scale"), "%v", err)
		assert.Contains(t, err.Error(), "finite")
	}
}
