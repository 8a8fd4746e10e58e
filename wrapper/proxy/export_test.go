package proxy

import "time"

// HeldPeak is the most bytes of submit bodies the handler held at once.
func HeldPeak(h *Handler) int64 { return h.held.peak.Load() }

// SetBodyWait sets how long a body waits for room in the budget (before
// the handler serves anything).
func SetBodyWait(h *Handler, d time.Duration) { h.cfg.bodyWait = d }
