package fsutil

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// TestWritebackWritesEverything: a write larger than one write(2) (and
// than the writeback interval) lands whole and in order, and is counted.
// Fails if Write drops or repeats a slice of its input, or misreports n.
func TestWritebackWritesEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 3*maxWrite+12345)
	rand.New(rand.NewSource(1)).Read(data)
	w := Writeback(f, maxWrite/2)
	for _, part := range [][]byte{data[:100], data[100 : 2*maxWrite+7], data[2*maxWrite+7:]} {
		n, err := w.Write(part)
		if err != nil || n != len(part) {
			t.Fatalf("Write(%d bytes) = %d, %v", len(part), n, err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file holds %d bytes (equal: %v), want the %d written (%v)", len(got), bytes.Equal(got, data), len(data), err)
	}
	// A failing file: the error and what was written before it.
	f.Close()
	if n, err := w.Write(data); err == nil || n != 0 {
		t.Errorf("Write to a closed file = %d, %v; want 0 and an error", n, err)
	}
}
