package sse

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func all(t *testing.T, s string) ([]Event, error) {
	t.Helper()
	r := NewReader(strings.NewReader(s), 64)
	var out []Event
	for {
		ev, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, ev)
	}
}

func TestParse(t *testing.T) {
	cases := map[string]struct {
		in   string
		data []string
	}{
		"one event":           {"data: {\"a\":1}\n\n", []string{`{"a":1}`}},
		"no space":            {"data:x\n\n", []string{"x"}},
		"two spaces keep one": {"data:  x\n\n", []string{" x"}},
		"multi-line data":     {"data: a\ndata: b\n\n", []string{"a\nb"}},
		"CRLF":                {"data: a\r\n\r\ndata: b\r\n\r\n", []string{"a", "b"}},
		"CR":                  {"data: a\r\rdata: b\r\r", []string{"a", "b"}},
		"comments":            {": keepalive\n\n:\ndata: a\n\n", []string{"a"}},
		"no data no event":    {"event: ping\n\n", nil},
		"empty data":          {"data\n\n", []string{""}},
		"unknown field":       {"foo: bar\ndata: a\n\n", []string{"a"}},
		"unterminated last":   {"data: a\n\ndata: b", []string{"a"}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			evs, err := all(t, c.in)
			if name == "unterminated last" {
				assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
			} else {
				require.NoError(t, err)
			}
			var got []string
			for _, e := range evs {
				got = append(got, string(e.Data))
				assert.Equal(t, "message", e.Type)
			}
			assert.Equal(t, c.data, got)
		})
	}
}

func TestFields(t *testing.T) {
	evs, err := all(t, "event: status\nid: 7\nretry: 1500\ndata: x\n\ndata: y\n\n")
	require.NoError(t, err)
	require.Len(t, evs, 2)
	assert.Equal(t, Event{Type: "status", Data: []byte("x"), ID: "7", Retry: 1500}, evs[0])
	assert.Equal(t, "7", evs[1].ID, "the last id carries over")
}

func TestLineLimit(t *testing.T) {
	_, err := all(t, "data: "+strings.Repeat("x", 100)+"\n\n")
	assert.ErrorIs(t, err, ErrLineTooLong)
}

func TestOnLineSeesKeepalives(t *testing.T) {
	r := NewReader(strings.NewReader(": ka\n: ka\ndata: a\n\n"), 0)
	n := 0
	r.OnLine = func() { n++ }
	_, err := r.Next()
	require.NoError(t, err)
	assert.Equal(t, 4, n)
}

func FuzzReader(f *testing.F) {
	for _, s := range []string{"data: a\n\n", "data: a\r\ndata: b\r\n\r\n", ": c\r\rdata\r\r", "event: x\nid: 1\nretry: 5\ndata: {}\n\n", "data: a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r := NewReader(strings.NewReader(s), 256)
		for i := 0; ; i++ {
			ev, err := r.Next()
			if err != nil {
				return
			}
			if i > len(s) {
				t.Fatalf("more events than bytes")
			}
			if ev.Type == "" {
				t.Fatalf("event without a type")
			}
			// A dispatched event's data never holds a line terminator
			// other than the '\n' joining data lines.
			if strings.ContainsRune(string(ev.Data), '\r') {
				t.Fatalf("CR in data %q", ev.Data)
			}
		}
	})
}

// refLine is the byte-at-a-time reading of one line that line replaced:
// the reference its result is checked against.
func refLine(r *bufio.Reader, pending *bool, max int) ([]byte, error) {
	var buf []byte
	for {
		b, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if *pending {
			*pending = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return buf, nil
		case '\r':
			*pending = true
			return buf, nil
		}
		if len(buf) >= max {
			return nil, ErrLineTooLong
		}
		buf = append(buf, b)
	}
}

// FuzzLinesMatchTheReference: lines read a buffered run at a time are the
// byte-at-a-time reader's, whatever the terminators and however the bytes
// arrive (whole, or one by one).
func FuzzLinesMatchTheReference(f *testing.F) {
	for _, s := range []string{"data: a\n\n", "a\r\nb\rc\n\r\n", "\r", "\r\n\n", strings.Repeat("x", 40) + "\ny", "no end"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, oneByte bool) {
		var src io.Reader = strings.NewReader(s)
		if oneByte {
			src = iotest.OneByteReader(src)
		}
		r := NewReader(src, 16)
		ref := bufio.NewReader(strings.NewReader(s))
		pending := false
		for {
			got, gerr := r.line()
			want, werr := refLine(ref, &pending, 16)
			if !errors.Is(gerr, werr) || string(got) != string(want) {
				t.Fatalf("%q: got %q, %v; want %q, %v", s, got, gerr, want, werr)
			}
			if gerr != nil {
				return
			}
		}
	})
}
