package wrapper

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"github.com/fluxi2i/fluxi2i/internal/media"
	"github.com/fluxi2i/fluxi2i/internal/regular"
)

// InputImage is an input image, made by ImageFile, ImageBytes or
// ImageReader, that becomes image_url as a base64 data URI.
// Submit and Run stream it into the request body, encoding on the fly, so
// a large file is never held in memory (and is read again for a retry).
// Pass it with WithImage.
type InputImage struct {
	mime string // "image/png", ...
	size int64
	open func() (io.ReadCloser, error)
}

// ImageFile returns the image in the file at path. The file is read when
// the request is sent (and again for a retry), not now; its type is
// sniffed now, and anything but an image is an error. Only a regular file
// is read: a FIFO, a device or a socket is an error at once, never waited
// on (internal/regular), now and when the request is sent.
func ImageFile(path string) (*InputImage, error) {
	f, err := regular.Open(path)
	if err != nil {
		return nil, fmt.Errorf("fluxi2i: image file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("fluxi2i: image file: %w", err)
	}
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	mime, ok := media.Sniff(head[:n])
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotAnImage, path)
	}
	return &InputImage{mime: mime, size: fi.Size(), open: func() (io.ReadCloser, error) {
		f, err := regular.Open(path)
		if err != nil {
			return nil, err // the file's own: the request's error puts it behind its prefix
		}
		return f, nil
	}}, nil
}

// ImageBytes returns the image held in b (not copied: do not modify b
// until the call that uses it returns).
func ImageBytes(b []byte) (*InputImage, error) {
	mime, ok := media.Sniff(b)
	if !ok {
		return nil, ErrNotAnImage
	}
	return &InputImage{mime: mime, size: int64(len(b)), open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}}, nil
}

// ImageReader reads r to its end (at most limit bytes; 0 means 64 MiB) and
// returns the image it held.
func ImageReader(r io.Reader, limit int64) (*InputImage, error) {
	if limit <= 0 {
		limit = 64 << 20
	}
	b, err := readLimited(r, limit)
	if err != nil {
		return nil, fmt.Errorf("fluxi2i: image reader: %w", err)
	}
	return ImageBytes(b)
}

// ContentType is the sniffed MIME type.
func (im *InputImage) ContentType() string { return im.mime }

func (im *InputImage) prefix() string { return "data:" + im.mime + ";base64," }

// b64Reader base64-encodes src as it is read.
type b64Reader struct {
	src io.Reader
	in  [3 * 1024]byte
	out [4 * 1024]byte
	buf []byte // encoded bytes not yet handed out
	err error
}

func (r *b64Reader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		n, err := io.ReadFull(r.src, r.in[:])
		if n > 0 {
			base64.StdEncoding.Encode(r.out[:], r.in[:n])
			r.buf = r.out[:base64.StdEncoding.EncodedLen(n)]
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			r.err = io.EOF
		default:
			r.err = err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// streamedBody is a request body: prefix, the encoded image, suffix; it
// closes the image source.
type streamedBody struct {
	io.Reader
	src io.Closer
}

func (b *streamedBody) Close() error { return b.src.Close() }
