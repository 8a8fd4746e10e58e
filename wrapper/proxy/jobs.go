package proxy

import (
	"container/list"
	"sync"
	"time"
)

// jobStore remembers which user submitted which request id, at most max
// of them (the oldest forgotten first), and counts each user's jobs in
// flight: submitted, and neither finished (fetched, cancelled) nor older
// than ttl.
type jobStore struct {
	mu      sync.Mutex
	max     int
	ttl     time.Duration
	now     func() time.Time
	byID    map[string]*list.Element
	order   *list.List    // of *job, oldest first
	expiry  *list.Element // the oldest job not yet past ttl
	running map[string]int
}

type job struct {
	id, user string
	added    time.Time
	done     bool
}

func newJobStore(max int, ttl time.Duration) *jobStore {
	return &jobStore{max: max, ttl: ttl, now: time.Now, byID: map[string]*list.Element{}, order: list.New(), running: map[string]int{}}
}

func (s *jobStore) add(id, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byID[id]; ok {
		return
	}
	e := s.order.PushBack(&job{id: id, user: user, added: s.now()})
	s.byID[id] = e
	s.running[user]++
	if s.expiry == nil {
		s.expiry = e
	}
	for s.order.Len() > s.max {
		s.drop(s.order.Front())
	}
}

// drop forgets the job at e.
func (s *jobStore) drop(e *list.Element) {
	if s.expiry == e {
		s.expiry = e.Next()
	}
	j := e.Value.(*job)
	s.end(j)
	delete(s.byID, j.id)
	s.order.Remove(e)
}

func (s *jobStore) end(j *job) {
	if !j.done {
		j.done = true
		if s.running[j.user]--; s.running[j.user] <= 0 {
			delete(s.running, j.user)
		}
	}
}

// expire ends the jobs older than ttl.
func (s *jobStore) expire() {
	now := s.now()
	for s.expiry != nil && now.Sub(s.expiry.Value.(*job).added) > s.ttl {
		s.end(s.expiry.Value.(*job))
		s.expiry = s.expiry.Next()
	}
}

func (s *jobStore) owner(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byID[id]
	if !ok {
		return "", false
	}
	return e.Value.(*job).user, true
}

func (s *jobStore) finish(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byID[id]; ok {
		s.end(e.Value.(*job))
	}
}

func (s *jobStore) inFlight(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire()
	return s.running[user]
}
