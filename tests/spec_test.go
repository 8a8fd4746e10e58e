// Package tests holds the spec-conformance tests: the contract in
// openapi/openapi.yaml against the upstream seeds, the generated code in gen/
// and the wire validation every client test runs under.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/specvalidate"
)

func spec(t *testing.T) *openapi3.T {
	t.Helper()
	v, err := specvalidate.Load()
	require.NoError(t, err)
	return v.Doc()
}

func inputSchema(t *testing.T) *openapi3.Schema {
	t.Helper()
	s := spec(t).Components.Schemas["Input"]
	require.NotNil(t, s)
	return s.Value
}

func TestSpecLoadsAndValidates(t *testing.T) {
	doc, err := specvalidate.LoadDoc()
	require.NoError(t, err)
	assert.Equal(t, "3.0.3", doc.OpenAPI)
	var servers []string
	for _, s := range doc.Servers {
		servers = append(servers, s.URL)
	}
	assert.Equal(t, []string{"https://api.chainhub.tech", "https://queue.fal.run"}, servers)
	assert.Contains(t, doc.Components.SecuritySchemes, "bearer")
	assert.Contains(t, doc.Components.SecuritySchemes, "falKey")

	ops := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops[op.OperationID] = method + " " + path
		}
	}
	assert.Equal(t, map[string]string{
		"submit":       "POST /fal-ai/flux-1/dev/image-to-image",
		"getStatus":    "GET /fal-ai/flux-1/requests/{request_id}/status",
		"streamStatus": "GET /fal-ai/flux-1/requests/{request_id}/status/stream",
		// fal's Platform API, on its own server.
		"listRequestsByEndpoint": "GET /v1/models/requests/by-endpoint",
		// fal's storage, on its own server, and the simulator's upload URLs.
		"initiateUpload":          "POST /storage/upload/initiate",
		"initiateMultipartUpload": "POST /storage/upload/initiate-multipart",
		"putUpload":               "PUT /storage/uploads/{token}",
		"putUploadPart":           "PUT /storage/uploads/{token}/{part}",
		"completeUpload":          "POST /storage/uploads/{token}/complete",
		"getResult":               "GET /fal-ai/flux-1/requests/{request_id}",
		"cancel":                  "PUT /fal-ai/flux-1/requests/{request_id}/cancel",
	}, ops)
}

func TestOperationsDocumentTheirResponses(t *testing.T) {
	doc := spec(t)
	codes := func(path, method string) []string {
		var out []string
		for code := range doc.Paths.Value(path).GetOperation(method).Responses.Map() {
			out = append(out, code)
		}
		sort.Strings(out)
		return out
	}
	assert.Subset(t, codes("/fal-ai/flux-1/dev/image-to-image", "POST"), []string{"200", "422", "429", "500", "502", "503", "504"})
	assert.Subset(t, codes("/fal-ai/flux-1/requests/{request_id}/status", "GET"), []string{"200", "202", "404"})
	assert.Subset(t, codes("/fal-ai/flux-1/requests/{request_id}/status/stream", "GET"), []string{"200", "404", "405", "501"})
	assert.Subset(t, codes("/fal-ai/flux-1/requests/{request_id}", "GET"), []string{"200", "400", "404", "422"})
	assert.Subset(t, codes("/fal-ai/flux-1/requests/{request_id}/cancel", "PUT"), []string{"202", "400", "404"})
	stream := doc.Paths.Value("/fal-ai/flux-1/requests/{request_id}/status/stream").Get.Responses.Status(200).Value
	assert.NotNil(t, stream.Content.Get("text/event-stream"))
}

// TestExamplesValidate checks every example in the spec against its schema:
// schema examples, media type examples, parameter examples.
func TestExamplesValidate(t *testing.T) {
	doc := spec(t)
	n := 0
	check := func(where string, s *openapi3.SchemaRef, ex any) {
		if ex == nil || s == nil {
			return
		}
		n++
		assert.NoError(t, s.Value.VisitJSON(ex), where)
	}
	for name, s := range doc.Components.Schemas {
		check("schema "+name, s, s.Value.Example)
		for pname, p := range s.Value.Properties {
			check("schema "+name+"."+pname, p, p.Value.Example)
		}
	}
	media := func(where string, c openapi3.Content) {
		for ct, mt := range c {
			check(where+" "+ct, mt.Schema, mt.Example)
			for exName, ex := range mt.Examples {
				check(where+" "+ct+" "+exName, mt.Schema, ex.Value.Value)
			}
		}
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			for _, p := range op.Parameters {
				check(where+" param "+p.Value.Name, p.Value.Schema, p.Value.Schema.Value.Example)
			}
			if op.RequestBody != nil {
				media(where+" request", op.RequestBody.Value.Content)
			}
			for code, r := range op.Responses.Map() {
				media(where+" "+code, r.Value.Content)
			}
		}
	}
	assert.GreaterOrEqual(t, n, 12, "examples checked")
}

// submitRequest validates body as a submit call with the validator every
// client test uses.
func submitRequest(t *testing.T, body []byte) error {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "https://api.chainhub.tech/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer token")
	_, err = specvalidate.MustLoad().Request(context.Background(), req, body)
	return err
}

func TestSeedExamplesValidateAgainstSubmit(t *testing.T) {
	for name, body := range map[string][]byte{
		"aggregator-openapi.md": openapiSeedExample(t),
		"aggregator-docs.md":    docsSeedExample(t),
	} {
		assert.NoError(t, submitRequest(t, body), name)
	}
	// The seed's submit answer validates as the spec's 200 body.
	enq := spec(t).Components.Schemas["Enqueued"].Value
	var v any
	require.NoError(t, json.Unmarshal(openapiSeedResponseExample(t), &v))
	assert.NoError(t, enq.VisitJSON(v))
}

// TestUpstreamCoverage: every property the seeds declare exists in the spec
// with the same type, range, default and values.
func TestUpstreamCoverage(t *testing.T) {
	in := inputSchema(t)
	seeds := map[string]map[string]upstreamProp{
		"aggregator-openapi.md": openapiSeedProps(t),
		"aggregator-docs.md":    docsSeedProps(t),
	}
	// The parsers must actually have read the seeds.
	require.Len(t, seeds["aggregator-openapi.md"], 9)
	require.Len(t, seeds["aggregator-docs.md"], 9)
	require.Contains(t, seeds["aggregator-docs.md"], "seed")
	require.Contains(t, seeds["aggregator-docs.md"], "sync_mode")

	for seed, props := range seeds {
		for name, up := range props {
			where := seed + ": " + name
			ref, ok := in.Properties[name]
			if !assert.True(t, ok, "%s is missing from the spec", where) {
				continue
			}
			s := ref.Value
			assert.Equal(t, up.Type, s.Type.Slice()[0], where+" type")
			if up.Nullable {
				assert.True(t, s.Nullable, where+" nullable")
			}
			assert.Equal(t, up.Required, contains(in.Required, name), where+" required")
			if up.Min != nil {
				require.NotNil(t, s.Min, where+" minimum")
				assert.Equal(t, *up.Min, *s.Min, where+" minimum")
			}
			if up.Max != nil {
				require.NotNil(t, s.Max, where+" maximum")
				assert.Equal(t, *up.Max, *s.Max, where+" maximum")
			}
			if up.Default != nil {
				if name == "acceleration" {
					// The one place the spec follows fal, not the seeds: fal's
					// schema defaults to "none"; the description says whose is which.
					assert.Equal(t, "regular", up.Default, where+" default")
					assert.Equal(t, "none", s.Default, where+" default is fal's")
					assert.Contains(t, s.Description, `"regular"`, where+" the seed's default is named")
					continue
				}
				assert.Equal(t, up.Default, s.Default, where+" default")
			}
			if up.Enum != nil {
				var enum []string
				for _, e := range s.Enum {
					enum = append(enum, e.(string))
				}
				assert.ElementsMatch(t, up.Enum, enum, where+" values")
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestBadSubmitBodies: every range edge just outside is rejected naming the
// field, every edge just inside passes.
func TestBadSubmitBodies(t *testing.T) {
	base := func() map[string]any {
		return map[string]any{"image_url": "https://example.com/cat.png", "prompt": "a cat"}
	}
	with := func(k string, v any) map[string]any { m := base(); m[k] = v; return m }
	without := func(k string) map[string]any { m := base(); delete(m, k); return m }

	bad := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"strength below", with("strength", 0.0099), "strength"},
		{"strength above", with("strength", 1.0001), "strength"},
		{"steps below", with("num_inference_steps", 9), "num_inference_steps"},
		{"steps above", with("num_inference_steps", 51), "num_inference_steps"},
		{"steps fractional", with("num_inference_steps", 20.5), "num_inference_steps"},
		{"guidance below", with("guidance_scale", 0.999), "guidance_scale"},
		{"guidance above", with("guidance_scale", 20.001), "guidance_scale"},
		{"images below", with("num_images", 0), "num_images"},
		{"images above", with("num_images", 5), "num_images"},
		{"format", with("output_format", "webp"), "output_format"},
		{"format default", with("output_format", "default"), "output_format"},
		{"acceleration", with("acceleration", "turbo"), "acceleration"},
		{"prompt missing", without("prompt"), "prompt"},
		{"prompt empty", with("prompt", ""), "prompt"},
		{"image missing", without("image_url"), "image_url"},
		{"image empty", with("image_url", ""), "image_url"},
		{"image type", with("image_url", 7), "image_url"},
		{"prompt type", with("prompt", 42), "prompt"},
		{"strength type", with("strength", "high"), "strength"},
		{"seed type", with("seed", "7"), "seed"},
		{"sync type", with("sync_mode", "yes"), "sync_mode"},
		{"safety type", with("enable_safety_checker", 1), "enable_safety_checker"},
	}
	for _, c := range bad {
		t.Run("reject "+c.name, func(t *testing.T) {
			b, _ := json.Marshal(c.body)
			err := submitRequest(t, b)
			require.Error(t, err)
			var fields []string
			for _, fe := range specvalidate.FieldErrors(err) {
				fields = append(fields, fe.Location)
			}
			assert.Contains(t, fields, "/"+c.field, "%v", err)
		})
	}

	good := []map[string]any{
		with("strength", 0.01), with("strength", 1),
		with("num_inference_steps", 10), with("num_inference_steps", 50),
		with("guidance_scale", 1), with("guidance_scale", 20),
		with("num_images", 1), with("num_images", 4),
		with("output_format", "jpeg"), with("output_format", "png"),
		with("acceleration", "none"), with("acceleration", "regular"), with("acceleration", "high"),
		with("seed", nil), with("seed", 0), with("sync_mode", true),
		with("image_url", "data:image/png;base64,iVBORw0KGgo="),
		with("image_url", "http://example.com/a.avif"),
		// A plain string at fal: forms the client's own check also takes.
		with("image_url", "HTTPS://example.com/a.png"),
		with("image_url", "data:image/png;name=a.png;base64,iVBORw0KGgo="),
	}
	for _, body := range good {
		b, _ := json.Marshal(body)
		assert.NoError(t, submitRequest(t, b), string(b))
	}
}

func TestSeedAbove2To53IsAcceptedAndExact(t *testing.T) {
	const big = "9223372036854775807" // 2^63-1, far above 2^53
	body := []byte(`{"image_url":"https://example.com/a.png","prompt":"p","seed":` + big + `}`)
	require.NoError(t, submitRequest(t, body))

	var in gen.Input
	require.NoError(t, json.Unmarshal(body, &in))
	require.NotNil(t, in.Seed)
	assert.Equal(t, int64(math.MaxInt64), *in.Seed)
	out, err := json.Marshal(in)
	require.NoError(t, err)
	assert.Contains(t, string(out), `"seed":`+big)

	var o gen.Output
	require.NoError(t, json.Unmarshal([]byte(`{"images":[],"timings":{},"seed":9007199254740993,"has_nsfw_concepts":[],"prompt":"p"}`), &o))
	assert.Equal(t, int64(9007199254740993), o.Seed)
}

// TestRoundTrip: the seeds' JSON decodes into the generated types and
// encodes back to equivalent JSON.
func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		raw  []byte
		into any
	}{
		{"openapi seed request", openapiSeedExample(t), &gen.Input{}},
		{"docs seed request", docsSeedExample(t), &gen.Input{}},
		{"openapi seed answer", openapiSeedResponseExample(t), &gen.Enqueued{}},
	}
	for _, name := range []string{"Output", "QueueStatus", "ValidationError", "PlatformError", "CancelStatus"} {
		b, err := json.Marshal(spec(t).Components.Schemas[name].Value.Example)
		require.NoError(t, err)
		var into any
		switch name {
		case "Output":
			into = &gen.Output{}
		case "QueueStatus":
			into = &gen.QueueStatus{}
		case "ValidationError":
			into = &gen.ValidationError{}
		case "PlatformError":
			into = &gen.PlatformError{}
		case "CancelStatus":
			into = &gen.CancelStatus{}
		}
		cases = append(cases, struct {
			name string
			raw  []byte
			into any
		}{"example " + name, b, into})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dec := json.NewDecoder(bytes.NewReader(c.raw))
			dec.DisallowUnknownFields()
			require.NoError(t, dec.Decode(c.into), "every field of the seed has a typed home")
			out, err := json.Marshal(c.into)
			require.NoError(t, err)
			assert.JSONEq(t, dropNulls(t, c.raw), string(out))
		})
	}
}

// dropNulls removes null members: an absent optional field and a null one
// mean the same thing to the API.
func dropNulls(t *testing.T, raw []byte) string {
	var v map[string]any
	require.NoError(t, json.Unmarshal(raw, &v))
	for k, x := range v {
		if x == nil {
			delete(v, k)
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestValidationDetailDecodesBothShapes(t *testing.T) {
	var list gen.ValidationError
	require.NoError(t, json.Unmarshal([]byte(`{"detail":[{"loc":["body","strength"],"msg":"too big","type":"value_error"}]}`), &list))
	items, err := list.Detail.AsValidationDetail0()
	require.NoError(t, err)
	require.Len(t, items, 1)
	assert.Equal(t, "too big", items[0].Msg)

	var str gen.ValidationError
	require.NoError(t, json.Unmarshal([]byte(`{"detail":"Image could not be downloaded"}`), &str))
	s, err := str.Detail.AsValidationDetail1()
	require.NoError(t, err)
	assert.Equal(t, "Image could not be downloaded", s)
}

func TestQueueStatusIsTolerant(t *testing.T) {
	doc := spec(t)
	qs := doc.Components.Schemas["QueueStatus"].Value
	for _, body := range []string{
		`{"status":"FAILED"}`,
		`{"status":"CANCELLED","something_new":{"a":1}}`,
		`{"status":"IN_PROGRESS","logs":null,"metrics":{}}`,
		`{"status":"COMPLETED","metrics":{"inference_time":null}}`,
	} {
		var v any
		require.NoError(t, json.Unmarshal([]byte(body), &v))
		assert.NoError(t, qs.VisitJSON(v), body)
		var st gen.QueueStatus
		assert.NoError(t, json.Unmarshal([]byte(body), &st), body)
	}
}

func TestGeneratedNumbersAreFloat64(t *testing.T) {
	var in gen.Input
	assert.Equal(t, "*float64", fmt.Sprintf("%T", in.Strength))
	assert.Equal(t, "*float64", fmt.Sprintf("%T", in.GuidanceScale))
	assert.Equal(t, "*int64", fmt.Sprintf("%T", in.Seed))
	assert.False(t, strings.Contains(fmt.Sprintf("%T", gen.Output{}.Timings), "float32"))
}
