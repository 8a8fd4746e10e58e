package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/fluxi2i/fluxi2i/wrapper"
)

// failing says since when the client's requests keep failing and what
// fails (a zero time while the last request succeeded): the progress
// printers poll it, so a server that went away is said, not hidden
// behind a growing ETA.
type failing func() (since time.Time, what string)

// clientFailing is c's own account (wrapper.Stats).
func clientFailing(c *wrapper.Client) failing {
	return func() (time.Time, string) {
		st := c.Stats()
		return st.FailingSince, st.Failing
	}
}

// failingAfter is how long requests must keep failing before the
// progress says so: a retry or two is business as usual. (A seam for the
// tests.)
var failingAfter = 5 * time.Second

// failingNote is "retrying: WHAT since HH:MM:SS (N s)" when requests have
// kept failing for failingAfter or more at now, or "".
func failingNote(f failing, now time.Time) string {
	if f == nil {
		return ""
	}
	since, what := f()
	if since.IsZero() || now.Sub(since) < failingAfter {
		return ""
	}
	if what == "" {
		what = "requests fail"
	}
	return fmt.Sprintf("retrying: %s since %s (%d s)", printable(what), since.Local().Format("15:04:05"), int(now.Sub(since).Seconds()))
}

// What one job may print of the log lines the server sends: a hostile or
// broken server can send endless logs, and the terminal is the user's.
const (
	maxLogLines    = 200      // lines a job
	maxLogBytes    = 64 << 10 // bytes a job, all lines together
	maxLogLineSize = 2 << 10  // bytes a line; longer ones are cut
)

// progress shows a job's progress on stderr: on a terminal one status line
// redrawn in place, with log lines printed above it; otherwise plain lines.
// It prints at most maxLogLines log lines and maxLogBytes of them a job,
// says once when it starts dropping lines and, at the end, how many it
// dropped. While requests keep failing it says so: on a terminal every
// second, on the status line; otherwise a line every progressEvery.
type progress struct {
	w       io.Writer
	tty     bool
	start   time.Time
	failing failing

	mu    sync.Mutex
	shown bool   // a status line is on screen (tty)
	state string // the last status, for the failing note
	done  chan struct{}
	wg    sync.WaitGroup

	logLines, logBytes int
	dropped            int64
	lastState          string // the state last printed on a plain line

	// For `fluxi2i status --logs`: the log lines' indent (default "  | ")
	// and where the notes about dropped lines go (default w).
	indent string
	notes  io.Writer
}

// logsOnly prints a job's log lines on w, indented by indent, within the
// caps of a job's progress, its notes about dropped lines on notes: call
// logLine for each, then finish.
func logsOnly(w, notes io.Writer, indent string) *progress {
	return &progress{w: w, notes: notes, indent: indent}
}

// note prints a note about the log lines on p.notes (p.w by default).
func (p *progress) note(s string) {
	if p.notes == nil {
		p.lineLocked(s)
		return
	}
	fmt.Fprintln(p.notes, s)
}

func newProgress(w io.Writer, f failing) *progress {
	p := &progress{w: w, tty: isTerminal(w), start: time.Now(), failing: f, done: make(chan struct{})}
	every := progressEvery
	if p.tty {
		every = time.Second
	}
	if f != nil {
		p.wg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					p.tick(time.Now())
				case <-p.done:
					return
				}
			}
		})
	}
	return p
}

// tick shows the failing note, if any.
func (p *progress) tick(now time.Time) {
	note := failingNote(p.failing, now)
	p.mu.Lock()
	defer p.mu.Unlock()
	if note == "" {
		return
	}
	if p.tty {
		p.clearLocked()
		text := note
		if p.state != "" {
			text = p.state + "; " + note
		}
		io.WriteString(p.w, text)
		p.shown = true
		return
	}
	fmt.Fprintln(p.w, note)
}

func (p *progress) clearLocked() {
	if p.tty && p.shown {
		io.WriteString(p.w, "\r\033[K")
		p.shown = false
	}
}

// line prints a line of its own.
func (p *progress) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lineLocked(s)
}

func (p *progress) lineLocked(s string) {
	p.clearLocked()
	fmt.Fprintln(p.w, s)
}

// logLine prints one log line of the job within its caps (p.mu held, or
// p not shared).
func (p *progress) logLine(msg string) {
	if p.dropped > 0 {
		p.dropped++
		return
	}
	if len(msg) > maxLogLineSize {
		msg = strings.ToValidUTF8(msg[:maxLogLineSize], "") + " [cut]"
	}
	indent := p.indent
	if indent == "" {
		indent = "  | "
	}
	text := indent + printable(strings.TrimRight(msg, "\n"))
	if p.logLines >= maxLogLines || p.logBytes+len(text) > maxLogBytes {
		p.dropped = 1
		p.note(fmt.Sprintf("fluxi2i: this job sent more log lines than are shown (%d lines, %d KiB): dropping the rest", maxLogLines, maxLogBytes>>10))
		return
	}
	p.logLines++
	p.logBytes += len(text)
	p.lineLocked(text)
}

func (p *progress) update(s wrapper.Status) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range s.NewLogs {
		p.logLine(l.Message)
	}
	state := printable(s.Status)
	if s.QueuePosition != nil && s.Status == wrapper.StatusInQueue {
		state += fmt.Sprintf(", queue position %d", *s.QueuePosition)
	}
	p.state = state
	text := fmt.Sprintf("%s (%s)", state, time.Since(p.start).Round(100*time.Millisecond))
	if p.tty {
		p.clearLocked()
		io.WriteString(p.w, text)
		p.shown = true
		return
	}
	if state != p.lastState { // plain lines: once a state, not once an event
		p.lastState = state
		fmt.Fprintln(p.w, text)
	}
}

// finish stops the ticker, clears the status line and says how many log
// lines were dropped.
func (p *progress) finish() {
	if p.done != nil {
		close(p.done)
		p.wg.Wait()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	if p.dropped > 0 {
		p.note(fmt.Sprintf("fluxi2i: %d log lines dropped", p.dropped))
	}
}
