package tests

import (
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/stretchr/testify/require"
)

// upstreamProp is what an upstream seed document says about one input field.
type upstreamProp struct {
	Type     string   // "string", "number", "integer", "boolean"
	Nullable bool     // "integer | null"
	Required bool     // listed as required
	Min, Max *float64 // range
	Default  any      // parsed default, nil when none is given
	Enum     []string // values, with the seed's "default" left out
}

func readUpstream(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../openapi/upstream/" + name)
	require.NoError(t, err)
	return string(b)
}

// fenced returns the body of the first ``` fence with the given info string
// after marker.
func fenced(t *testing.T, doc, marker, info string) string {
	t.Helper()
	i := strings.Index(doc, marker)
	require.GreaterOrEqual(t, i, 0, "marker %q", marker)
	rest := doc[i:]
	open := "```" + info + "\n"
	j := strings.Index(rest, open)
	require.GreaterOrEqual(t, j, 0, "fence %q", open)
	rest = rest[j+len(open):]
	k := strings.Index(rest, "```")
	require.GreaterOrEqual(t, k, 0)
	return rest[:k]
}

// upstreamOpenAPI loads the OpenAPI fragment of aggregator-openapi.md.
func upstreamOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	y := fenced(t, readUpstream(t, "aggregator-openapi.md"), "## OpenAPI Specification", "yaml")
	doc, err := openapi3.NewLoader().LoadFromData([]byte(repairYAML(y)))
	require.NoError(t, err)
	return doc
}

var rePlainScalar = regexp.MustCompile(`^(\s*(?:description|summary): )([^'">|].*: .*)$`)

// repairYAML quotes the seed's plain descriptions that contain ": ". The
// upstream fragment is not valid YAML as published ("Default value: 0.95"
// inside an unquoted scalar); this is the only repair made to it.
func repairYAML(y string) string {
	lines := strings.Split(y, "\n")
	for i, l := range lines {
		if m := rePlainScalar.FindStringSubmatch(l); m != nil {
			lines[i] = m[1] + "'" + strings.ReplaceAll(m[2], "'", "''") + "'"
		}
	}
	return strings.Join(lines, "\n")
}

var (
	reRange     = regexp.MustCompile(`Range:\s*([0-9.]+)\s*-\s*([0-9.]+)`)
	reDefault   = regexp.MustCompile(`Default(?: value)?:\s*"?([A-Za-z0-9.]+)"?`)
	reSupported = regexp.MustCompile(`Supported (?:formats|options):\s*([a-z, ]+)`)
)

// openapiSeedProps reads the fields of the OpenAPI fragment; its ranges,
// defaults and values live in the descriptions.
func openapiSeedProps(t *testing.T) map[string]upstreamProp {
	t.Helper()
	doc := upstreamOpenAPI(t)
	op := doc.Paths.Value("/fal-ai/flux-1/dev/image-to-image").Post
	s := op.RequestBody.Value.Content.Get("application/json").Schema.Value
	out := map[string]upstreamProp{}
	for name, ref := range s.Properties {
		p := upstreamProp{Type: ref.Value.Type.Slice()[0]}
		d := ref.Value.Description
		if m := reRange.FindStringSubmatch(d); m != nil {
			p.Min, p.Max = num(t, m[1]), num(t, m[2])
		}
		if m := reDefault.FindStringSubmatch(d); m != nil {
			p.Default = typed(t, p.Type, m[1])
		}
		if m := reSupported.FindStringSubmatch(d); m != nil {
			for _, v := range strings.Split(m[1], ",") {
				if v = strings.TrimSpace(v); v != "" && v != "default" {
					p.Enum = append(p.Enum, v)
				}
			}
		}
		out[name] = p
	}
	for _, r := range s.Required {
		p := out[r]
		p.Required = true
		out[r] = p
	}
	return out
}

var types = map[string]bool{"string": true, "number": true, "integer": true, "boolean": true}

// docsSeedProps reads the "Body Parameters" listing of aggregator-docs.md:
// a name line, a type line (or "integer", "|", "null"), Required/Optional,
// then ">= x", "<= y" and "Default Value:" followed by the value.
func docsSeedProps(t *testing.T) map[string]upstreamProp {
	t.Helper()
	block := fenced(t, readUpstream(t, "aggregator-docs.md"), "### Body Parameters", "text")
	lines := strings.Split(block, "\n")
	out := map[string]upstreamProp{}
	var name string
	var p upstreamProp
	flush := func() {
		if name != "" {
			out[name] = p
		}
	}
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if l == "Example" { // the whole-body example closes the listing
			break
		}
		if i+1 < len(lines) && types[strings.TrimSpace(lines[i+1])] && regexp.MustCompile(`^[a-z_]+$`).MatchString(l) {
			flush()
			name, p = l, upstreamProp{Type: strings.TrimSpace(lines[i+1])}
			i++
			continue
		}
		switch {
		case l == "|" && i+1 < len(lines) && strings.TrimSpace(lines[i+1]) == "null":
			p.Nullable = true
			i++
		case l == "Required":
			p.Required = true
		case strings.HasPrefix(l, ">= "):
			p.Min = num(t, strings.TrimPrefix(l, ">= "))
		case strings.HasPrefix(l, "<= "):
			p.Max = num(t, strings.TrimPrefix(l, "<= "))
		case l == "Default Value:" && i+1 < len(lines):
			p.Default = typed(t, p.Type, strings.TrimSpace(lines[i+1]))
			i++
		}
	}
	flush()
	return out
}

// docsSeedExample is the request body of aggregator-docs.md's curl example.
func docsSeedExample(t *testing.T) []byte {
	t.Helper()
	doc := readUpstream(t, "aggregator-docs.md")
	i := strings.Index(doc, "--data-raw '")
	require.GreaterOrEqual(t, i, 0)
	rest := doc[i+len("--data-raw '"):]
	j := strings.Index(rest, "'")
	require.GreaterOrEqual(t, j, 0)
	b := []byte(rest[:j])
	require.True(t, json.Valid(b))
	return b
}

// openapiSeedExample is the request example of aggregator-openapi.md.
func openapiSeedExample(t *testing.T) []byte {
	t.Helper()
	op := upstreamOpenAPI(t).Paths.Value("/fal-ai/flux-1/dev/image-to-image").Post
	b, err := json.Marshal(op.RequestBody.Value.Content.Get("application/json").Example)
	require.NoError(t, err)
	return b
}

// openapiSeedResponseExample is the submit answer of aggregator-openapi.md.
func openapiSeedResponseExample(t *testing.T) []byte {
	t.Helper()
	op := upstreamOpenAPI(t).Paths.Value("/fal-ai/flux-1/dev/image-to-image").Post
	b, err := json.Marshal(op.Responses.Status(200).Value.Content.Get("application/json").Example)
	require.NoError(t, err)
	return b
}

func num(t *testing.T, s string) *float64 {
	t.Helper()
	f, err := strconv.ParseFloat(strings.TrimSuffix(s, "."), 64)
	require.NoError(t, err, s)
	return &f
}

func typed(t *testing.T, typ, s string) any {
	t.Helper()
	s = strings.TrimSuffix(s, ".")
	switch typ {
	case "number", "integer":
		return *num(t, s)
	case "boolean":
		b, err := strconv.ParseBool(s)
		require.NoError(t, err, s)
		return b
	}
	return s
}
