package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fluxi2i/fluxi2i/wrapper"
)

// progress shows a job's progress on stderr: on a terminal one status line
// redrawn in place, with log lines printed above it; otherwise plain lines.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
	shown bool // a status line is on screen (tty)
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

func (p *progress) update(s wrapper.Status) {
	for _, l := range s.NewLogs {
		p.line("  | " + printable(strings.TrimRight(l.Message, "\n")))
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
	fmt.Fprintln(p.w, text)
}

func (p *progress) finish() { p.clear() }
