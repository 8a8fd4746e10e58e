package proxy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
)

// encodeInput writes exactly what json.Marshal writes.
func TestEncodeInputIsJSONMarshal(t *testing.T) {
	seed, steps := int64(9007199254740993), 20
	format := gen.InputOutputFormatPng
	for _, in := range []gen.Input{
		{ImageURL: "data:image/png;base64," + strings.Repeat("iVBORw0KGgo+/=", 1000), Prompt: "a cat"},
		{ImageURL: "https://example.com/a.png?x=1&y=<2>", Prompt: "p"},
		{ImageURL: `https://example.com/"quoted"\back`, Prompt: "p"},
		{ImageURL: "https://example.com/caf\u00e9\n", Prompt: "p"},
		{ImageURL: "", Prompt: `"image_url":""`},
		{ImageURL: "https://example.com/a.png", Prompt: `x","image_url":"","y`, Seed: &seed, NumInferenceSteps: &steps, OutputFormat: &format},
	} {
		want, err := json.Marshal(in)
		require.NoError(t, err)
		got, err := encodeInput(in)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(got))
	}
}
