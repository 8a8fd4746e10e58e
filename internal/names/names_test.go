package names_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/names"
	"github.com/fluxi2i/fluxi2i/wrapper"
)

func TestCheckRefusesWhatIsNotAPlainName(t *testing.T) {
	for _, c := range []struct{ name, want string }{
		{"", "empty"},
		{string(make([]byte, names.MaxLen+1)), "longer than"},
		{"a\xffb", "UTF-8"},
		{"a/b", "separator"},
		{`a\b`, "separator"},
		{"..", "double dot"},
		{"a..b", "double dot"},
		{".", "not a plain file name"},
		{"a\nb", "control"},
		{"a\x1bb", "control"},
		{"a\x7fb", "control"},
		{"x\u0085y", "control"}, // C1: NEL
		{"x\u009by", "control"}, // C1: CSI
		{"x\u0080y", "control"},
		{"x\u2028y", "line separator"},
		{"x\u200ey", "bidirectional"},
		{"x\u200fy", "bidirectional"},
		{"x\u202ey", "bidirectional"}, // right-to-left override
		{"x\u202ay", "bidirectional"},
		{"x\u2066y", "bidirectional"},
		{"x\u2069y", "bidirectional"},
		{"x\u061cy", "bidirectional"},
		{"x\u200by", "zero-width"},
		{"x\u200dy", "zero-width"},
		{"x\u2060y", "zero-width"},
		{"\ufeffx", "byte-order mark"},
	} {
		err := names.Check(c.name)
		if assert.Error(t, err, "%q", c.name) {
			assert.Contains(t, err.Error(), c.want, "%q", c.name)
		}
	}
	for _, ok := range []string{"cat", "cat-01", "chat noir", "Ünïcödé", "猫", "a.b", ".hidden", "x\u00a0y", "émoji-🐱"} {
		assert.NoError(t, names.Check(ok), "%q", ok)
	}
}

func TestKeyFoldsCaseAndNormalisation(t *testing.T) {
	same := [][2]string{
		{"Cat", "cat"},
		{"CAT", "cat"},
		{"caf\u00e9", "cafe\u0301"},    // NFC and NFD
		{"CAF\u00c9", "cafe\u0301"},    // and case
		{"Stra\u00dfe", "STRASSE"},     // full case folding
		{"\u212bngstr", "\u00e5ngstr"}, // the Ångström sign is Å
	}
	for _, p := range same {
		assert.Equal(t, names.Key(p[0]), names.Key(p[1]), "%q %q", p[0], p[1])
	}
	assert.NotEqual(t, names.Key("cat"), names.Key("cats"))
	assert.NotEqual(t, names.Key("cafe"), names.Key("caf\u00e9"))
}

// SaveImages applies the same rule to its prefix: a name Check refuses is
// refused before anything is written; one it accepts is written.
func TestSaveImagesUsesTheRule(t *testing.T) {
	c, err := wrapper.New(wrapper.WithBearerToken("k"), wrapper.WithEnvironment(nil))
	require.NoError(t, err)
	png := "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
	out := &gen.Output{Images: []gen.Image{{URL: png}}}
	dir := filepath.Join(t.TempDir(), "out")
	for _, id := range []string{"x\u202ey", "x\u200by", "\ufeffx", "x\u2066y", "a\xffb", "x\u061cy"} {
		require.Error(t, names.Check(id))
		_, err := c.SaveImages(context.Background(), out, dir, id)
		assert.ErrorContains(t, err, "plain file name", "%q", id)
	}
	_, err = os.Stat(dir)
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing was written")
	paths, err := c.SaveImages(context.Background(), out, dir, "Ünïcödé")
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(dir, "Ünïcödé-0.png")}, paths)
}
