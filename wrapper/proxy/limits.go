package proxy

import (
	"sync"
	"sync/atomic"
)

// gate bounds the requests one user has in flight at once.
type gate struct {
	mu    sync.Mutex
	max   int // 0: no bound
	users map[string]int
}

// enter takes one of user's places, or reports that they are all taken.
func (g *gate) enter(user string) bool {
	if g.max == 0 {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.users[user] >= g.max {
		return false
	}
	g.users[user]++
	return true
}

// leave gives back a place enter took.
func (g *gate) leave(user string) {
	if g.max == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.users[user]--; g.users[user] <= 0 {
		delete(g.users, user)
	}
}

// gauge counts bytes held now and the most ever held at once.
type gauge struct{ now, peak atomic.Int64 }

func (g *gauge) add(n int64) {
	v := g.now.Add(n)
	for p := g.peak.Load(); v > p && !g.peak.CompareAndSwap(p, v); p = g.peak.Load() {
	}
}
