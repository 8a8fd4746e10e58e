// Package errprefix keeps an error message to one "fluxi2i: " prefix.
// Every error package wrapper returns starts with it, once; an error that
// wraps one (wrapper's JobError and SubmitError, batch's errors, the
// CLI's lines) puts the wrapped message after its own text without it,
// so that prefixes do not stack up ("fluxi2i: request r: fluxi2i: status
// of request r: ...").
package errprefix

import "fmt"

// Prefix starts the message of every error package wrapper returns.
const Prefix = "fluxi2i: "

// Strip is msg without its leading Prefix: what a wrapping error puts
// after its own text. Only the one at the start goes; a message with
// none is returned as it is.
func Strip(msg string) string {
	if len(msg) >= len(Prefix) && msg[:len(Prefix)] == Prefix {
		return msg[len(Prefix):]
	}
	return msg
}

// Errorf is fmt.Errorf whose error operands read without their leading
// Prefix (Strip); %w operands still unwrap to the errors given, for
// errors.Is and errors.As.
func Errorf(format string, args ...any) error {
	args = append([]any(nil), args...)
	for i, a := range args {
		if err, ok := a.(error); ok && err != nil {
			args[i] = stripped{err}
		}
	}
	return fmt.Errorf(format, args...)
}

// stripped is an error that reads without its prefix.
type stripped struct{ err error }

func (s stripped) Error() string { return Strip(s.err.Error()) }
func (s stripped) Unwrap() error { return s.err }
