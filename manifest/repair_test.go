package manifest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imgcache/imgcache/errdefs"
)

func writeCorrupt(t *testing.T, s *Store, data string) {
	t.Helper()
	if err := os.WriteFile(s.Path(), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRepair(t *testing.T) {
	s := Open(t.TempDir())
	ctx := ctxT(t)
	writeCorrupt(t, s, `{"version":1,"entries":{`)
	fresh := New()
	fresh.Entries["a-b-c-d"] = minimalEntry("a-b-c-d", digestA)
	res, err := s.Repair(ctx, func(context.Context) (*Manifest, error) { return fresh, nil })
	if err != nil || !res.Repaired || res.Kept == "" {
		t.Fatalf("Repair = %+v, %v", res, err)
	}
	if kept, err := os.ReadFile(res.Kept); err != nil || string(kept) != `{"version":1,"entries":{` {
		t.Errorf("damaged file kept as %s: %q, %v", res.Kept, kept, err)
	}
	if m, err := s.Load(ctx); err != nil || m.Entries["a-b-c-d"] == nil {
		t.Fatalf("Load after Repair = %+v, %v", m, err)
	}
	// A manifest that reads fine is left alone, rebuild never runs.
	res, err = s.Repair(ctx, func(context.Context) (*Manifest, error) {
		t.Error("rebuild ran for a sound manifest")
		return New(), nil
	})
	if err != nil || res.Repaired || res.Manifest.Entries["a-b-c-d"] == nil {
		t.Errorf("Repair of a sound manifest = %+v, %v", res, err)
	}
	// Nor is a newer one.
	writeCorrupt(t, s, `{"version":7,"entries":{}}`)
	if _, err := s.Repair(ctx, func(context.Context) (*Manifest, error) { return New(), nil }); !errors.Is(err, ErrNewerSchema) {
		t.Errorf("Repair of a newer manifest = %v, want ErrNewerSchema", err)
	}
	if data, _ := os.ReadFile(s.Path()); string(data) != `{"version":7,"entries":{}}` {
		t.Errorf("newer manifest changed: %q", data)
	}
}

// TestRepairLosesNoUpdate: while one repair rebuilds (without the lock),
// another repair finishes and an update lands on the repaired manifest. The
// first repair must then not replace the manifest with its stale rebuild.
// Fails when commitRepair stops comparing the file with the bytes it found
// damaged (the update is then lost), as verify --repair did when it renamed
// and replaced the manifest outside the lock.
func TestRepairLosesNoUpdate(t *testing.T) {
	s := Open(t.TempDir())
	ctx := ctxT(t)
	writeCorrupt(t, s, `not json`)
	res, err := s.Repair(ctx, func(ctx context.Context) (*Manifest, error) {
		other, err := s.Repair(ctx, func(context.Context) (*Manifest, error) { return New(), nil })
		if err != nil || !other.Repaired {
			t.Errorf("inner repair = %+v, %v", other, err)
		}
		if err := s.Update(ctx, func(m *Manifest) error {
			m.Entries["put-after-repair-x-y"] = minimalEntry("put-after-repair-x-y", digestB)
			return nil
		}); err != nil {
			t.Errorf("update after the inner repair: %v", err)
		}
		return New(), nil // stale: knows nothing of the update
	})
	if err != nil || res.Repaired {
		t.Fatalf("outer Repair = %+v, %v; want no repair (done by another)", res, err)
	}
	m, err := s.Load(ctx)
	if err != nil || m.Entries["put-after-repair-x-y"] == nil {
		t.Fatalf("the update that landed on the repaired manifest is lost: %+v, %v", m, err)
	}
	if res.Manifest == nil || res.Manifest.Entries["put-after-repair-x-y"] == nil {
		t.Errorf("Repair returned %+v, not the manifest as it is now", res.Manifest)
	}
	kept, _ := filepath.Glob(s.Path() + ".corrupt-*")
	if len(kept) != 1 {
		t.Errorf("damaged copies kept: %v, want 1", kept)
	}
}

// TestRepairRacesUpdates: many repairers and updaters at once (updaters retry
// while the manifest is damaged); no acknowledged update is lost. A race,
// kept for interleavings the test above does not name.
func TestRepairRacesUpdates(t *testing.T) {
	s := Open(t.TempDir())
	ctx := ctxT(t)
	writeCorrupt(t, s, `{"version":1`)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := s.Repair(ctx, func(context.Context) (*Manifest, error) { return New(), nil }); err != nil && !errors.Is(err, errdefs.ErrLocked) {
				t.Errorf("Repair: %v", err)
			}
		})
	}
	names := []string{"p-d-1-a", "p-d-1-b", "p-d-1-c", "p-d-1-d", "p-d-1-e", "p-d-1-f"}
	for _, name := range names {
		wg.Go(func() {
			for {
				err := s.Update(ctx, func(m *Manifest) error {
					m.Entries[name] = minimalEntry(name, digestA)
					return nil
				})
				if err == nil {
					return
				}
				if !errors.Is(err, errdefs.ErrCorrupt) || ctx.Err() != nil {
					t.Errorf("Update %s: %v", name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	m, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lost []string
	for _, name := range names {
		if m.Entries[name] == nil {
			lost = append(lost, name)
		}
	}
	if len(lost) > 0 {
		t.Errorf("acknowledged updates lost: %s", strings.Join(lost, ", "))
	}
}
