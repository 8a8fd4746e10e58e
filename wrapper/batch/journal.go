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
)

// record is one journal line.
type record struct {
	ID            string    `json:"id"`
	State         string    `json:"state"`
	RequestID     string    `json:"request_id,omitempty"`
	Files         []string  `json:"files,omitempty"`
	BillableUnits float64   `json:"billable_units,omitempty"`
	Error         string    `json:"error,omitempty"`
	T             time.Time `json:"t"`
}

// readJournal returns each job's last record. A torn last line (a crash
// while it was written) is ignored; a broken line before it is an error.
func readJournal(path string) (map[string]record, error) {
	out := map[string]record{}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("batch: journal: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("batch: journal: %w", err)
		}
		var rec record
		if jerr := json.Unmarshal(bytes.TrimSpace(line), &rec); jerr != nil || rec.ID == "" || rec.State == "" {
			if errors.Is(err, io.EOF) || line[len(line)-1] != '\n' {
				return out, nil // the torn last line
			}
			if _, perr := br.Peek(1); errors.Is(perr, io.EOF) {
				return out, nil // the last line, torn but for its newline
			}
			return nil, fmt.Errorf("batch: journal %s line %d is broken: %.80q", path, n, line)
		}
		out[rec.ID] = rec
		if errors.Is(err, io.EOF) {
			return out, nil
		}
	}
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

func openJournal(path string) (*journal, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("batch: journal: %w", err)
	}
	// A torn last line left by a crash would glue itself to the next
	// record: start on a line of our own.
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		if last, err := lastByte(path); err == nil && last != '\n' {
			f.Write([]byte("\n"))
		}
	}
	return &journal{f: f}, nil
}

func lastByte(path string) (byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, 1)
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	_, err = f.ReadAt(b, fi.Size()-1)
	return b[0], err
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
