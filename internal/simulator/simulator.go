// Package simulator is the local stand-in for the model that the fluxi2i
// CLI runs when it has no key and no base URL, and serves with `fluxi2i
// simulate`. It is not FLUX: it decodes the input image and transforms it
// deterministically from the prompt, seed and strength, at the input's
// size, in the requested format, so that every part of a client (upload,
// queue, progress, download, decoding) can be exercised offline.
package simulator

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	_ "image/gif" // input decoders
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"time"

	_ "golang.org/x/image/webp" // webp input: the standard library has no decoder

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/media"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// MaxPixels bounds the input image the simulator accepts.
const MaxPixels = 40_000_000

// Options returns the queuetest options of the simulator: its model, and
// queue and run times short enough to watch.
func Options() []queuetest.Option {
	return []queuetest.Option{
		queuetest.WithModel(Model),
		queuetest.QueueTime(600 * time.Millisecond),
		queuetest.RunTime(1500 * time.Millisecond),
		queuetest.LogLines(5),
	}
}

// Model renders the job's images. An input it cannot read is a 422 naming
// image_url, as the real model answers.
func Model(ctx context.Context, _ string, in gen.Input) ([]queuetest.Image, error) {
	src, err := loadImage(ctx, in.ImageURL)
	if err != nil {
		return nil, &queuetest.ModelError{StatusCode: 422, Field: "image_url", Detail: err.Error()}
	}
	n := 1
	if in.NumImages != nil {
		n = *in.NumImages
	}
	strength := 0.95
	if in.Strength != nil {
		strength = *in.Strength
	}
	var seed int64
	if in.Seed != nil {
		seed = *in.Seed
	}
	png := in.OutputFormat != nil && *in.OutputFormat == gen.InputOutputFormatPng
	out := make([]queuetest.Image, 0, n)
	for i := range n {
		img := Transform(src, in.Prompt, seed+int64(i), strength)
		var buf bytes.Buffer
		typ := "image/jpeg"
		if png {
			typ = "image/png"
			err = encodePNG(&buf, img)
		} else {
			err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
		}
		if err != nil {
			return nil, err
		}
		b := img.Bounds()
		out = append(out, queuetest.Image{ContentType: typ, Data: buf.Bytes(), Width: b.Dx(), Height: b.Dy()})
	}
	return out, nil
}

func encodePNG(w io.Writer, img image.Image) error {
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	return enc.Encode(w, img)
}

// loadImage decodes a data URI, or fetches an http(s) URL.
func loadImage(ctx context.Context, u string) (image.Image, error) {
	var r io.Reader
	switch {
	case media.IsDataURI(u):
		d, err := media.ParseDataURI(u)
		if err != nil {
			return nil, fmt.Errorf("image_url: %v", err)
		}
		r = d.Reader()
	default:
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("could not download the image: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("could not download the image: HTTP %d", resp.StatusCode)
		}
		r = io.LimitReader(resp.Body, 64<<20)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("could not read the image: %v", err)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		if bytes.Contains(data[:min(len(data), 32)], []byte("ftypavi")) {
			return nil, fmt.Errorf("the local simulator cannot decode avif images (the real model can)")
		}
		return nil, fmt.Errorf("could not decode the image: %v", err)
	}
	if cfg.Width*cfg.Height > MaxPixels {
		return nil, fmt.Errorf("image of %dx%d is too large for the simulator", cfg.Width, cfg.Height)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("could not decode the %s image: %v", format, err)
	}
	return img, nil
}

// Transform is the simulator's "model": a colour grade and a ripple whose
// parameters come from a hash of prompt and seed, blended over src by
// strength. The same inputs give the same pixels.
func Transform(src image.Image, prompt string, seed int64, strength float64) *image.RGBA {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%d", prompt, seed)
	k := h.Sum64()
	tint := color.RGBA{uint8(k), uint8(k >> 8), uint8(k >> 16), 255}
	period := 8 + int(k>>24)%24
	shift := 2 + int(k>>32)%6
	b := src.Bounds()
	dst := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	s := max(0, min(strength, 1))
	for y := 0; y < b.Dy(); y++ {
		dx := 0
		if (y/period)%2 == 1 {
			dx = shift
		}
		for x := 0; x < b.Dx(); x++ {
			sx := min(b.Dx()-1, x+dx)
			r, g, bl, a := src.At(b.Min.X+sx, b.Min.Y+y).RGBA()
			mix := func(v uint32, t uint8) uint8 {
				orig := float64(v >> 8)
				graded := (orig + float64(t)) / 2
				return uint8(orig*(1-s) + graded*s)
			}
			dst.SetRGBA(x, y, color.RGBA{mix(r, tint.R), mix(g, tint.G), mix(bl, tint.B), uint8(a >> 8)})
		}
	}
	return dst
}
