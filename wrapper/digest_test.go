package wrapper

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

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

// Request ids in the UUID form are kept as 16 bytes; others as strings;
// both are told apart exactly.
func TestTheKnownIDs(t *testing.T) {
	var k idSet
	now := time.Now()
	a, b := "acf05732-7cb3-445b-9f39-fdaeccb1d730", "acf05732-7cb3-445b-9f39-fdaeccb1d731"
	assert.True(t, k.add(a, now))
	assert.False(t, k.add(a, now), "known")
	assert.False(t, k.has(b))
	assert.True(t, k.add(b, now))
	assert.True(t, k.add("ACF05732-7CB3-445B-9F39-FDAECCB1D730", now), "another spelling is another id")
	assert.True(t, k.add("r1", now))
	assert.True(t, k.has("r1"))
	assert.Len(t, k.u, 2)
	assert.Len(t, k.s, 2)
	u, ok := uuidKey(a)
	require.True(t, ok)
	assert.Equal(t, byte(0xac), u[0])
	assert.Equal(t, byte(0x30), u[15])
	for _, bad := range []string{"", "acf05732-7cb3-445b-9f39-fdaeccb1d73", "acf05732x7cb3-445b-9f39-fdaeccb1d730", "gcf05732-7cb3-445b-9f39-fdaeccb1d730"} {
		_, ok := uuidKey(bad)
		assert.False(t, ok, bad)
	}
}
