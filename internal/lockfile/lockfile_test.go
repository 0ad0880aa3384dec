package lockfile

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imgcache/imgcache/errdefs"
)

// helperEnv makes the test binary, re-executed, act as a lock holder.
const helperEnv = "IMGCACHE_LOCKFILE_HELPER_PATH"

// TestHelperProcess is not a test: re-executed by TestDeadHolderDoesNotBlock
// with helperEnv set, it takes the lock exclusively, says so on stdout and
// waits to be killed.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	l, err := Acquire(context.Background(), path, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	_ = l
	fmt.Println("locked")
	time.Sleep(time.Minute) // killed long before
	os.Exit(4)
}

func lockPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "sub", "x.lock") // the directory is created on demand
}

func mustAcquire(t *testing.T, path string, exclusive bool) *Lock {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := Acquire(ctx, path, exclusive)
	if err != nil {
		t.Fatalf("Acquire(%s, exclusive=%v): %v", path, exclusive, err)
	}
	if l.Exclusive() != exclusive {
		t.Fatalf("Exclusive() = %v, want %v", l.Exclusive(), exclusive)
	}
	t.Cleanup(func() { _ = l.Release() })
	return l
}

// tryAcquire reports whether TryAcquire got the lock, releasing it at once.
func tryAcquire(t *testing.T, path string, exclusive bool) bool {
	t.Helper()
	l, ok, err := TryAcquire(path, exclusive)
	if err != nil {
		t.Fatalf("TryAcquire(%s, exclusive=%v): %v", path, exclusive, err)
	}
	if ok != (l != nil) {
		t.Fatalf("TryAcquire: ok=%v but lock=%v", ok, l)
	}
	if ok {
		if err := l.Release(); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
	return ok
}

func TestConflicts(t *testing.T) {
	tests := []struct {
		name             string
		held, want       bool // exclusive?
		wantTryAcquireOK bool
	}{
		{name: "shared+shared coexist", held: false, want: false, wantTryAcquireOK: true},
		{name: "shared excludes exclusive", held: false, want: true, wantTryAcquireOK: false},
		{name: "exclusive excludes shared", held: true, want: false, wantTryAcquireOK: false},
		{name: "exclusive excludes exclusive", held: true, want: true, wantTryAcquireOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := lockPath(t)
			l := mustAcquire(t, path, tt.held)
			if got := tryAcquire(t, path, tt.want); got != tt.wantTryAcquireOK {
				t.Fatalf("TryAcquire while held: ok=%v, want %v", got, tt.wantTryAcquireOK)
			}
			if !tt.wantTryAcquireOK {
				// A blocking Acquire gives up with ErrLocked.
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				if l2, err := Acquire(ctx, path, tt.want); !errors.Is(err, errdefs.ErrLocked) || !errors.Is(err, context.DeadlineExceeded) {
					l2.Release()
					t.Fatalf("Acquire while held: err=%v, want ErrLocked and DeadlineExceeded", err)
				}
			}
			if err := l.Release(); err != nil {
				t.Fatalf("Release: %v", err)
			}
			if err := l.Release(); err != nil {
				t.Fatalf("second Release: %v", err)
			}
			if !tryAcquire(t, path, tt.want) {
				t.Fatal("TryAcquire after Release: busy")
			}
		})
	}
}

func TestAcquireContext(t *testing.T) {
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		wantErr error
	}{
		{name: "timeout", ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 30*time.Millisecond)
		}, wantErr: context.DeadlineExceeded},
		{name: "already cancelled", ctx: func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, wantErr: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := lockPath(t)
			mustAcquire(t, path, true)
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			l, err := Acquire(ctx, path, false)
			if err == nil {
				l.Release()
				t.Fatal("Acquire succeeded while the lock was held exclusively")
			}
			if !errors.Is(err, errdefs.ErrLocked) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want it to wrap ErrLocked and %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the lock file", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Acquire took %v to give up", d)
			}
		})
	}
}

func TestAcquireWaitsForRelease(t *testing.T) {
	path := lockPath(t)
	l := mustAcquire(t, path, true)
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l2, err := Acquire(ctx, path, true)
		if err == nil {
			err = l2.Release()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("Acquire returned (%v) while the lock was held", err)
	case <-time.After(50 * time.Millisecond):
	}
	l.Release()
	if err := <-got; err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
}

// TestRemoveWhileWaiting: a waiter that opened the file before a cleaner
// removed it must not end up holding a lock on the unlinked inode: whatever
// it holds must be the file that the path names.
func TestRemoveWhileWaiting(t *testing.T) {
	for _, exclusive := range []bool{false, true} {
		t.Run(fmt.Sprintf("waiter exclusive=%v", exclusive), func(t *testing.T) {
			for i := range 20 {
				path := lockPath(t)
				holder := mustAcquire(t, path, true)
				var wg sync.WaitGroup
				errs := make([]error, 3)
				for w := range errs {
					wg.Go(func() { errs[w] = acquireAndCheck(path, exclusive) })
				}
				time.Sleep(time.Duration(i%4) * 3 * time.Millisecond) // let the waiters open the old file
				if err := holder.Remove(); err != nil {
					t.Fatalf("Remove: %v", err)
				}
				wg.Wait()
				for w, err := range errs {
					if err != nil {
						t.Fatalf("round %d, waiter %d: %v", i, w, err)
					}
				}
			}
		})
	}
}

// TestRemoveWhileSpinning is the same race, made likely: the waiters spin on
// TryAcquire, so one of them often opens the file just before the cleaner
// unlinks it and locks it just after the cleaner lets go.
func TestRemoveWhileSpinning(t *testing.T) {
	deadline := time.Now().Add(time.Second)
	rounds := 0
	for ; rounds < 300 && time.Now().Before(deadline); rounds++ {
		path := lockPath(t)
		holder := mustAcquire(t, path, true)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for w := range errs {
			exclusive := w%2 == 0
			wg.Go(func() {
				for {
					l, ok, err := TryAcquire(path, exclusive)
					if err != nil {
						errs[w] = err
						return
					}
					if ok {
						errs[w] = checkHeld(l, path)
						l.Release()
						return
					}
				}
			})
		}
		runtime.Gosched()
		if err := holder.Remove(); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		wg.Wait()
		for w, err := range errs {
			if err != nil {
				t.Fatalf("round %d, waiter %d: %v", rounds, w, err)
			}
		}
	}
	t.Logf("%d rounds", rounds)
}

// checkHeld checks that the file l locks is the one at path.
func checkHeld(l *Lock, path string) error {
	held, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("stat the locked file: %w", err)
	}
	now, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("holding a lock, but %w", err)
	}
	if !os.SameFile(held, now) {
		return fmt.Errorf("holding a lock on a file that is no longer %s", path)
	}
	return nil
}

// acquireAndCheck takes the lock, checks that the locked file is the one at
// path, and releases it.
func acquireAndCheck(path string, exclusive bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := Acquire(ctx, path, exclusive)
	if err != nil {
		return err
	}
	defer l.Release()
	return checkHeld(l, path)
}

func TestRemoveNeedsExclusive(t *testing.T) {
	path := lockPath(t)
	l := mustAcquire(t, path, false)
	if err := l.Remove(); err == nil {
		t.Fatal("Remove of a shared lock succeeded")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("lock file gone after a refused Remove: %v", err)
	}
	l.Release()

	x := mustAcquire(t, path, true)
	if err := x.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file after Remove: %v", err)
	}
	if err := x.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	var nilLock *Lock
	if err := nilLock.Release(); err != nil {
		t.Fatalf("nil Release: %v", err)
	}
}

func TestTryAcquireBusy(t *testing.T) {
	path := lockPath(t)
	mustAcquire(t, path, true)
	for _, exclusive := range []bool{false, true} {
		l, ok, err := TryAcquire(path, exclusive)
		if err != nil || ok || l != nil {
			t.Fatalf("TryAcquire(exclusive=%v) on a busy lock = %v, %v, %v; want nil, false, nil", exclusive, l, ok, err)
		}
	}
}

func TestDeadHolderDoesNotBlock(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	path := lockPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	if tryAcquire(t, path, false) {
		t.Fatal("the child's exclusive lock did not exclude us")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	start := time.Now()
	actx, acancel := context.WithTimeout(context.Background(), time.Second)
	defer acancel()
	l, err := Acquire(actx, path, true)
	if err != nil {
		t.Fatalf("Acquire after the holder died: %v", err)
	}
	defer l.Release()
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("Acquire after the holder died took %v", d)
	}
}
