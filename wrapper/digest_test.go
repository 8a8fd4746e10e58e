package wrapper

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
)

// Equal JSON gives equal digests whatever the spelling; seeds above 2^53
// are told apart.
func TestTheInputDigest(t *testing.T) {
	digest := func(s string) []byte {
		d, err := rawDigest([]byte(s))
		require.NoError(t, err)
		return d
	}
	mk := func(seed int64) []byte {
		b, _ := json.Marshal(gen.Input{ImageURL: "https://example.com/cat.png", Prompt: "p", Seed: &seed})
		return digest(string(b))
	}
	base := int64(1) << 62
	for _, pair := range [][2]int64{{1 << 53, 1<<53 + 1}, {base, base + 1}, {base, base + 511}} {
		assert.False(t, bytes.Equal(mk(pair[0]), mk(pair[1])), "seeds %d and %d", pair[0], pair[1])
	}
	assert.Equal(t, digest(`{"a":1,"b":[0.5,true,null]}`), digest(`{ "b" : [5e-1, true, null], "a": 1.0 }`))
	assert.NotEqual(t, digest(`{"a":1}`), digest(`{"a":"1"}`))
}
