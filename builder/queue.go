package builder

import (
	"context"
	"slices"
	"sync"
)

// State is where a request stands in a [Queue].
type State string

// The states a [Queue] reports.
const (
	// Queued: waiting for a free slot; Position builds are ahead of it.
	// Reported when the request arrives and no slot is free, and whenever
	// its position changes.
	Queued State = "queued"
	// Joined: a build of the same name was already queued or running; the
	// request waits for that one and shares its result. Position is that
	// build's position (0 when it is running).
	Joined State = "joined"
	// Started: the build is running.
	Started State = "started"
	// Done: the build succeeded.
	Done State = "done"
	// Failed: the build failed (Err says why) or was cancelled while queued.
	Failed State = "failed"
)

// Status is one report from a [Queue].
type Status struct {
	Name     string
	State    State
	Position int // builds queued ahead of this one (Queued, Joined); else 0
	Running  int // builds running when the report was made
	Err      error
}

// Queue runs builds in-process: at most N at once, first come first
// served, and never two of the same name at once. Its zero value is not
// usable; make one with [NewQueue].
type Queue struct {
	jobs    int
	report  func(Status)
	mu      sync.Mutex
	running int
	pending []*call          // waiting for a slot, in arrival order
	calls   map[string]*call // queued or running, by name
}

type call struct {
	name    string
	start   chan struct{} // closed when the call may run
	done    chan struct{} // closed when it finished
	started bool
	err     error
}

// NewQueue returns a queue running at most jobs builds at once (at least
// one). report, if not nil, receives every status change; it is called with
// the queue's lock held (so reports arrive in the order things happened)
// and must not call the queue.
func NewQueue(jobs int, report func(Status)) *Queue {
	return &Queue{jobs: max(jobs, 1), report: report, calls: map[string]*call{}}
}

// Do runs fn as the build of name once a slot is free, in the caller's
// goroutine, and returns its error. If a build of name is already queued or
// running, Do runs nothing: it waits for that build and returns its error
// with shared = true.
//
// If ctx ends while the request is queued, it leaves the queue and Do
// returns ctx's error; requests that joined it get that error too. Once fn
// runs, it is fn's job to honour ctx.
func (q *Queue) Do(ctx context.Context, name string, fn func(context.Context) error) (shared bool, err error) {
	q.mu.Lock()
	if c, ok := q.calls[name]; ok {
		q.emit(Status{Name: name, State: Joined, Position: q.position(c)})
		q.mu.Unlock()
		select {
		case <-c.done:
			return true, c.err
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
	c := &call{name: name, start: make(chan struct{}), done: make(chan struct{})}
	q.calls[name] = c
	q.pending = append(q.pending, c)
	q.dispatch()
	if !c.started {
		q.emit(Status{Name: name, State: Queued, Position: len(q.pending) - 1})
	}
	q.mu.Unlock()

	select {
	case <-c.start:
	case <-ctx.Done():
		q.mu.Lock()
		if !c.started {
			q.pending = slices.DeleteFunc(q.pending, func(p *call) bool { return p == c })
			delete(q.calls, name)
			c.err = ctx.Err()
			close(c.done)
			q.emit(Status{Name: name, State: Failed, Err: c.err})
			q.positions()
			q.mu.Unlock()
			return false, c.err
		}
		q.mu.Unlock() // it started meanwhile: run it, fn sees ctx is done
	}

	defer func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		q.running--
		delete(q.calls, name)
		c.err = err
		close(c.done)
		if err != nil {
			q.emit(Status{Name: name, State: Failed, Err: err})
		} else {
			q.emit(Status{Name: name, State: Done})
		}
		q.dispatch()
	}()
	return false, fn(ctx)
}

// dispatch starts queued calls while there are free slots. q.mu is held.
func (q *Queue) dispatch() {
	moved := false
	for q.running < q.jobs && len(q.pending) > 0 {
		c := q.pending[0]
		q.pending = q.pending[1:]
		c.started = true
		q.running++
		q.emit(Status{Name: c.name, State: Started})
		close(c.start)
		moved = true
	}
	if moved {
		q.positions()
	}
}

// positions reports the new position of every queued call. q.mu is held.
func (q *Queue) positions() {
	for i, c := range q.pending {
		q.emit(Status{Name: c.name, State: Queued, Position: i})
	}
}

// position is c's position: its index among the queued, 0 when running.
func (q *Queue) position(c *call) int {
	if i := slices.Index(q.pending, c); i >= 0 {
		return i
	}
	return 0
}

func (q *Queue) emit(s Status) {
	if q.report != nil {
		s.Running = q.running
		q.report(s)
	}
}
