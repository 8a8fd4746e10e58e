package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/fluxi2i/fluxi2i/internal/errprefix"
	"github.com/fluxi2i/fluxi2i/internal/media"
	"github.com/fluxi2i/fluxi2i/internal/names"
	"github.com/fluxi2i/fluxi2i/wrapper"
)

// BadJobError is a job Check refused.
type BadJobError struct {
	Index int    // in the jobs given
	ID    string // the job's ID, when it has one
	Err   error  // a *wrapper.InputError naming the fields, or what else is wrong
}

// Error names the job and what is wrong.
func (e *BadJobError) Error() string {
	return fmt.Sprintf("job %d (%q): %s", e.Index+1, e.ID, errprefix.Strip(e.Err.Error()))
}

// Unwrap returns the cause.
func (e *BadJobError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrRefused) true.
func (e *BadJobError) Is(target error) bool { return target == ErrRefused }

// Check checks every job before anything is sent: a plain, unique ID (by
// the rule of internal/names: ids that differ only in case or Unicode
// normalisation are duplicates), an
// input the spec allows, an image file that exists and is an image. It
// returns every problem, each a *BadJobError. An image file is opened
// only if it is a regular file (a FIFO or a device is refused, never
// waited on). When ctx ends, Check returns its error.
func Check(ctx context.Context, jobs []Job) error {
	var errs []error
	ids := make(map[string]int, len(jobs))
	bad := func(i int, id string, err error) { errs = append(errs, &BadJobError{Index: i, ID: id, Err: err}) }
	for i, j := range jobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := names.Check(j.ID); err != nil {
			bad(i, j.ID, fmt.Errorf("id: %w", err))
		} else if k, dup := ids[names.Key(j.ID)]; dup {
			if jobs[k].ID == j.ID {
				bad(i, j.ID, fmt.Errorf("id %q is already the id of job %d: ids name the files, they must be unique", j.ID, k+1))
			} else {
				bad(i, j.ID, fmt.Errorf("id %q is the id of job %d (%q) but for case or Unicode normalisation: ids name the files, and a case-insensitive or normalising file system takes both for one", j.ID, k+1, jobs[k].ID))
			}
		} else {
			ids[names.Key(j.ID)] = i
		}
		in := j.Input
		if j.ImageFile != "" {
			mime, err := sniffFile(j.ImageFile)
			if err != nil {
				bad(i, j.ID, &wrapper.InputError{Fields: []wrapper.FieldError{{Field: "image", Message: strings.TrimPrefix(strings.TrimPrefix(err.Error(), "fluxi2i: "), "batch: ")}}})
				continue
			}
			in.ImageURL = "data:" + mime + ";base64,"
		}
		if err := wrapper.Validate(in); err != nil {
			bad(i, j.ID, err)
		}
	}
	return errors.Join(errs...)
}

// sniffFile returns the image type of a regular file from its first
// bytes.
func sniffFile(path string) (string, error) {
	f, err := openRegular(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	mime, ok := media.Sniff(head[:n])
	if !ok {
		return "", fmt.Errorf("%w: %s", wrapper.ErrNotAnImage, path)
	}
	return mime, nil
}
