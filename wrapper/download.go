package wrapper

import (
	"bufio"
	"bytes"
	"context"
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
)

// OpenImage opens one output image, whether its url is http(s) or a data
// URI (sync_mode), and returns its bytes with the type sniffed from them.
// A download goes through the client's HTTP client without the API key,
// honours ctx and the client's response size limit, and fails when the
// bytes are not an image or not of the type the output declares.
func (c *Client) OpenImage(ctx context.Context, img gen.Image) (io.ReadCloser, string, error) {
	var rc io.ReadCloser
	switch {
	case media.IsDataURI(img.URL):
		d, err := media.ParseDataURI(img.URL)
		if err != nil {
			return nil, "", fmt.Errorf("fluxi2i: image url: %w", err)
		}
		data, err := d.Decode()
		if err != nil {
			return nil, "", fmt.Errorf("fluxi2i: image url: %w", err)
		}
		rc = io.NopCloser(bytes.NewReader(data))
	case strings.HasPrefix(img.URL, "https://"), strings.HasPrefix(img.URL, "http://"):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, img.URL, nil)
		if err != nil {
			return nil, "", fmt.Errorf("fluxi2i: image url: %w", err)
		}
		req.Header.Set("User-Agent", c.userAgent) // and never Authorization
		resp, err := c.download.Do(req)
		if err != nil {
			return nil, "", fmt.Errorf("fluxi2i: downloading an image: %w", scrubURL(err))
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, "", fmt.Errorf("fluxi2i: downloading an image from %s: HTTP %d", req.URL.Host, resp.StatusCode)
		}
		if resp.ContentLength > c.maxBody {
			resp.Body.Close()
			return nil, "", &tooLargeError{c.maxBody}
		}
		rc = &limitedBody{r: io.LimitReader(resp.Body, c.maxBody+1), c: resp.Body, limit: c.maxBody}
	default:
		return nil, "", fmt.Errorf("fluxi2i: image url %.40q is neither http(s) nor a data URI", img.URL)
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
		return nil, "", fmt.Errorf("fluxi2i: the output declares %s but the bytes are %s", declared, sniffed)
	}
	return struct {
		io.Reader
		io.Closer
	}{br, rc}, sniffed, nil
}

func sameImageType(declared, sniffed string) bool {
	mt, _, err := mime.ParseMediaType(declared)
	if err != nil {
		return false
	}
	return mt == sniffed || (mt == "image/jpg" && sniffed == "image/jpeg")
}

// SaveImages writes every image of out into dir as prefix-N.ext, the
// extension following the image's type, and returns the paths. A file is
// written whole or not at all.
func (c *Client) SaveImages(ctx context.Context, out *gen.Output, dir, prefix string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for i, img := range out.Images {
		rc, typ, err := c.OpenImage(ctx, img)
		if err != nil {
			return paths, fmt.Errorf("image %d: %w", i, err)
		}
		path := filepath.Join(dir, prefix+"-"+strconv.Itoa(i)+"."+ExtensionFor(typ))
		err = writeAtomic(path, rc)
		rc.Close()
		if err != nil {
			return paths, fmt.Errorf("image %d: %w", i, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// ExtensionFor is the file extension of an image MIME type ("jpeg" for
// image/jpeg).
func ExtensionFor(mimeType string) string { return media.Extension(mimeType) }

func writeAtomic(path string, r io.Reader) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fluxi2i-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
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
