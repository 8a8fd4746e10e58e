// Package sse reads Server-Sent Events as the HTML specification defines
// them: lines end in CRLF, LF or CR; a line starting with ':' is a comment
// (keepalive); "field: value" lines set data (joined with '\n' when
// repeated), event, id and retry; a blank line dispatches the event, and an
// event with no data is not dispatched.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

// Event is one dispatched event.
type Event struct {
	Type  string // "message" unless an event field named it
	Data  []byte
	ID    string
	Retry int // milliseconds; 0 when not set
}

// ErrLineTooLong is returned for a line above the reader's limit.
var ErrLineTooLong = errors.New("sse: line too long")

// ErrEventTooLarge is returned for an event whose data, over all its
// lines, is above the reader's limit.
var ErrEventTooLarge = errors.New("sse: event too large")

// Parser turns lines (without their terminators) into events: the one
// event grammar, used by Reader and by anything that sees a stream's lines
// go by.
type Parser struct {
	max     int
	data    bytes.Buffer
	hasData bool
	ev      Event
	lastID  string
}

// NewParser returns a Parser refusing an event's data above max bytes
// (0: 1 MiB).
func NewParser(max int) *Parser {
	if max <= 0 {
		max = 1 << 20
	}
	return &Parser{max: max}
}

// Line takes one line; a blank line that completes an event returns it
// with ok set.
func (p *Parser) Line(line []byte) (ev Event, ok bool, err error) {
	if len(line) == 0 {
		if !p.hasData {
			p.ev = Event{}
			return Event{}, false, nil
		}
		ev = p.ev
		ev.ID = p.lastID
		if ev.Type == "" {
			ev.Type = "message"
		}
		ev.Data = bytes.Clone(p.data.Bytes())
		p.ev, p.hasData = Event{}, false
		p.data.Reset()
		return ev, true, nil
	}
	if line[0] == ':' {
		return Event{}, false, nil
	}
	field, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		if p.data.Len()+len(value)+1 > p.max {
			return Event{}, false, ErrEventTooLarge
		}
		if p.hasData {
			p.data.WriteByte('\n')
		}
		p.data.Write(value)
		p.hasData = true
	case "event":
		p.ev.Type = string(value)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.lastID = string(value)
		}
	case "retry":
		if n, err := strconv.Atoi(string(value)); err == nil && n >= 0 && isDigits(value) {
			p.ev.Retry = n
		}
	}
	return Event{}, false, nil
}

// Reader reads events from a stream.
type Reader struct {
	r       *bufio.Reader
	p       *Parser
	max     int
	pending bool   // the previous line ended in CR; skip one LF
	buf     []byte // the line being read
	// OnLine, when set, is called for every line read (comments and
	// keepalives included): a stream that sends them is alive.
	OnLine func()
}

// NewReader reads events from r, refusing a line, and an event's data over
// all its lines, longer than max bytes (0: 1 MiB).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = 1 << 20
	}
	return &Reader{r: bufio.NewReaderSize(r, 512), p: NewParser(max), max: max} // the body below is buffered already
}

// Next returns the next event, or io.EOF when the stream ends (an event not
// terminated by a blank line is dropped, as the specification says).
func (r *Reader) Next() (Event, error) {
	for {
		line, err := r.line()
		if err != nil {
			return Event{}, err
		}
		if r.OnLine != nil {
			r.OnLine()
		}
		ev, ok, err := r.p.Line(line)
		if err != nil || ok {
			return ev, err
		}
	}
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

// line reads one line without its terminator (CRLF, LF or CR), from the
// bytes already buffered a run at a time. The line is r's own buffer,
// good until the next call.
func (r *Reader) line() ([]byte, error) {
	r.buf = r.buf[:0]
	for {
		if r.r.Buffered() == 0 {
			if _, err := r.r.Peek(1); err != nil {
				if errors.Is(err, io.EOF) && len(r.buf) > 0 {
					// An unterminated last line ends the stream with it.
					return nil, io.ErrUnexpectedEOF
				}
				return nil, err
			}
		}
		chunk, _ := r.r.Peek(r.r.Buffered())
		if r.pending {
			r.pending = false
			if chunk[0] == '\n' {
				r.r.Discard(1)
				continue
			}
		}
		i := bytes.IndexByte(chunk, '\n')
		if j := bytes.IndexByte(chunk, '\r'); j >= 0 && (i < 0 || j < i) {
			i = j
		}
		if i < 0 {
			if len(r.buf)+len(chunk) > r.max {
				return nil, ErrLineTooLong
			}
			r.buf = append(r.buf, chunk...)
			r.r.Discard(len(chunk))
			continue
		}
		if len(r.buf)+i > r.max {
			return nil, ErrLineTooLong
		}
		r.buf = append(r.buf, chunk[:i]...)
		r.pending = chunk[i] == '\r'
		r.r.Discard(i + 1)
		return r.buf, nil
	}
}
