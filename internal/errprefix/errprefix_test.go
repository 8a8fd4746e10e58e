package errprefix

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestStrip(t *testing.T) {
	assert.Equal(t, "request r: HTTP 500", Strip("fluxi2i: request r: HTTP 500"))
	assert.Equal(t, "request r: fluxi2i: x", Strip("request r: fluxi2i: x"), "only the leading prefix goes")
	assert.Equal(t, "fluxi2i: x", Strip("fluxi2i: fluxi2i: x"), "one, not all")
	assert.Equal(t, "fluxi2i:x", Strip("fluxi2i:x"))
	assert.Empty(t, Strip(""))
}

type kindError struct{ kind string }

func (e *kindError) Error() string { return "fluxi2i: " + e.kind }

func TestErrorfStripsItsOperandsAndKeepsTheirChains(t *testing.T) {
	sentinel := errors.New("fluxi2i: not found")
	inner := &kindError{"stream"}
	err := Errorf("batch: job %q: %w; %w; %v", "j", sentinel, inner, fs.ErrNotExist)
	assert.Equal(t, `batch: job "j": not found; stream; file does not exist`, err.Error())
	assert.ErrorIs(t, err, sentinel)
	var ke *kindError
	assert.ErrorAs(t, err, &ke)
	assert.Same(t, inner, ke)
	assert.NotErrorIs(t, err, fs.ErrNotExist, "%v does not wrap")

	args := []any{sentinel}
	Errorf("%w", args...)
	assert.Same(t, sentinel, args[0], "the caller's arguments are left alone")
	assert.Equal(t, "fluxi2i: x 3", Errorf("fluxi2i: x %d", 3).Error())
	assert.Nil(t, errors.Unwrap(Errorf("no operand")))
}
