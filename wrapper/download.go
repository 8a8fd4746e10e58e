package wrapper

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/media"
	"github.com/fluxi2i/fluxi2i/internal/names"
)

// OpenImage opens one output image, whether its url is http(s) or a data
// URI (sync_mode), and returns its bytes with the type sniffed from them.
// A download goes through the client's send path without the API key: it
// honours ctx, the idle limit and the response size limit, and opening it
// is retried like any request (transport errors, 408, 429, 5xx,
// Retry-After). It fails when the bytes are not an image or not of the
// type the output declares.
func (c *Client) OpenImage(ctx context.Context, img gen.Image) (io.ReadCloser, string, error) {
	var rc io.ReadCloser
	_, err := c.do(ctx, &c.set, op{name: "download", stream: true, download: true}, func(ctx context.Context, x *exchange) error {
		var err error
		rc, err = c.openImage(ctx, img)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	br := bufio.NewReaderSize(rc, 512)
	head, _ := br.Peek(512)
	sniffed, ok := SniffImage(head)
	if !ok {
		rc.Close()
		return nil, "", ErrNotAnImage
	}
	if declared := deref(img.ContentType); declared != "" && !sameImageType(declared, sniffed) {
		rc.Close()
		return nil, "", fmt.Errorf("fluxi2i: the output declares %.40q but the bytes are %s", declared, sniffed)
	}
	return struct {
		io.Reader
		io.Closer
	}{br, rc}, sniffed, nil
}

// openImage is one attempt at opening an image; the context carries the
// exchange for the send path.
func (c *Client) openImage(ctx context.Context, img gen.Image) (io.ReadCloser, error) {
	switch {
	case media.IsDataURI(img.URL):
		d, err := media.ParseDataURI(img.URL)
		if err != nil {
			return nil, fmt.Errorf("fluxi2i: image url: %w", err)
		}
		if int64(d.EncodedLen())/4*3 > c.set.maxBody {
			return nil, &tooLargeError{c.set.maxBody}
		}
		data, err := d.Decode()
		if err != nil {
			return nil, fmt.Errorf("fluxi2i: image url: %w", err)
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	case hasHTTPScheme(img.URL):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, img.URL, nil)
		if err != nil {
			return nil, fmt.Errorf("fluxi2i: image url: %w", err)
		}
		req.Header.Set("User-Agent", c.set.userAgent) // and never Authorization
		resp, err := sender{c}.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, &APIError{Op: "download", StatusCode: resp.StatusCode, Detail: "from " + req.URL.Host}
		}
		if resp.ContentLength > c.set.maxBody {
			resp.Body.Close()
			return nil, &tooLargeError{c.set.maxBody}
		}
		return &limitedBody{r: io.LimitReader(resp.Body, c.set.maxBody+1), c: resp.Body, limit: c.set.maxBody}, nil
	}
	return nil, fmt.Errorf("fluxi2i: image url %.40q is neither http(s) nor a data URI", img.URL)
}

func hasHTTPScheme(s string) bool {
	i := strings.Index(s, "://")
	return i > 0 && (strings.EqualFold(s[:i], "http") || strings.EqualFold(s[:i], "https"))
}

func sameImageType(declared, sniffed string) bool {
	mt, _, err := mime.ParseMediaType(declared)
	if err != nil {
		return false
	}
	return mt == sniffed || (mt == "image/jpg" && sniffed == "image/jpeg")
}

// errTooManyImages is returned by SaveImages for an output with more
// images than the spec allows a job to make (num_images' maximum).
var errTooManyImages = fmt.Errorf("fluxi2i: more than %d images in one output", gen.InputNumImagesMaximum)

// SaveImages writes every image of out into dir as prefix-N.ext, the
// extension following the image's type, and returns the paths. Each image
// is downloaded with retries, restarting from its first byte, written to a
// temporary file, synced and renamed: a file is written whole or not at
// all. prefix must be a plain file name by the rule of internal/names (no
// separator, no "..", no control, bidirectional or zero-width character,
// at most 200 bytes): a request id from the server is checked, never
// trusted.
func (c *Client) SaveImages(ctx context.Context, out *gen.Output, dir, prefix string) ([]string, error) {
	if err := names.Check(prefix); err != nil {
		return nil, fmt.Errorf("fluxi2i: file name prefix: %w", err)
	}
	if len(out.Images) > gen.InputNumImagesMaximum {
		return nil, fmt.Errorf("%w: %d", errTooManyImages, len(out.Images))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for i, img := range out.Images {
		var path string
		_, err := c.do(ctx, &c.set, op{name: "download", id: prefix, stream: true, download: true}, func(ctx context.Context, x *exchange) error {
			rc, err := c.openImage(ctx, img)
			if err != nil {
				return err
			}
			defer rc.Close()
			br := bufio.NewReaderSize(rc, 512)
			head, _ := br.Peek(512)
			typ, ok := SniffImage(head)
			if !ok {
				if x.started {
					return &sendError{op: "download", id: prefix, sent: true, err: ErrNotAnImage} // a broken body: try again
				}
				return ErrNotAnImage
			}
			if declared := deref(img.ContentType); declared != "" && !sameImageType(declared, typ) {
				return fmt.Errorf("fluxi2i: the output declares %.40q but the bytes are %s", declared, typ)
			}
			path = filepath.Join(dir, prefix+"-"+strconv.Itoa(i)+"."+media.Extension(typ))
			return writeAtomic(path, br, prefix)
		})
		if err != nil {
			return paths, fmt.Errorf("image %d: %w", i, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// readError marks a failure to read the download, as opposed to one to
// write the file: the former is retried.
type readError struct{ r io.Reader }

func (r readError) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	var tooBig *tooLargeError
	if err != nil && err != io.EOF && !errors.As(err, &tooBig) {
		err = &sendError{op: "download", sent: true, err: err}
	}
	return n, err
}

// writeAtomic writes r to path through a synced temporary file in the same
// directory, renamed into place.
func writeAtomic(path string, r io.Reader, id string) error {
	dir := filepath.Dir(path)
	if rel, err := filepath.Rel(dir, path); err != nil || rel != filepath.Base(path) {
		return fmt.Errorf("fluxi2i: %s is not in %s", path, dir)
	}
	tmp, err := os.CreateTemp(dir, ".fluxi2i-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if _, err := io.Copy(tmp, readError{r}); err != nil {
		tmp.Close()
		var se *sendError
		if errors.As(err, &se) {
			se.id = id
		}
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename itself survives a crash once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// limitedBody fails a read past limit bytes.
type limitedBody struct {
	r     io.Reader
	c     io.Closer
	limit int64
	n     int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.limit {
		return 0, &tooLargeError{b.limit}
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.c.Close() }
