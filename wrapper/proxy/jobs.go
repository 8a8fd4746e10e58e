package proxy

import (
	"container/list"
	"errors"
	"sync"
	"time"
)

// The reasons a reservation is refused.
var (
	errJobsInFlight = errors.New("too many jobs in flight for this user: fetch or cancel one first")
	errUserFull     = errors.New("this user's jobs fill the proxy's share for one user: fetch or cancel one first")
	errStoreFull    = errors.New("the proxy is tracking as many jobs as it can: retry later")
)

// jobStore remembers which user submitted which request id and counts each
// user's jobs in flight. A job is live from the reservation of its slot,
// taken before its submit is forwarded, until it ends: fetched with a final
// answer, cancelled, said unknown (404) by the upstream, or older than
// ttl. A job seen COMPLETED gives its user's slot back but stays live in
// the store (its result not fetched yet, its owner's to fetch) until one
// of those. Entries are bounded
// globally (max) and per user (maxUser); room is made by forgetting ended
// jobs, oldest first, never live ones: when only live jobs remain, a new
// reservation is refused.
type jobStore struct {
	mu      sync.Mutex
	max     int           // entries (jobs and reservations), all users
	maxUser int           // entries of one user
	perUser int           // live jobs of one user; 0: no cap
	ttl     time.Duration // a job older than this is no longer live
	now     func() time.Time
	held    int // entries, all users
	byID    map[string]*job
	live    *list.List // of *job, oldest first
	ended   *list.List // of *job, in the order they ended
	users   map[string]*account
}

// account is one user's share of the store.
type account struct {
	live  int        // live jobs and reservations
	held  int        // entries: live and ended jobs, reservations
	ended *list.List // of *job, in the order they ended
}

type job struct {
	id, user string // id "": a submit whose answer was lost, held until ttl
	added    time.Time
	free     bool          // its slot was given back (seen COMPLETED); still live
	at       *list.Element // in store.live, or store.ended once ended
	mine     *list.Element // in the account's ended, once ended
}

func newJobStore(max, maxUser, perUser int, ttl time.Duration) *jobStore {
	return &jobStore{max: max, maxUser: maxUser, perUser: perUser, ttl: ttl, now: time.Now,
		byID: map[string]*job{}, live: list.New(), ended: list.New(), users: map[string]*account{}}
}

// reservation is a slot taken for a submit in flight: commit it with the
// request id the upstream answered (or "" when the answer was lost), or
// release it when the submit definitely failed. Exactly one of the two.
type reservation struct {
	s    *jobStore
	user string
}

// reserve takes a slot for user's next job, or says why not.
func (s *jobStore) reserve(user string) (*reservation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire()
	a := s.users[user]
	if a == nil {
		a = &account{ended: list.New()}
	}
	switch {
	case s.perUser > 0 && a.live >= s.perUser:
		return nil, errJobsInFlight
	case a.held >= s.maxUser && a.ended.Len() == 0:
		return nil, errUserFull
	case a.held < s.maxUser && s.held >= s.max && s.ended.Len() == 0:
		return nil, errStoreFull
	}
	if a.held >= s.maxUser {
		s.forget(a.ended.Front().Value.(*job))
	} else if s.held >= s.max {
		s.forget(s.ended.Front().Value.(*job))
	}
	a.live++
	a.held++
	s.held++
	s.users[user] = a
	return &reservation{s: s, user: user}, nil
}

// commit turns the reservation into the job id ("" when the upstream's
// answer was lost: the slot stays taken until ttl).
func (r *reservation) commit(id string) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.byID[id]; dup {
		s.unreserve(r.user)
		return
	}
	j := &job{id: id, user: r.user, added: s.now()}
	j.at = s.live.PushBack(j)
	if id != "" {
		s.byID[id] = j
	}
}

// release gives the slot back: the submit did not create a job.
func (r *reservation) release() {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	r.s.unreserve(r.user)
}

func (s *jobStore) unreserve(user string) {
	a := s.users[user]
	a.live--
	a.held--
	s.held--
	if a.held == 0 {
		delete(s.users, user)
	}
}

// end makes a live job ended: its slot is free, its entry evictable.
func (s *jobStore) end(j *job) {
	if j.mine != nil {
		return // ended already
	}
	a := s.users[j.user]
	s.live.Remove(j.at)
	if !j.free {
		a.live--
	}
	if j.id == "" {
		// Nobody can reach it: nothing to remember.
		s.held--
		if a.held--; a.held == 0 {
			delete(s.users, j.user)
		}
		return
	}
	j.at = s.ended.PushBack(j)
	j.mine = a.ended.PushBack(j)
}

// forget drops an ended job.
func (s *jobStore) forget(j *job) {
	a := s.users[j.user]
	s.ended.Remove(j.at)
	a.ended.Remove(j.mine)
	delete(s.byID, j.id)
	s.held--
	if a.held--; a.held == 0 {
		delete(s.users, j.user)
	}
}

// expire ends the live jobs older than ttl.
func (s *jobStore) expire() {
	now := s.now()
	for e := s.live.Front(); e != nil && now.Sub(e.Value.(*job).added) > s.ttl; e = s.live.Front() {
		s.end(e.Value.(*job))
	}
}

func (s *jobStore) owner(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.byID[id]
	if !ok {
		return "", false
	}
	return j.user, true
}

// finish ends the job id, if it is live.
func (s *jobStore) finish(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j, ok := s.byID[id]; ok {
		s.end(j)
	}
}

// complete gives the slot of the live job id back (it was seen COMPLETED)
// and keeps its record live: not evictable until it ends (its result
// fetched, cancelled, unknown to the upstream, or expired).
func (s *jobStore) complete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j, ok := s.byID[id]; ok && j.mine == nil && !j.free {
		j.free = true
		s.users[j.user].live--
	}
}
