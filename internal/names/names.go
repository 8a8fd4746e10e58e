// Package names is the one rule for a name that becomes part of a file
// name: a batch job's id, a file found in a folder of images, the prefix
// SaveImages writes under. Check refuses what could escape the directory,
// hide in a terminal or a listing, or fail only when the file is written;
// Key folds names that a case-insensitive or normalising file system would
// take for the same file.
package names

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// MaxLen is the longest name accepted, in bytes: with "-N.jpeg" and a
// temporary file's prefix it stays well under the usual 255-byte limit.
const MaxLen = 200

// Check returns an error saying what is wrong with name as (part of) a
// plain file name, or nil. Refused: the empty name, more than MaxLen
// bytes, invalid UTF-8, a path separator (/ or \), "..", C0 and C1
// control characters (and DEL), the line and paragraph separators
// U+2028 and U+2029, bidirectional marks, embeddings, overrides and
// isolates (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069),
// zero-width characters (U+200B-U+200D, U+2060) and the byte-order mark
// U+FEFF.
func Check(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("the name is empty: it must be a plain file name")
	case len(name) > MaxLen:
		return fmt.Errorf("%.20q... is longer than %d bytes", name, MaxLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%q is not valid UTF-8: it must be a plain file name", name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%q has a path separator: it must be a plain file name", name)
	case strings.Contains(name, ".."):
		return fmt.Errorf("%q has a double dot: it must be a plain file name", name)
	case name == ".":
		return fmt.Errorf("%q is not a plain file name", name)
	}
	for _, r := range name {
		if what := refused(r); what != "" {
			return fmt.Errorf("%q has %s (%U): it must be a plain file name", name, what, r)
		}
	}
	return nil
}

// refused names the kind of a rune Check refuses, or is "".
func refused(r rune) string {
	switch {
	case r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f):
		return "a control character"
	case r == 0x2028 || r == 0x2029:
		return "a line separator"
	case r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069):
		return "a bidirectional control"
	case (r >= 0x200b && r <= 0x200d) || r == 0x2060:
		return "a zero-width character"
	case r == 0xfeff:
		return "a byte-order mark"
	}
	return ""
}

// Key folds name for duplicate detection: two names with the same key
// differ only in case or in Unicode normalisation (NFC or NFD, as macOS
// stores names), and may be one file on a case-insensitive or normalising
// file system. It is Unicode's canonical caseless match:
// NFD(fold(NFD(name))).
func Key(name string) string {
	return norm.NFD.String(cases.Fold().String(norm.NFD.String(name)))
}
