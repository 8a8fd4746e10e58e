package queuetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// MaxBytes bounds the bytes the server holds at once: submit bodies being
// read, the inputs kept for the request history, the work of the model
// (what it asks for with Reserve), output images and encoded sync_mode
// results. A submit that does not fit is answered 429 with Retry-After
// before its body is read; the model waits for room. An eighth of the
// budget is kept from requests for the model, so that the jobs already
// queued can render. Without it (or with n <= 0) nothing is bounded, as
// tests want.
func MaxBytes(n int64) Option { return func(c *config) { c.maxBytes = max(n, 0) } }

// MaxJobsPerClient caps the jobs one client (one IP address, an IPv6 /64)
// holds at once; past it its submits are answered 429. The default is a
// quarter of MaxJobs (none without MaxJobs).
func MaxJobsPerClient(n int) Option { return func(c *config) { c.maxJobsPerClient = max(n, 0) } }

// MaxBytesPerClient caps the bytes one client's jobs hold (see MaxBytes);
// the default is a quarter of MaxBytes (none without MaxBytes).
func MaxBytesPerClient(n int64) Option { return func(c *config) { c.maxBytesPerClient = max(n, 0) } }

// ErrNoRoom is the error of Reserve when the server's memory budget cannot
// make room for the reservation in time, or ever.
var ErrNoRoom = errors.New("queuetest: no room in the memory budget")

// Reserve takes n bytes of the memory budget (MaxBytes) of the server
// running the model whose ctx this is, waiting up to a minute for room,
// and returns the function that gives them back. A Model calls it before
// it allocates what it needs (a decoded image, a render, its outputs):
// images it returns stay counted as the job's for as long as it is held.
// Outside a model, or without a budget, it reserves nothing.
func Reserve(ctx context.Context, n int64) (release func(), err error) {
	b, _ := ctx.Value(budgetKey{}).(*budget)
	if b == nil || b.limit <= 0 || n <= 0 {
		return func() {}, nil
	}
	if err := b.wait(ctx, n, time.Minute); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { b.release("", n) }) }, nil
}

type budgetKey struct{}

// budget counts the bytes held, globally and per client, against the
// configured caps.
type budget struct {
	limit, perClient int64

	mu      sync.Mutex
	held    int64
	peak    int64
	clients map[string]*clientUse
	changed chan struct{} // closed (and replaced) whenever bytes are given back
}

type clientUse struct {
	jobs  int
	bytes int64
}

func newBudget(limit, perClient int64) *budget {
	return &budget{limit: limit, perClient: perClient, clients: map[string]*clientUse{}, changed: make(chan struct{})}
}

// take reserves n bytes for client (none: "") if they fit.
func (b *budget) take(client string, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.takeLocked(client, n, b.limit)
}

// admit reserves n bytes for a request of client if they fit below the
// room kept for the model (an eighth of the budget).
func (b *budget) admit(client string, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.takeLocked(client, n, b.limit-b.limit/8)
}

// room is the most a request of one client may ever hold: the budget
// less the room kept for the model, or the client's share when smaller;
// 0 without a budget.
func (b *budget) room() int64 {
	r := b.limit - b.limit/8
	if b.perClient > 0 && (r <= 0 || b.perClient < r) {
		r = b.perClient
	}
	return r
}

// never reports a reservation of a request that could never fit.
func (b *budget) never(n int64) bool { r := b.room(); return r > 0 && n > r }

func (b *budget) takeLocked(client string, n, limit int64) bool {
	if b.limit > 0 && b.held+n > limit {
		return false
	}
	var cu *clientUse
	if client != "" {
		cu = b.client(client)
		if b.perClient > 0 && cu.bytes+n > b.perClient {
			return false
		}
		cu.bytes += n
	}
	b.held += n
	b.peak = max(b.peak, b.held)
	return true
}

func (b *budget) client(id string) *clientUse {
	cu := b.clients[id]
	if cu == nil {
		cu = &clientUse{}
		b.clients[id] = cu
	}
	return cu
}

// release gives back n bytes of client.
func (b *budget) release(client string, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held -= n
	if cu := b.clients[client]; client != "" && cu != nil {
		cu.bytes -= n
		b.forget(client, cu)
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *budget) forget(client string, cu *clientUse) {
	if cu.bytes == 0 && cu.jobs == 0 {
		delete(b.clients, client)
	}
}

// wait takes n bytes (no client) once they fit, within d and ctx.
func (b *budget) wait(ctx context.Context, n int64, d time.Duration) error {
	if b.limit > 0 && n > b.limit {
		return fmt.Errorf("%w: %d MiB needed, the budget is %d MiB", ErrNoRoom, mib(n), mib(b.limit))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		b.mu.Lock()
		if b.takeLocked("", n, b.limit) {
			b.mu.Unlock()
			return nil
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return fmt.Errorf("%w: %d MiB needed, %d MiB of %d MiB held", ErrNoRoom, mib(n), mib(b.heldNow()), mib(b.limit))
		}
	}
}

func (b *budget) heldNow() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}

// addJob counts a job of client against maxJobs (0: no cap).
func (b *budget) addJob(client string, maxJobs int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cu := b.client(client)
	if maxJobs > 0 && cu.jobs >= maxJobs {
		b.forget(client, cu)
		return false
	}
	cu.jobs++
	return true
}

func (b *budget) dropJob(client string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cu := b.clients[client]; cu != nil {
		cu.jobs--
		b.forget(client, cu)
	}
}

func (b *budget) jobsOf(client string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cu := b.clients[client]; cu != nil {
		return cu.jobs
	}
	return 0
}

func mib(n int64) int64 { return (n + 1<<20 - 1) >> 20 }

// clientOf is who a request comes from, for the caps per client: its IP
// address (an IPv6 address's /64), not anything it says about itself.
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return "addr:" + host // a pipe, a unix socket: one client
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
