package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fluxi2i/fluxi2i/wrapper"
)

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
// dropped.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
	shown bool // a status line is on screen (tty)

	logLines, logBytes int
	dropped            int64
	lastState          string // the state last printed on a plain line
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, tty: isTerminal(w), start: time.Now()}
}

func (p *progress) clear() {
	if p.tty && p.shown {
		io.WriteString(p.w, "\r\033[K")
		p.shown = false
	}
}

// line prints a line of its own.
func (p *progress) line(s string) {
	p.clear()
	fmt.Fprintln(p.w, s)
}

// logLine prints one log line of the job within its caps.
func (p *progress) logLine(msg string) {
	if p.dropped > 0 {
		p.dropped++
		return
	}
	if len(msg) > maxLogLineSize {
		msg = strings.ToValidUTF8(msg[:maxLogLineSize], "") + " [cut]"
	}
	text := "  | " + printable(strings.TrimRight(msg, "\n"))
	if p.logLines >= maxLogLines || p.logBytes+len(text) > maxLogBytes {
		p.dropped = 1
		p.line(fmt.Sprintf("fluxi2i: this job sent more log lines than are shown (%d lines, %d KiB): dropping the rest", maxLogLines, maxLogBytes>>10))
		return
	}
	p.logLines++
	p.logBytes += len(text)
	p.line(text)
}

func (p *progress) update(s wrapper.Status) {
	for _, l := range s.NewLogs {
		p.logLine(l.Message)
	}
	state := printable(s.Status)
	if s.QueuePosition != nil && s.Status == wrapper.StatusInQueue {
		state += fmt.Sprintf(", queue position %d", *s.QueuePosition)
	}
	text := fmt.Sprintf("%s (%s)", state, time.Since(p.start).Round(100*time.Millisecond))
	if p.tty {
		p.clear()
		io.WriteString(p.w, text)
		p.shown = true
		return
	}
	if state != p.lastState { // plain lines: once a state, not once an event
		p.lastState = state
		fmt.Fprintln(p.w, text)
	}
}

// finish clears the status line and says how many log lines were dropped.
func (p *progress) finish() {
	p.clear()
	if p.dropped > 0 {
		fmt.Fprintf(p.w, "fluxi2i: %d log lines dropped\n", p.dropped)
	}
}
