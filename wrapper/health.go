package wrapper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// health remembers since when the client's requests keep failing: a
// success anywhere clears it. Stats reports it, so a program can say that
// the server is gone instead of showing progress as if all were well.
type health struct {
	down atomic.Pointer[failure] // nil while the last request succeeded
}

type failure struct {
	since time.Time
	what  string
}

// failed records a failed attempt, keeping the time of the first failure
// of the run of failures.
func (h *health) failed(what string, now time.Time) {
	for {
		cur := h.down.Load()
		since := now
		if cur != nil {
			if cur.what == what {
				return
			}
			since = cur.since
		}
		if h.down.CompareAndSwap(cur, &failure{since: since, what: what}) {
			return
		}
	}
}

// ok records a success.
func (h *health) ok() {
	if h.down.Load() != nil {
		h.down.Store(nil)
	}
}

func (h *health) failing() (time.Time, string) {
	if f := h.down.Load(); f != nil {
		return f.since, f.what
	}
	return time.Time{}, ""
}

// failureText names a failed attempt briefly: "connection refused",
// "timeout", "HTTP 503".
func failureText(err error, status int) string {
	var ae *APIError
	switch {
	case errors.As(err, &ae):
		return fmt.Sprintf("HTTP %d", ae.StatusCode)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, errIdle), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case status >= 200 && status < 300:
		return fmt.Sprintf("broken HTTP %d answer", status)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return "host not found"
	}
	return "no answer"
}

// idSet is the request ids a client learned from its submits (and the
// ids it waits on): the request history never hands one of them to
// another lost submit. Entries older than keepKnown are dropped as it
// grows. Ids in the UUID form (fal's) are kept as 16 bytes in a map the
// garbage collector need not scan, so that a client that ran a million
// jobs does not pay for them at every collection.
type idSet struct {
	mu    sync.Mutex
	u     map[[16]byte]int64 // UUID-shaped ids -> unix seconds learned
	s     map[string]int64   // the others
	added int
	keep  time.Duration // longer than keepKnown when a settle window asks for it
}

// keepKnown is how long a learned id is remembered: longer than any lost
// submit can take to settle with the default windows.
const keepKnown = 2 * time.Hour

// uuidKey is id as 16 bytes when it is a canonical lower-case UUID.
func uuidKey(id string) (k [16]byte, ok bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
		return k, false
	}
	j := 0
	for i := 0; i < 36; i += 2 {
		if id[i] == '-' {
			i--
			continue
		}
		hi, lo := unhex(id[i]), unhex(id[i+1])
		if hi > 15 || lo > 15 {
			return k, false
		}
		k[j] = hi<<4 | lo
		j++
	}
	return k, j == 16
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return 255 // upper case or not hex: kept as a string
}

// add records id; it reports false when id was known already (claimed by
// another lost submit, or learned from a submit's answer).
func (k *idSet) add(id string, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	at := now.Unix()
	if u, ok := uuidKey(id); ok {
		if _, seen := k.u[u]; seen {
			return false
		}
		if k.u == nil {
			k.u = map[[16]byte]int64{}
		}
		k.u[u] = at
	} else {
		if _, seen := k.s[id]; seen {
			return false
		}
		if k.s == nil {
			k.s = map[string]int64{}
		}
		k.s[id] = at
	}
	if k.added++; k.added >= 4096 && k.added >= (len(k.u)+len(k.s))/2 {
		k.added = 0
		oldest := now.Add(-max(keepKnown, k.keep)).Unix()
		for id, t := range k.u {
			if t < oldest {
				delete(k.u, id)
			}
		}
		for id, t := range k.s {
			if t < oldest {
				delete(k.s, id)
			}
		}
	}
	return true
}

// keepFor makes the set remember ids at least d: as long as a lost
// submit may look for its job.
func (k *idSet) keepFor(d time.Duration) {
	k.mu.Lock()
	k.keep = max(k.keep, d)
	k.mu.Unlock()
}

func (k *idSet) has(id string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if u, ok := uuidKey(id); ok {
		_, seen := k.u[u]
		return seen
	}
	_, seen := k.s[id]
	return seen
}
