package proxy

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The status stream's lines end in LF, CRLF or CR, whatever the reads'
// boundaries; a line over the bound ends the stream.
func TestLineReader(t *testing.T) {
	const in = "data: a\r\n\r\ndata: b\rdata: c\n\n: keepalive\r\rlast"
	for name, src := range map[string]func() io.Reader{
		"whole":    func() io.Reader { return strings.NewReader(in) },
		"one byte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(in)) },
	} {
		l := newLineReader(src())
		var got []string
		for {
			line, err := l.next()
			if err != nil {
				assert.ErrorIs(t, err, io.EOF, name)
				break
			}
			got = append(got, string(line))
		}
		assert.Equal(t, []string{"data: a", "", "data: b", "data: c", "", ": keepalive", ""}, got, name)
	}
	l := newLineReader(strings.NewReader(strings.Repeat("x", maxEventLine+40<<10) + "\n"))
	_, err := l.next()
	require.ErrorIs(t, err, errLineTooLong)
}
