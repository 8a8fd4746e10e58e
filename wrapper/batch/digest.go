package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/fluxi2i/fluxi2i/gen"
	"github.com/fluxi2i/fluxi2i/internal/inputcheck"
	"github.com/fluxi2i/fluxi2i/internal/regular"
)

// inputDigest is what the journal keeps of a job's effective input, to
// tell whether the job it resumes is still the job it journaled: 64 bytes
// a job in memory, however big the batch.
type inputDigest struct {
	// input is the SHA-256 of every field that reaches the wire: the
	// canonical JSON (sorted keys) of the normalised input without
	// image_url, a newline, then the image's SHA-256 in hex.
	input [sha256.Size]byte
	// image is the SHA-256 of the file's bytes for ImageFile, of the
	// image_url string otherwise.
	image [sha256.Size]byte
}

// hex is the input digest as the journal writes it.
func (d inputDigest) hex() string { return hex.EncodeToString(d.input[:]) }

// fields is a short digest (the first 12 hex digits of a SHA-256) per
// field of j's input, "image" for the image: enough to name what changed.
// It reads no file.
func (d inputDigest) fields(j Job) map[string]string {
	fields, _, err := canonical(j.Input)
	if err != nil {
		return nil
	}
	out := make(map[string]string, len(fields)+1)
	for k, v := range fields {
		out[k] = shortDigest(v)
	}
	out["image"] = hex.EncodeToString(d.image[:])[:12]
	return out
}

// ChangedError is a job whose input is not the one the journal recorded
// for it: resuming it would fetch, or skip as done, a result made from
// another input. Nothing is sent; Config.RedoChanged makes it again, as a
// new job.
type ChangedError struct {
	ID     string
	Fields []string // what changed: "prompt", "strength", "image", ...
}

// Error names the job and the fields.
func (e *ChangedError) Error() string {
	return fmt.Sprintf("batch: job %q: its input changed since the journal recorded it (%s): refused, as resuming it would skip or fetch a result made from the old input; redo changed jobs on purpose (they are paid again), or use another directory", e.ID, strings.Join(e.Fields, ", "))
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *ChangedError) Is(target error) bool { return target == ErrRefused }

// shortDigest is the first 12 hex digits of the SHA-256 of b.
func shortDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// canonical is in as Submit sends it, without image_url: each field's
// JSON, and all of them as canonical JSON (sorted keys).
func canonical(in gen.Input) (map[string]json.RawMessage, []byte, error) {
	in = inputcheck.Normalize(in) // "default" left out, as Submit does
	in.ImageURL = ""
	b, err := json.Marshal(in)
	if err != nil {
		return nil, nil, err
	}
	fields := map[string]json.RawMessage{}
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, nil, err
	}
	delete(fields, "image_url")
	canon, err := json.Marshal(fields) // sorted keys
	return fields, canon, err
}

// digestOf is j's inputDigest; it reads the image file whole, and gives up
// when ctx ends.
func digestOf(ctx context.Context, j Job) (inputDigest, error) {
	var d inputDigest
	if err := imageDigest(ctx, j, &d.image); err != nil {
		return d, err
	}
	_, canon, err := canonical(j.Input)
	if err != nil {
		return d, err
	}
	d.input = sha256.Sum256(append(append(canon, '\n'), hex.EncodeToString(d.image[:])...))
	return d, nil
}

// imageDigest puts the SHA-256 of the job's image in sum: of the file's
// bytes, or of the image_url string.
func imageDigest(ctx context.Context, j Job, sum *[sha256.Size]byte) error {
	h := sha256.New()
	defer func() { h.Sum(sum[:0]) }()
	if j.ImageFile == "" {
		io.WriteString(h, j.Input.ImageURL)
		return nil
	}
	f, err := openRegular(j.ImageFile)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("batch: image file: %w", err)
		}
	}
}

// changedFields names the fields whose digests differ between was and
// now, sorted; every field when was has none to compare.
func changedFields(was, now map[string]string) []string {
	var out []string
	for k, v := range now {
		if was[k] != v {
			out = append(out, k)
		}
	}
	for k := range was {
		if _, ok := now[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// openRegular opens path for reading only if it is a regular file
// (internal/regular: a FIFO or a device is refused at once, never waited
// on).
func openRegular(path string) (*os.File, error) {
	f, err := regular.Open(path)
	if err != nil {
		return nil, fmt.Errorf("batch: image file: %w", err)
	}
	return f, nil
}
