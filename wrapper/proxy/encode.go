package proxy

import (
	"bytes"
	"encoding/json"

	"github.com/fluxi2i/fluxi2i/gen"
)

// encodeInput is json.Marshal(in), byte for byte, without encoding/json's
// copies of a large image_url: a data URI of 31 MiB is written once into
// a buffer of the answer's exact size, where json.Marshal grows its
// buffer by doubling and then copies it out (about 3 times the URI, and a
// pooled buffer of twice its size kept until the next collections).
func encodeInput(in gen.Input) ([]byte, error) {
	url := in.ImageURL
	if !plainJSON(url) {
		return json.Marshal(in)
	}
	in.ImageURL = ""
	rest, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	// The only unescaped `"image_url":""` in rest is the field itself:
	// inside a JSON string every '"' is escaped.
	slot := []byte(`"image_url":""`)
	i := bytes.Index(rest, slot)
	if i < 0 {
		in.ImageURL = url
		return json.Marshal(in)
	}
	at := i + len(slot) - 1 // between the quotes
	out := make([]byte, 0, len(rest)+len(url))
	out = append(out, rest[:at]...)
	out = append(out, url...)
	return append(out, rest[at:]...), nil
}

// plainJSON reports a string json.Marshal writes as it is: printable
// ASCII, none of the characters it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}
