package manifest

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestHolds: a hold is read back for its name and digest only, outlives
// manifest writes (the use log is folded, the hold log is not), and the
// compaction past HoldsCompactSize keeps every live hold.
func TestHolds(t *testing.T) {
	s := Open(t.TempDir())
	ctx := ctxT(t)
	e := minimalEntry("a-b-c-d", digestA)
	put(t, s, e)
	now := time.Now().UTC().Truncate(time.Second)
	until := now.Add(time.Hour)
	if err := s.Hold(ctx, e.Name, digestA, until); err != nil {
		t.Fatal(err)
	}
	if err := s.Hold(ctx, e.Name, digestA, now.Add(time.Minute)); err != nil { // shorter: the longer wins
		t.Fatal(err)
	}
	if err := s.Hold(ctx, "other-b-c-d", digestA, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A write of the manifest (a put, a gc) must not drop the holds.
	if err := s.Update(ctx, func(*Manifest) error { return nil }); err != nil {
		t.Fatal(err)
	}
	m, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.HeldUntil(e.Name, digestA); !got.Equal(until) {
		t.Errorf("HeldUntil(%s, A) = %v, want %v", e.Name, got, until)
	}
	if got := m.HeldUntil(e.Name, digestB); !got.IsZero() {
		t.Errorf("a hold on digest A holds digest B: %v", got)
	}

	// Garbage and a torn last line are skipped, not errors.
	f, err := os.OpenFile(s.HoldsPath(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("not a hold\n2026-01-02T03:04:05Z sha256:zz x\n2026-01-02T03:04")
	f.Close()
	if m, err = s.Load(ctx); err != nil || !m.HeldUntil(e.Name, digestA).Equal(until) {
		t.Fatalf("after garbage lines: %v, %v", err, m.HeldUntil(e.Name, digestA))
	}
	// Compaction: expired lines go, live ones stay.
	expired := now.Add(-time.Hour)
	line, _ := useLine("old-b-c-d", digestA, expired)
	f, _ = os.OpenFile(s.HoldsPath(), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("\n" + strings.Repeat(string(line), HoldsCompactSize/len(line)+1))
	f.Close()
	if err := s.Hold(ctx, e.Name, digestA, now.Add(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.HoldsPath())
	if err != nil || fi.Size() > 1024 {
		t.Fatalf("hold log after compaction: %v, %d bytes", err, fi.Size())
	}
	if m, err = s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if got := m.HeldUntil(e.Name, digestA); !got.Equal(until) {
		t.Errorf("after compaction HeldUntil = %v, want %v", got, until)
	}
	if got := m.HeldUntil("other-b-c-d", digestA); !got.Equal(now.Add(2 * time.Hour)) {
		t.Errorf("after compaction the other hold = %v", got)
	}
	if got := m.HeldUntil("old-b-c-d", digestA); !got.IsZero() {
		t.Errorf("an expired hold survived compaction: %v", got)
	}
	if err := s.Hold(ctx, "bad name", digestA, until); err == nil {
		t.Error("Hold accepted a name with a space")
	}
}
