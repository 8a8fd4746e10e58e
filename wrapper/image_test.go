package wrapper_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/wrapper"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

var heads = map[string][]byte{
	"image/jpeg": {0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F'},
	"image/png":  []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"),
	"image/gif":  []byte("GIF89a\x01\x00\x01\x00"),
	"image/webp": []byte("RIFF\x24\x00\x00\x00WEBPVP8 "),
	"image/avif": []byte("\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"),
}

func TestImageInputsRejectNonImages(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(p, []byte("not an image at all"), 0o644))
	_, err := wrapper.ImageFile(p)
	assert.ErrorIs(t, err, wrapper.ErrNotAnImage)
	assert.Contains(t, err.Error(), "notes.txt")
	_, err = wrapper.ImageBytes([]byte("GIF8"))
	assert.ErrorIs(t, err, wrapper.ErrNotAnImage)
	_, err = wrapper.ImageReader(strings.NewReader("<svg/>"), 0)
	assert.ErrorIs(t, err, wrapper.ErrNotAnImage)
	_, err = wrapper.ImageFile(filepath.Join(dir, "missing.png"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = wrapper.ImageFile(dir)
	assert.Error(t, err)
}

func pngBytes(t testing.TB, size int) []byte {
	b := make([]byte, size)
	copy(b, heads["image/png"])
	for i := len(heads["image/png"]); i < size; i++ {
		b[i] = byte(i * 31)
	}
	return b
}

func TestStreamedImageReachesTheServerIntact(t *testing.T) {
	for _, size := range []int{16, 3 * 1024, 3*1024 + 1, 100_001} {
		synctest.Test(t, func(t *testing.T) {
			srv, c := setup(t, instant)
			data := pngBytes(t, size)
			path := filepath.Join(t.TempDir(), "in.png")
			require.NoError(t, os.WriteFile(path, data, 0o644))
			im, err := wrapper.ImageFile(path)
			require.NoError(t, err)
			assert.Equal(t, "image/png", im.ContentType())

			srv.Inject(queuetest.OpSubmit, queuetest.Fail(503)) // the retry must replay the body
			in := input()
			in.ImageURL = "ignored: WithImage replaces it"
			q, err := c.Submit(context.Background(), in, wrapper.WithImage(im))
			require.NoError(t, err)
			assert.Equal(t, 2, q.Attempts)
			got, _, ok := srv.Job(q.RequestID)
			require.True(t, ok)
			want := "data:image/png;base64," + base64.StdEncoding.EncodeToString(data)
			assert.Equal(t, want, got.ImageURL)
			assert.Equal(t, in.Prompt, got.Prompt)
		})
	}
}

func TestImageFromBytesAndReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant)
		data := pngBytes(t, 5000)
		for _, mk := range []func() (*wrapper.InputImage, error){
			func() (*wrapper.InputImage, error) { return wrapper.ImageBytes(data) },
			func() (*wrapper.InputImage, error) { return wrapper.ImageReader(bytes.NewReader(data), 0) },
		} {
			im, err := mk()
			require.NoError(t, err)
			out, err := c.Run(context.Background(), input(), wrapper.WithImage(im))
			require.NoError(t, err)
			assert.NotEmpty(t, out.Images)
		}
		assert.EqualValues(t, 2, srv.Stats().Jobs)
		_, err := wrapper.ImageReader(bytes.NewReader(data), 100)
		assert.Error(t, err, "over the reader limit")
	})
}

func decodeImage(t *testing.T, path string) (string, image.Point) {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	img, format, err := image.Decode(f)
	require.NoError(t, err, path)
	return format, img.Bounds().Size()
}

func TestSaveImagesFromURLsAndDataURIs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, c := setup(t, instant)
		for _, sync := range []bool{false, true} {
			in := input()
			in.NumImages = ptr(2)
			in.OutputFormat = ptr(gen.InputOutputFormatPng)
			in.SyncMode = ptr(sync)
			out, err := c.Run(context.Background(), in)
			require.NoError(t, err)
			dir := t.TempDir()
			paths, err := c.SaveImages(context.Background(), &out.Output, dir, "cat")
			require.NoError(t, err)
			require.Equal(t, []string{filepath.Join(dir, "cat-0.png"), filepath.Join(dir, "cat-1.png")}, paths)
			for _, p := range paths {
				format, size := decodeImage(t, p)
				assert.Equal(t, "png", format)
				assert.Equal(t, image.Pt(8, 8), size)
			}
		}
		st := srv.Stats()
		assert.EqualValues(t, 2, st.FileDownloads, "the URL images were downloaded")
		assert.EqualValues(t, 2, st.ForeignRequests, "from the media origin")
		assert.Zero(t, st.ForeignAuthorized, "without the API key")
	})
}

func TestOpenImageChecks(t *testing.T) {
	jpeg := heads["image/jpeg"]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Empty(t, r.Header.Get("Authorization"))
		switch r.URL.Path {
		case "/big":
			w.Write(bytes.Repeat(jpeg, 1000))
		case "/html":
			io.WriteString(w, "<html>")
		case "/gone":
			w.WriteHeader(404)
		default:
			w.Write(jpeg)
		}
	}))
	defer srv.Close()
	clearEnv(t)
	// The images come from the base URL's own (loopback) host, as a local
	// simulator's do.
	c, err := wrapper.New(wrapper.WithBearerToken(testToken), wrapper.WithBaseURL(srv.URL), wrapper.WithMaxResponseBytes(1000))
	require.NoError(t, err)
	ctx := context.Background()

	rc, typ, err := c.OpenImage(ctx, gen.Image{URL: srv.URL + "/ok", ContentType: ptr("image/jpeg")})
	require.NoError(t, err)
	b, _ := io.ReadAll(rc)
	rc.Close()
	assert.Equal(t, jpeg, b)
	assert.Equal(t, "image/jpeg", typ)

	_, _, err = c.OpenImage(ctx, gen.Image{URL: srv.URL + "/ok", ContentType: ptr("image/png")})
	assert.ErrorContains(t, err, "declares \"image/png\" but the bytes are image/jpeg")
	_, _, err = c.OpenImage(ctx, gen.Image{URL: srv.URL + "/html"})
	assert.ErrorIs(t, err, wrapper.ErrNotAnImage)
	_, _, err = c.OpenImage(ctx, gen.Image{URL: srv.URL + "/gone"})
	assert.ErrorContains(t, err, "HTTP 404")
	rc, _, err = c.OpenImage(ctx, gen.Image{URL: srv.URL + "/big"})
	require.NoError(t, err, "the limit bites while reading")
	_, err = io.ReadAll(rc)
	rc.Close()
	assert.ErrorContains(t, err, "limit")
	_, _, err = c.OpenImage(ctx, gen.Image{URL: "ftp://x/y.png"})
	assert.Error(t, err)
	_, _, err = c.OpenImage(ctx, gen.Image{URL: "data:image/png;base64,@@@"})
	assert.Error(t, err)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, _, err = c.OpenImage(cctx, gen.Image{URL: srv.URL + "/ok"})
	assert.ErrorIs(t, err, context.Canceled)
}
