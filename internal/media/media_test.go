package media

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseDataURI(t *testing.T) {
	for in, want := range map[string]struct {
		mediaType string
		base64    bool
		data      string
	}{
		"data:image/png;base64,aGk=":                {"image/png", true, "hi"},
		"DATA:Image/PNG;base64,aGk":                 {"image/png", true, "hi"},
		"data:image/png;name=a.png;base64,aGk=":     {"image/png", true, "hi"},
		"data:,hello%20there":                       {"text/plain", false, "hello there"},
		"data:text/plain;charset=utf-8;base64,aGk=": {"text/plain", true, "hi"},
		"data:image/jpeg;BASE64,/9j/":               {"image/jpeg", true, "\xff\xd8\xff"},
	} {
		d, err := ParseDataURI(in)
		require.NoError(t, err, in)
		assert.Equal(t, want.mediaType, d.MediaType, in)
		assert.Equal(t, want.base64, d.Base64, in)
		b, err := d.Decode()
		require.NoError(t, err, in)
		assert.Equal(t, want.data, string(b), in)
	}
	for _, in := range []string{"https://x", "data:image/png;base64", "dat:a,b", "data:image/png;base64,@@@"} {
		d, err := ParseDataURI(in)
		if err == nil {
			_, err = d.Decode()
		}
		assert.Error(t, err, in)
	}
}

func TestExtensionAndSniff(t *testing.T) {
	for mt, ext := range map[string]string{"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/png": "png", "image/webp": "webp",
		"image/gif": "gif", "image/avif": "avif", "image/png; charset=x": "png", "text/html": "bin", "../../x": "bin", "": "bin"} {
		assert.Equal(t, ext, Extension(mt), mt)
	}
	for head, mt := range map[string]string{"\xff\xd8\xff\xe0": "image/jpeg", "\x89PNG\r\n\x1a\n": "image/png", "GIF89a": "image/gif",
		"RIFF\x00\x00\x00\x00WEBPVP8 ": "image/webp", "\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1": "image/avif"} {
		got, ok := Sniff([]byte(head))
		assert.True(t, ok, mt)
		assert.Equal(t, mt, got)
	}
	for _, b := range [][]byte{nil, []byte("<html>"), []byte("hello"), []byte("%PDF-1.7"), []byte("\x00\x00\x00\x1cftypisom\x00\x00\x00\x00isomiso2"), []byte("RIFF\x24\x00\x00\x00WAVEfmt ")} {
		_, ok := Sniff(b)
		assert.False(t, ok, "%q", b)
	}
	// heic is ISO-BMFF too, but not avif.
	_, ok := Sniff([]byte("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"))
	assert.False(t, ok)
	assert.True(t, IsImageType("IMAGE/JPG"))
	assert.False(t, IsImageType("image/bmp"))
}
