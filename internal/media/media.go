// Package media holds the one data-URI parser, the one image sniffer and
// the one MIME-to-extension map that the client, the fake queue and the
// simulator share.
package media

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"strings"
)

// DataURI is a parsed RFC 2397 data URI.
type DataURI struct {
	// MediaType is the lower-cased type without parameters ("image/png"),
	// "text/plain" when the URI names none.
	MediaType string
	// Base64 tells that the payload is base64 (the ";base64" marker).
	Base64  bool
	payload string
}

// ErrNotDataURI is returned for a string that does not start with "data:".
var ErrNotDataURI = errors.New("not a data URI")

// IsDataURI reports whether s starts with the data scheme (any case).
func IsDataURI(s string) bool {
	return len(s) >= 5 && strings.EqualFold(s[:5], "data:")
}

// ParseDataURI parses s: "data:" (any case), an optional media type with
// parameters, an optional ";base64", a comma and the payload. Only the
// header is checked; Decode checks the payload.
func ParseDataURI(s string) (DataURI, error) {
	if !IsDataURI(s) {
		return DataURI{}, ErrNotDataURI
	}
	header, payload, ok := strings.Cut(s[5:], ",")
	if !ok {
		return DataURI{}, errors.New("data URI has no comma before its payload")
	}
	d := DataURI{MediaType: "text/plain", payload: payload}
	params := strings.Split(header, ";")
	if last := params[len(params)-1]; len(params) > 1 && strings.EqualFold(strings.TrimSpace(last), "base64") {
		d.Base64 = true
		params = params[:len(params)-1]
	}
	if t := strings.TrimSpace(params[0]); t != "" {
		mt, _, err := mime.ParseMediaType(strings.Join(params, ";"))
		if err != nil {
			return DataURI{}, fmt.Errorf("data URI media type %.40q: %v", t, err)
		}
		d.MediaType = mt
	}
	return d, nil
}

// EncodedLen is the length of the payload as it stands in the URI.
func (d DataURI) EncodedLen() int { return len(d.payload) }

// CheckPayload reports the first byte that cannot be part of a base64
// payload, without decoding it.
func (d DataURI) CheckPayload() error {
	if !d.Base64 {
		return nil
	}
	for i := 0; i < len(d.payload); i++ {
		if c := d.payload[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return fmt.Errorf("data URI payload has a non-base64 byte at %d", i)
		}
	}
	return nil
}

// Reader streams the decoded payload.
func (d DataURI) Reader() io.Reader {
	if d.Base64 {
		enc := base64.StdEncoding
		if !strings.HasSuffix(d.payload, "=") && len(d.payload)%4 != 0 {
			enc = base64.RawStdEncoding
		}
		return base64.NewDecoder(enc, strings.NewReader(d.payload))
	}
	return strings.NewReader(d.payload)
}

// Decode returns the decoded payload.
func (d DataURI) Decode() ([]byte, error) {
	if !d.Base64 {
		s, err := url.PathUnescape(d.payload)
		return []byte(s), err
	}
	b, err := io.ReadAll(d.Reader())
	if err != nil {
		return nil, fmt.Errorf("data URI payload: %w", err)
	}
	return b, nil
}

// EncodeDataURI is the base64 data URI of data.
func EncodeDataURI(mediaType string, data []byte) string {
	return "data:" + mediaType + ";base64," + base64.StdEncoding.EncodeToString(data)
}

// ImageTypes are the types image_url may carry (fal's list), by their
// subtype; jpg stands for jpeg.
var ImageTypes = []string{"jpeg", "jpg", "png", "webp", "gif", "avif"}

// IsImageType reports whether a media type is one of ImageTypes.
func IsImageType(mediaType string) bool {
	sub, ok := strings.CutPrefix(strings.ToLower(mediaType), "image/")
	if !ok {
		return false
	}
	for _, t := range ImageTypes {
		if sub == t {
			return true
		}
	}
	return false
}

// extensions maps the image types fal's outputs and inputs use to a file
// extension; anything else is "bin".
var extensions = map[string]string{
	"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/png": "png",
	"image/webp": "webp", "image/gif": "gif", "image/avif": "avif",
}

// Extension is the file extension for an image media type ("jpeg" for
// image/jpeg), "bin" for anything else.
func Extension(mediaType string) string {
	mt, _, err := mime.ParseMediaType(mediaType)
	if err != nil {
		return "bin"
	}
	if ext, ok := extensions[mt]; ok {
		return ext
	}
	return "bin"
}

// Sniff returns the media type of an image from its first bytes (512 are
// enough): image/jpeg, image/png, image/gif, image/webp or image/avif.
func Sniff(head []byte) (string, bool) {
	switch {
	case bytes.HasPrefix(head, []byte{0xff, 0xd8, 0xff}):
		return "image/jpeg", true
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		return "image/png", true
	case bytes.HasPrefix(head, []byte("GIF87a")), bytes.HasPrefix(head, []byte("GIF89a")):
		return "image/gif", true
	case len(head) >= 12 && string(head[:4]) == "RIFF" && string(head[8:12]) == "WEBP":
		return "image/webp", true
	case isAVIF(head):
		return "image/avif", true
	}
	return "", false
}

// isAVIF looks for an ISO-BMFF ftyp box naming the avif or avis brand,
// as major brand or compatible brand.
func isAVIF(b []byte) bool {
	if len(b) < 16 || string(b[4:8]) != "ftyp" {
		return false
	}
	size := int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3])
	if size < 16 || size > len(b) {
		size = min(len(b), 64)
	}
	for i := 8; i+4 <= size; i += 4 {
		if i == 12 {
			continue // minor version
		}
		if brand := string(b[i : i+4]); brand == "avif" || brand == "avis" {
			return true
		}
	}
	return false
}
