// Package simulator is the local stand-in for the model that the fluxi2i
// CLI runs when it has no key and no base URL, and serves with `fluxi2i
// simulate`. It is not FLUX: it decodes the input image and transforms it
// deterministically from the prompt, seed and strength, at the input's
// size, in the requested format, so that every part of a client (upload,
// queue, progress, download, decoding) can be exercised offline.
//
// It is a fake, built on queuetest (which serves the queue, the request
// history and the storage), not part of the client: another module runs
// it for its own local development or tests with
//
//	srv := queuetest.NewServer(simulator.Options(simulator.Config{})...)
//	defer srv.Close()
//	c, err := wrapper.New(wrapper.WithBaseURL(srv.URL)) // a loopback base URL needs no key
package simulator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"image"
	"image/color"
	_ "image/gif" // input decoders
	"image/jpeg"
	"image/png"
	"io"
	"net"
	"net/http"
	"runtime"
	"time"

	_ "golang.org/x/image/webp" // webp input: the standard library has no decoder

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/media"
	"github.com/fluxi2i/fluxi2i/internal/netguard"
	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// MaxPixels bounds the input image the simulator decodes (4096 x 4096):
// with 16-bit colour that is 128 MiB decoded, and each output image adds a
// quarter of that while it is encoded.
const MaxPixels = 4096 * 4096

// Limits of a fetched image (Config.FetchImages).
const (
	MaxFetchBytes = 20 << 20
	FetchTimeout  = 20 * time.Second
)

// Retention and MaxJobs are how long the simulator keeps a finished job
// (10 minutes: fal keeps results about an hour; a simulator needs less) and
// how many it holds at once.
const (
	Retention = 10 * time.Minute
	MaxJobs   = 1000
)

// MaxBodyBytes caps a submit body: a 24 MiB image as a data URI.
const MaxBodyBytes = 32 << 20

// DefaultMaxBytes is the simulator's default memory budget (256 MiB):
// what it holds at once of submit bodies being read, inputs kept for the
// request history, decoded images and renders under way, output images
// and encoded sync_mode results. One client may hold a quarter of it,
// and a quarter of the MaxJobs. See queuetest.MaxBytes.
const DefaultMaxBytes = 256 << 20

// MemoryLimit is the Go runtime's soft memory limit that suits a budget
// (`fluxi2i simulate` sets it): the budget, a quarter of it again for the
// collector's garbage, and 32 MiB for the runtime, connections and
// buffers.
func MemoryLimit(budget int64) int64 { return budget + budget/4 + 32<<20 }

// Config is how the simulator treats its inputs.
type Config struct {
	// MaxBytes is the memory budget (default DefaultMaxBytes).
	MaxBytes int64

	// FetchImages lets the simulator download an http(s) image_url, from
	// public addresses only (netguard.PublicAddr, checked on every
	// connection after DNS resolution, redirects included), within FetchTimeout and MaxFetchBytes. Off (the default),
	// it opens no connection for an image_url: it renders a deterministic
	// picture derived from the URL instead.
	FetchImages bool
}

// Options returns the queuetest options of the simulator: its model,
// queue and run times short enough to watch, and the limits that make it
// safe to expose (body cap, retention, job cap, memory budget; a client's
// share of each is a quarter).
func Options(cfg Config) []queuetest.Option {
	budget := cfg.MaxBytes
	if budget <= 0 {
		budget = DefaultMaxBytes
	}
	return []queuetest.Option{
		queuetest.MaxBytes(budget),
		queuetest.MaxBytesPerClient(budget / 4),
		queuetest.MaxJobsPerClient(MaxJobs / 4),
		queuetest.WithModel(NewModel(cfg)),
		queuetest.QueueTime(600 * time.Millisecond),
		queuetest.RunTime(1500 * time.Millisecond),
		queuetest.LogLines(5),
		queuetest.MaxBodyBytes(MaxBodyBytes),
		queuetest.Retention(Retention),
		queuetest.MaxJobs(MaxJobs),
	}
}

// renders bounds the renders under way at once, across jobs.
var renders = make(chan struct{}, max(runtime.NumCPU(), 1))

// NewModel returns the simulator's model. An input it cannot read is a 422
// naming image_url, as the real model answers. A job's rendering stops
// when ctx ends (the job was cancelled or forgotten).
func NewModel(cfg Config) queuetest.Model {
	var fetch *http.Client
	if cfg.FetchImages {
		fetch = publicClient()
	}
	return func(ctx context.Context, _ string, in gen.Input) ([]queuetest.Rendering, error) {
		select {
		case renders <- struct{}{}:
			defer func() { <-renders }()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		n := 1
		if in.NumImages != nil {
			n = *in.NumImages
		}
		src, release, err := loadImage(ctx, fetch, in.ImageURL, n)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, &queuetest.ModelError{StatusCode: 422, Field: "image_url", Detail: err.Error()}
		}
		defer release() // the outputs are then the job's, counted by the server
		return render(ctx, src, in)
	}
}

// renderBytes is what rendering n images of w x h from a decoded image of
// the color model m holds at most: the decoded image, one transformed
// image and the n encoded outputs (bounded by the raw pixels).
func renderBytes(m color.Model, w, h, n int) int64 {
	px := int64(w) * int64(h)
	per := int64(8)
	switch m {
	case color.GrayModel, color.AlphaModel:
		per = 1
	case color.Gray16Model, color.Alpha16Model:
		per = 2
	case color.YCbCrModel, color.NYCbCrAModel:
		per = 4
	case color.RGBAModel, color.NRGBAModel, color.CMYKModel:
		per = 4
	default:
		if _, ok := m.(color.Palette); ok {
			per = 1
		}
	}
	return px*per + px*4 + int64(n)*(px*4+64<<10)
}

func render(ctx context.Context, src image.Image, in gen.Input) ([]queuetest.Rendering, error) {
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
	out := make([]queuetest.Rendering, 0, n)
	var buf bytes.Buffer
	for i := range n {
		img, err := Transform(ctx, src, in.Prompt, seed+int64(i), strength)
		if err != nil {
			return nil, err
		}
		buf.Reset()
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
		// Exactly its bytes: the buffer is reused for the next image.
		out = append(out, queuetest.Rendering{ContentType: typ, Data: bytes.Clone(buf.Bytes()), Width: b.Dx(), Height: b.Dy()})
	}
	return out, nil
}

func encodePNG(w io.Writer, img image.Image) error {
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	return enc.Encode(w, img)
}

// loadImage decodes a data URI; an http(s) URL is fetched with fetch, or,
// with fetch nil, rendered offline from the URL. What it decodes, and what
// rendering n images from it takes, is reserved in the server's memory
// budget first (queuetest.Reserve); release gives it back.
func loadImage(ctx context.Context, fetch *http.Client, u string, n int) (img image.Image, release func(), err error) {
	var open func() io.Reader
	release = func() {}
	fail := func(err error) (image.Image, func(), error) {
		release()
		return nil, nil, err
	}
	switch {
	case media.IsDataURI(u):
		d, err := media.ParseDataURI(u)
		if err != nil {
			return fail(fmt.Errorf("image_url: %v", err))
		}
		open = d.Reader // decoded as it is read, twice: no copy of the file
	case fetch == nil:
		const size = 512
		if release, err = queuetest.Reserve(ctx, renderBytes(color.RGBAModel, size, size, n)); err != nil {
			return nil, nil, err
		}
		return Picture(u), release, nil
	default:
		if release, err = queuetest.Reserve(ctx, MaxFetchBytes); err != nil {
			return nil, nil, err
		}
		data, err := fetchImage(ctx, fetch, u)
		if err != nil {
			return fail(err)
		}
		open = func() io.Reader { return bytes.NewReader(data) }
	}
	cfg, format, err := image.DecodeConfig(open())
	if err != nil {
		head := make([]byte, 32)
		k, _ := io.ReadFull(open(), head)
		if _, ok := media.Sniff(head[:k]); ok && bytes.Contains(head[:k], []byte("ftypavi")) {
			return fail(fmt.Errorf("the local simulator cannot decode avif images (the real model can)"))
		}
		return fail(fmt.Errorf("could not decode the image: %v", err))
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxPixels || cfg.Width > 1<<15 || cfg.Height > 1<<15 {
		return fail(fmt.Errorf("image of %dx%d is too large for the simulator (at most %d pixels)", cfg.Width, cfg.Height, MaxPixels))
	}
	work, err := queuetest.Reserve(ctx, renderBytes(cfg.ColorModel, cfg.Width, cfg.Height, n))
	if err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		return fail(fmt.Errorf("%v: use a smaller image or fewer images, or give the simulator more memory (--max-memory)", err))
	}
	fetched := release
	release = func() { work(); fetched() }
	img, _, err = image.Decode(open())
	if err != nil {
		return fail(fmt.Errorf("could not decode the %s image: %v", format, err))
	}
	return img, release, nil
}

// fetchImage downloads u (at most MaxFetchBytes) with fetch.
func fetchImage(ctx context.Context, fetch *http.Client, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, errors.New("image_url is not a URL the simulator can fetch")
	}
	resp, err := fetch.Do(req)
	if err != nil {
		// Say nothing of what answered where: no read-back.
		return nil, errors.New("could not download the image (the simulator fetches from public addresses only)")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("could not download the image: HTTP %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxFetchBytes))
	if err != nil {
		return nil, fmt.Errorf("could not read the image")
	}
	return data, nil
}

// Picture is the image the simulator renders for an http(s) image_url when
// it does not fetch: 512 x 512, a gradient and stripes whose colours and
// period come from a hash of the URL. The same URL gives the same picture.
func Picture(u string) image.Image {
	h := fnv.New64a()
	io.WriteString(h, u)
	k := h.Sum64()
	const size = 512
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	a := color.RGBA{uint8(k), uint8(k >> 8), uint8(k >> 16), 255}
	b := color.RGBA{uint8(k >> 24), uint8(k >> 32), uint8(k >> 40), 255}
	period := 16 + int(k>>48)%48
	for y := range size {
		for x := range size {
			t := float64(x+y) / (2 * size)
			c := color.RGBA{
				uint8(float64(a.R)*(1-t) + float64(b.R)*t),
				uint8(float64(a.G)*(1-t) + float64(b.G)*t),
				uint8(float64(a.B)*(1-t) + float64(b.B)*t), 255,
			}
			if (x/period+y/period)%2 == 0 {
				c.R, c.G, c.B = c.R/2+64, c.G/2+64, c.B/2+64
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

// publicClient fetches from public addresses only: every connection, the
// ones redirects make included, is checked after DNS resolution.
func publicClient() *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: netguard.Control}
	return &http.Client{
		Timeout: FetchTimeout,
		Transport: &http.Transport{
			DialContext:            dialer.DialContext,
			TLSHandshakeTimeout:    5 * time.Second,
			ResponseHeaderTimeout:  10 * time.Second,
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return errors.New("redirect off http(s)")
			}
			return nil
		},
	}
}

// Transform is the simulator's "model": a colour grade and a ripple whose
// parameters come from a hash of prompt and seed, blended over src by
// strength. The same inputs give the same pixels. It stops when ctx ends.
func Transform(ctx context.Context, src image.Image, prompt string, seed int64, strength float64) (*image.RGBA, error) {
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
		if y%64 == 0 && ctx.Err() != nil {
			return nil, ctx.Err() // the job was cancelled: stop
		}
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
	return dst, nil
}
