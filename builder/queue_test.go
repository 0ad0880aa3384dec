package builder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder collects a queue's reports.
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) report(s Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line := fmt.Sprintf("%s %s", s.Name, s.State)
	if s.State == Queued || s.State == Joined {
		line += fmt.Sprintf(" %d", s.Position)
	}
	r.log = append(r.log, line)
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.log...)
}

// waitFor polls until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestQueueLimit: the queue runs exactly its limit at once. Each build waits
// until the limit is reached (or 10 s pass), so a queue that ran fewer at
// once (a serial one for jobs=5) fails on the timeout, and one that ran more
// fails on the peak.
func TestQueueLimit(t *testing.T) {
	for _, jobs := range []int{0, 1, 2, 5} {
		t.Run(fmt.Sprint(jobs), func(t *testing.T) {
			want := int32(max(jobs, 1))
			q := NewQueue(jobs, nil)
			var cur, peak atomic.Int32
			reached := make(chan struct{})
			var once sync.Once
			var starved atomic.Bool
			var wg sync.WaitGroup
			for i := range 12 {
				wg.Go(func() {
					q.Do(context.Background(), fmt.Sprint("n", i), func(context.Context) error {
						n := cur.Add(1)
						for {
							p := peak.Load()
							if n <= p || peak.CompareAndSwap(p, n) {
								break
							}
						}
						if n >= want {
							once.Do(func() { close(reached) })
						}
						select {
						case <-reached:
						case <-time.After(10 * time.Second):
							starved.Store(true)
						}
						cur.Add(-1)
						return nil
					})
				})
			}
			wg.Wait()
			if starved.Load() {
				t.Fatalf("the queue never ran %d builds at once (peak %d)", want, peak.Load())
			}
			if peak.Load() != want {
				t.Fatalf("peak %d concurrent builds, limit %d", peak.Load(), want)
			}
		})
	}
}

func TestQueueCoalesces(t *testing.T) {
	for _, tc := range []struct {
		what string
		err  error
	}{{"success", nil}, {"failure", errors.New("step 3/3 failed")}} {
		t.Run(tc.what, func(t *testing.T) {
			rec := &recorder{}
			q := NewQueue(4, rec.report)
			var runs atomic.Int32
			release := make(chan struct{})
			const n = 5
			type out struct {
				shared bool
				err    error
			}
			outs := make(chan out, n)
			go func() {
				shared, err := q.Do(context.Background(), "gcc15", func(context.Context) error {
					runs.Add(1)
					<-release
					return tc.err
				})
				outs <- out{shared, err}
			}()
			waitFor(t, "the first build to start", func() bool { return runs.Load() == 1 })
			for range n - 1 {
				go func() {
					shared, err := q.Do(context.Background(), "gcc15", func(context.Context) error {
						runs.Add(1)
						return nil
					})
					outs <- out{shared, err}
				}()
			}
			waitFor(t, "the others to join", func() bool { return strings.Count(strings.Join(rec.lines(), "\n"), "joined") == n-1 })
			close(release)
			sharedN := 0
			for range n {
				o := <-outs
				if o.err != tc.err {
					t.Errorf("err %v, want %v", o.err, tc.err)
				}
				if o.shared {
					sharedN++
				}
			}
			if runs.Load() != 1 || sharedN != n-1 {
				t.Fatalf("%d runs, %d shared; want 1 run, %d shared", runs.Load(), sharedN, n-1)
			}
			// Once finished, the name builds again.
			if shared, err := q.Do(context.Background(), "gcc15", func(context.Context) error { runs.Add(1); return nil }); shared || err != nil || runs.Load() != 2 {
				t.Fatalf("a later request: shared %v err %v runs %d", shared, err, runs.Load())
			}
		})
	}
}

func TestQueuePositions(t *testing.T) {
	rec := &recorder{}
	q := NewQueue(1, rec.report)
	gates := map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{}), "c": make(chan struct{})}
	var wg sync.WaitGroup
	do := func(name string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.Do(context.Background(), name, func(context.Context) error { <-gates[name]; return nil })
		}()
	}
	has := func(line string) func() bool {
		return func() bool {
			for _, l := range rec.lines() {
				if l == line {
					return true
				}
			}
			return false
		}
	}
	do("a")
	waitFor(t, "a started", has("a started"))
	do("b")
	waitFor(t, "b queued", has("b queued 0"))
	do("c")
	waitFor(t, "c queued", has("c queued 1"))
	do("c") // joins c, which has one build ahead of it
	waitFor(t, "c joined", has("c joined 1"))
	close(gates["a"])
	waitFor(t, "b started", has("b started"))
	waitFor(t, "c moved up", has("c queued 0"))
	close(gates["b"])
	close(gates["c"])
	wg.Wait()
	want := []string{
		"a started",
		"b queued 0",
		"c queued 1",
		"c joined 1",
		"a done",
		"b started",
		"c queued 0",
		"b done",
		"c started",
		"c done",
	}
	if got := rec.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("reports:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestQueueCancelWhileQueued(t *testing.T) {
	rec := &recorder{}
	q := NewQueue(1, rec.report)
	release := make(chan struct{})
	started := make(chan struct{})
	go q.Do(context.Background(), "a", func(context.Context) error { close(started); <-release; return nil })
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	ran := atomic.Bool{}
	go func() {
		_, err := q.Do(ctx, "b", func(context.Context) error { ran.Store(true); return nil })
		errc <- err
	}()
	waitFor(t, "b queued", func() bool { return len(rec.lines()) >= 2 })
	go func() {
		_, err := q.Do(context.Background(), "b", func(context.Context) error { ran.Store(true); return nil })
		errc <- err
	}()
	waitFor(t, "b joined", func() bool { return len(rec.lines()) >= 3 })
	cancel()
	for range 2 {
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
	}
	close(release)
	// b left the queue: a later b runs.
	if _, err := q.Do(context.Background(), "b", func(context.Context) error { ran.Store(true); return nil }); err != nil || !ran.Load() {
		t.Fatalf("b after cancel: err %v ran %v", err, ran.Load())
	}
}
