package bufpipe

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

func TestPipeCarriesEverythingInOrder(t *testing.T) {
	data := make([]byte, 1<<20+12345)
	for i := range data {
		data[i] = byte(rand.IntN(256))
	}
	for _, bufSize := range []int{777, 100000} {
		r, w := New(4096, 3)
		go func() {
			rest := data
			for len(rest) > 0 {
				k := min(len(rest), 1+rand.IntN(10000))
				if _, err := w.Write(rest[:k]); err != nil {
					w.CloseWithError(err)
					return
				}
				rest = rest[k:]
			}
			w.Close()
		}()
		var got bytes.Buffer
		if _, err := io.CopyBuffer(&got, struct{ io.Reader }{r}, make([]byte, bufSize)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("reads of %d: got %d bytes, not the %d written", bufSize, got.Len(), len(data))
		}
	}
}

func TestWriterErrorComesAfterItsData(t *testing.T) {
	r, w := New(10, 4)
	boom := errors.New("boom")
	go func() {
		w.Write([]byte("hello world, this is more than one chunk"))
		w.CloseWithError(boom)
	}()
	got, err := io.ReadAll(r)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if string(got) != "hello world, this is more than one chunk" {
		t.Fatalf("got %q", got)
	}
}

func TestWriterRunsAheadByTheBuffer(t *testing.T) {
	r, w := New(100, 4)
	defer r.Close()
	done := make(chan int, 1)
	go func() {
		n, _ := w.Write(make([]byte, 400)) // fits: nobody reads yet
		done <- n
	}()
	select {
	case n := <-done:
		if n != 400 {
			t.Fatalf("wrote %d", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a write that fits the buffer waited for the reader")
	}
}

func TestReaderCloseStopsAWaitingWriter(t *testing.T) {
	r, w := New(100, 2)
	stop := errors.New("load ended")
	errc := make(chan error, 1)
	go func() {
		_, err := w.Write(make([]byte, 10000))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	r.CloseWithError(stop)
	select {
	case err := <-errc:
		if !errors.Is(err, stop) {
			t.Fatalf("err = %v, want the reader's", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the writer still waits after the reader closed")
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, stop) {
		t.Fatalf("a later write: %v", err)
	}
}
