package simulator

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"image"
	"image/png"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

func sampleURI(t *testing.T, w, h int) string {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = byte(i)
	}
	var b bytes.Buffer
	require.NoError(t, png.Encode(&b, img))
	return "data:image/png;base64," + base64.StdEncoding.EncodeToString(b.Bytes())
}

func TestModelIsDeterministicAndKeepsTheSize(t *testing.T) {
	in := gen.Input{ImageURL: sampleURI(t, 33, 21), Prompt: "p"}
	seed := int64(5)
	in.Seed = &seed
	a, err := NewModel(Config{})(context.Background(), "r", in)
	require.NoError(t, err)
	b, err := NewModel(Config{})(context.Background(), "r", in)
	require.NoError(t, err)
	require.Len(t, a, 1)
	assert.Equal(t, a[0].Data, b[0].Data)
	assert.Equal(t, 33, a[0].Width)
	assert.Equal(t, 21, a[0].Height)
	assert.Equal(t, "image/jpeg", a[0].ContentType)

	other := in
	other.Prompt = "q"
	c, err := NewModel(Config{})(context.Background(), "r", other)
	require.NoError(t, err)
	assert.NotEqual(t, a[0].Data, c[0].Data, "the prompt changes the image")
}

func TestStrengthBlends(t *testing.T) {
	src := image.NewRGBA(image.Rect(0, 0, 4, 4))
	for i := range src.Pix {
		src.Pix[i] = 200
	}
	low, err := Transform(context.Background(), src, "p", 1, 0.01)
	require.NoError(t, err)
	high, err := Transform(context.Background(), src, "p", 1, 1)
	require.NoError(t, err)
	diff := func(img *image.RGBA) int {
		c := img.RGBAAt(0, 0)
		d := func(a uint8) int { return max(int(a)-200, 200-int(a)) }
		return d(c.R) + d(c.G) + d(c.B)
	}
	assert.Less(t, diff(low), diff(high))
	assert.LessOrEqual(t, diff(low), 6)
}

func TestUnreadableInputIsA422NamingImageURL(t *testing.T) {
	for _, u := range []string{
		"data:image/png;base64," + base64.StdEncoding.EncodeToString([]byte("not a png")),
		"data:image/avif;base64," + base64.StdEncoding.EncodeToString([]byte("\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1")),
	} {
		_, err := NewModel(Config{})(context.Background(), "r", gen.Input{ImageURL: u, Prompt: "p"})
		var me *queuetest.ModelError
		require.True(t, errors.As(err, &me))
		assert.Equal(t, 422, me.StatusCode)
		assert.Equal(t, "image_url", me.Field)
	}
}
