package batch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// The states a journal records.
const (
	stateIntent  = "intent"  // the submit is about to be sent
	stateQueued  = "queued"  // the request id is known
	stateDone    = "done"    // the images are on disk
	stateFailed  = "failed"  // a definite failure
	stateUnknown = "unknown" // the submit failed, and may have queued the job
	// The request id is known and the result may be at the server, but
	// fetching it or saving its images failed: fetched by id next time.
	stateFetchFailed = "fetch-failed"
	// Cancelled by this batch (a second Ctrl-C), the cancel accepted: looked
	// at by id next time, and made again if the cancel stopped it.
	stateCancelled = "cancelled"
)

// record is one journal line.
type record struct {
	ID            string   `json:"id"`
	State         string   `json:"state"`
	RequestID     string   `json:"request_id,omitempty"`
	Files         []string `json:"files,omitempty"`
	BillableUnits float64  `json:"billable_units,omitempty"`
	Error         string   `json:"error,omitempty"`
	// On intent records: the digest of the job's effective input, a short
	// digest per field (see inputDigest), and the time the submit was
	// sent (at the latest). Later records of the job carry them over.
	Input  string          `json:"input,omitempty"`
	Fields json.RawMessage `json:"fields,omitempty"` // decoded only to name a change
	Sent   time.Time       `json:"sent,omitzero"`
	T      time.Time       `json:"t"`
}

// openJournal opens the journal at path for appending, creating it, and
// returns each job's last record. It never follows a symbolic link: a
// journal that is one is refused (it would be written through, into
// whatever it names). A broken last line is a record torn by a crash
// while it was written: the file is truncated back to the end of the line
// before it, so the next record starts a line of its own and no broken
// line is ever left in the middle. (A last record that is whole but for
// its newline is kept, and gets its newline.) A broken line before the
// last is an error.
func openJournal(path string) (*journal, map[string]record, error) {
	f, err := openNoFollow(path, os.O_RDWR|os.O_CREATE|os.O_APPEND)
	if err != nil {
		if isSymlink(path) {
			return nil, nil, fmt.Errorf("%w: journal %s is a symbolic link; it is never followed: replace it with the file itself", ErrRefused, path)
		}
		return nil, nil, fmt.Errorf("batch: journal: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%w: journal %s is not a regular file", ErrRefused, path)
	}
	var past map[string]record
	if err == nil {
		past, err = readRecords(f, path)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return &journal{f: f}, past, nil
}

// readRecords reads f from its start, returning each job's last record,
// and truncates a torn last line.
func readRecords(f *os.File, path string) (map[string]record, error) {
	out := map[string]record{}
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, 1<<62), 64<<10)
	var good int64 // the end of the last whole record
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("batch: journal: %w", err)
		}
		if len(line) == 0 {
			break // the end
		}
		var rec record
		whole := line[len(line)-1] == '\n'
		if jerr := json.Unmarshal(bytes.TrimSpace(line), &rec); jerr != nil || rec.ID == "" || rec.State == "" {
			if _, perr := br.Peek(1); !whole || errors.Is(perr, io.EOF) {
				break // the last line, torn
			}
			if len(bytes.TrimSpace(line)) == 0 {
				good += int64(len(line)) // an empty line: harmless
				continue
			}
			return nil, fmt.Errorf("batch: journal %s line %d is broken: %.80q", path, n, line)
		}
		if prev, ok := out[rec.ID]; ok && rec.Input == "" && rec.State != stateIntent {
			rec.Input, rec.Fields, rec.Sent = prev.Input, prev.Fields, prev.Sent
		}
		out[rec.ID] = rec
		good += int64(len(line))
		if !whole {
			// A whole record that lost only its newline (it may hold a
			// request id): kept, and its line ended.
			if _, err := f.Write([]byte("\n")); err != nil {
				return nil, fmt.Errorf("batch: journal: %w", err)
			}
			good++
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("batch: journal: %w", err)
	}
	if fi.Size() > good {
		if err := f.Truncate(good); err != nil {
			return nil, fmt.Errorf("batch: journal: dropping the torn last line: %w", err)
		}
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("batch: journal: %w", err)
		}
	}
	return out, nil
}

func isSymlink(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}

// journal appends records and syncs them before write returns. Writers
// that arrive while a sync is under way are written and synced together
// (group commit), so a busy batch pays one sync for many records.
type journal struct {
	f *os.File

	mu      sync.Mutex
	buf     []byte       // records not yet written
	waiters []chan error // their writers
	leader  bool         // a writer is writing and syncing
	first   error        // the first failure
}

// write appends rec and returns once it is on disk.
func (j *journal) write(rec record) error {
	rec.T = time.Now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	j.mu.Lock()
	j.buf = append(append(j.buf, b...), '\n')
	j.waiters = append(j.waiters, done)
	if j.leader {
		j.mu.Unlock()
		return <-done
	}
	j.leader = true
	for len(j.waiters) > 0 {
		buf, waiters := j.buf, j.waiters
		j.buf, j.waiters = nil, nil
		j.mu.Unlock()
		_, err := j.f.Write(buf)
		if err == nil {
			err = j.f.Sync()
		}
		if err != nil {
			err = fmt.Errorf("batch: journal: %w", err)
		}
		for _, w := range waiters {
			w <- err
		}
		j.mu.Lock()
		if err != nil && j.first == nil {
			j.first = err
		}
	}
	j.leader = false
	j.mu.Unlock()
	return <-done
}

func (j *journal) err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.first
}

func (j *journal) close() error { return j.f.Close() }

// fieldDigests is rec's per-field digests (nil when it has none).
func (rec record) fieldDigests() map[string]string {
	var m map[string]string
	if len(rec.Fields) > 0 {
		json.Unmarshal(rec.Fields, &m)
	}
	return m
}
