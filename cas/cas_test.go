package cas_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/lockfile"
)

// randomData returns n reproducible pseudo-random (incompressible) bytes.
func randomData(n int, seed uint64) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

func sha(b []byte) digest.Digest {
	sum := sha256.Sum256(b)
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
}

func openStore(t *testing.T, opts ...cas.Option) (*cas.Store, string) {
	t.Helper()
	root := t.TempDir()
	s, err := cas.Open(root, opts...)
	if err != nil {
		t.Fatalf("cas.Open: %v", err)
	}
	return s, root
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// ingest stores data and releases the ingest's lock.
func ingest(t *testing.T, s *cas.Store, data []byte) *cas.Ingested {
	t.Helper()
	in, err := s.Ingest(ctxT(t), bytes.NewReader(data), nil)
	if err != nil {
		t.Fatalf("Ingest: %v", err)
	}
	if err := in.Release(); err != nil {
		t.Fatalf("Release: %v", err)
	}
	return in
}

// dirNames lists a directory's entries.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// assertNoLeftovers checks that a failed ingest left nothing in blobs/ or tmp/.
func assertNoLeftovers(t *testing.T, root string) {
	t.Helper()
	for _, d := range []string{filepath.Join(root, "blobs", "sha256"), filepath.Join(root, "tmp")} {
		if names := dirNames(t, d); len(names) != 0 {
			t.Errorf("%s holds %v after a failed ingest", d, names)
		}
	}
}

func blobFile(root string, d digest.Digest) string {
	return filepath.Join(root, "blobs", "sha256", d.Encoded()+".tar.zst")
}

// readAll reads the blob for d through Open with bufSize-byte reads.
func readAll(t *testing.T, s *cas.Store, d digest.Digest, bufSize int) ([]byte, error) {
	t.Helper()
	out, err := readBlob(s, d, bufSize)
	if errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Open(%s): %v", d, err)
	}
	return out, err
}

// readBlob is readAll for goroutines: it reports through its error. It also
// checks that the reader's end sticks and Size counts what it produced.
func readBlob(s *cas.Store, d digest.Digest, bufSize int) ([]byte, error) {
	r, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out bytes.Buffer
	buf := make([]byte, bufSize)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			if r.Size() != int64(out.Len()) {
				return nil, fmt.Errorf("Size() = %d after %d bytes", r.Size(), out.Len())
			}
			if n, err := r.Read(buf); n != 0 || err != io.EOF {
				return nil, fmt.Errorf("Read after io.EOF = %d, %v", n, err)
			}
			return out.Bytes(), nil
		}
		if err != nil {
			if n, err2 := r.Read(buf); n != 0 || err2 == nil || err2 == io.EOF {
				return nil, fmt.Errorf("Read after %w = %d, %v", err, n, err2)
			}
			return out.Bytes(), err
		}
	}
}

func decompress(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	out, err := io.ReadAll(dec)
	if err != nil {
		t.Fatalf("zstd decompress %s: %v", path, err)
	}
	return out
}

func TestIngest(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"1 MiB+7", 1<<20 + 7},
		{"about 20 MiB", 20<<20 + 13},
	}
	encoders := []struct {
		name string
		opts []cas.Option
	}{{"default encoder", nil}, {"pure-Go encoder", []cas.Option{cas.WithGoEncoder()}}}
	for _, enc := range encoders {
		for _, tt := range tests {
			t.Run(enc.name+"/"+tt.name, func(t *testing.T) {
				s, root := openStore(t, enc.opts...)
				data := randomData(tt.size, uint64(tt.size))
				var checked cas.Info
				in, err := s.Ingest(ctxT(t), bytes.NewReader(data), func(i cas.Info) error { checked = i; return nil })
				if err != nil {
					t.Fatalf("Ingest: %v", err)
				}
				defer in.Release()
				want := sha(data)
				if in.Digest != want || in.Size != int64(len(data)) || in.Deduplicated {
					t.Fatalf("Ingest = %s, %d bytes, dedup %v; want %s, %d bytes, new", in.Digest, in.Size, in.Deduplicated, want, len(data))
				}
				if checked.Digest != want || checked.Size != int64(len(data)) {
					t.Errorf("check saw %+v", checked)
				}
				p, err := s.BlobPath(want)
				if err != nil || p != blobFile(root, want) {
					t.Fatalf("BlobPath = %s, %v; want %s", p, err, blobFile(root, want))
				}
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatalf("blob file: %v", err)
				}
				if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o222 != 0 {
					t.Errorf("blob mode %v, want a read-only regular file", fi.Mode())
				}
				if fi.Size() != in.Stored {
					t.Errorf("Stored = %d, file has %d bytes", in.Stored, fi.Size())
				}
				// Standard tools read the blob (zstd -dc blob | sha256sum).
				if zstdCLI, err := exec.LookPath("zstd"); err == nil {
					out, err := exec.Command(zstdCLI, "-dc", p).Output()
					if err != nil || !bytes.Equal(out, data) {
						t.Errorf("zstd -dc: %d bytes, %v", len(out), err)
					}
				} else if got := decompress(t, p); !bytes.Equal(got, data) {
					t.Fatalf("blob decompresses to %d bytes that differ from the input", len(got))
				}
				st, err := s.Stat(want)
				if err != nil || st.Digest != want || st.Stored != fi.Size() {
					t.Errorf("Stat = %+v, %v", st, err)
				}
				got, err := readAll(t, s, want, 64<<10)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("Open+Read: %d bytes, %v", len(got), err)
				}
				if names := dirNames(t, filepath.Join(root, "tmp")); len(names) != 0 {
					t.Errorf("tmp/ holds %v after an ingest", names)
				}
			})
		}
	}
}

func TestIngestWithLevel(t *testing.T) {
	// Text with some variety, so that a higher level has something to win.
	var data []byte
	for i := range 200_000 {
		data = fmt.Appendf(data, "layer %d/%x.tar ", i%977, i*7919%65521)
	}
	for _, enc := range []struct {
		name string
		opts []cas.Option
	}{{"default encoder", nil}, {"pure-Go encoder", []cas.Option{cas.WithGoEncoder()}}} {
		t.Run(enc.name, func(t *testing.T) {
			fast, _ := openStore(t, enc.opts...)
			best, root := openStore(t, append(enc.opts, cas.WithLevel(19))...)
			a := ingest(t, fast, data)
			b := ingest(t, best, data)
			if a.Digest != b.Digest || b.Stored >= a.Stored {
				t.Fatalf("level 19: %s %d bytes; level 1: %s %d bytes; want the same digest, fewer bytes", b.Digest, b.Stored, a.Digest, a.Stored)
			}
			if got := decompress(t, blobFile(root, b.Digest)); !bytes.Equal(got, data) {
				t.Fatal("level-19 blob does not decompress to the input")
			}
		})
	}
}

func TestIngestDeduplicates(t *testing.T) {
	s, root := openStore(t)
	data := randomData(100_000, 1)
	first := ingest(t, s, data)
	second := ingest(t, s, data)
	if first.Deduplicated || !second.Deduplicated {
		t.Fatalf("Deduplicated: first %v, second %v", first.Deduplicated, second.Deduplicated)
	}
	if first.Digest != second.Digest || second.Size != int64(len(data)) || second.Stored != first.Stored {
		t.Fatalf("second ingest = %+v, first %+v", second.Info, first.Info)
	}
	if names := dirNames(t, filepath.Join(root, "blobs", "sha256")); len(names) != 1 {
		t.Fatalf("blobs/ holds %v, want one blob", names)
	}
	if names := dirNames(t, filepath.Join(root, "tmp")); len(names) != 0 {
		t.Fatalf("tmp/ holds %v", names)
	}
}

// TestIngestHoldsLock: a fresh blob is protected by a shared lock until
// Release, so a gc (which takes it exclusively without waiting) skips it.
func TestIngestHoldsLock(t *testing.T) {
	s, _ := openStore(t)
	for _, data := range [][]byte{[]byte("fresh"), []byte("fresh")} { // new, then deduplicated
		in, err := s.Ingest(ctxT(t), bytes.NewReader(data), nil)
		if err != nil {
			t.Fatal(err)
		}
		if l, ok, err := s.TryLock(in.Digest, true); ok || err != nil {
			l.Release()
			t.Fatalf("TryLock(exclusive) before Release = %v, %v; want busy (dedup %v)", ok, err, in.Deduplicated)
		}
		if err := in.Release(); err != nil {
			t.Fatal(err)
		}
		l, ok, err := s.TryLock(in.Digest, true)
		if !ok || err != nil {
			t.Fatalf("TryLock(exclusive) after Release = %v, %v", ok, err)
		}
		l.Release()
	}
}

// failingReader yields data[:n], then err.
type failingReader struct {
	data []byte
	n    int
	err  error
	off  int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.off >= f.n {
		return 0, f.err
	}
	k := copy(p, f.data[f.off:f.n])
	f.off += k
	return k, nil
}

func TestIngestFailureLeavesNothing(t *testing.T) {
	data := randomData(9<<20, 2)
	errCheck := errors.New("not an image archive")
	tests := []struct {
		name    string
		reader  func(cancel context.CancelFunc) io.Reader
		check   func(cas.Info) error
		preCanc bool
		wantErr error
	}{
		{
			name:    "check refuses",
			reader:  func(context.CancelFunc) io.Reader { return bytes.NewReader(data) },
			check:   func(cas.Info) error { return errCheck },
			wantErr: errCheck,
		},
		{
			name:    "check refuses empty input",
			reader:  func(context.CancelFunc) io.Reader { return bytes.NewReader(nil) },
			check:   func(cas.Info) error { return errCheck },
			wantErr: errCheck,
		},
		{
			name:    "reader fails at once",
			reader:  func(context.CancelFunc) io.Reader { return &failingReader{data: data, n: 0, err: io.ErrUnexpectedEOF} },
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "reader fails after 1 byte",
			reader:  func(context.CancelFunc) io.Reader { return &failingReader{data: data, n: 1, err: io.ErrUnexpectedEOF} },
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name: "reader fails after several frames",
			reader: func(context.CancelFunc) io.Reader {
				return &failingReader{data: data, n: 9<<20 - 5, err: io.ErrUnexpectedEOF}
			},
			wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "context cancelled before",
			reader:  func(context.CancelFunc) io.Reader { return bytes.NewReader(data) },
			preCanc: true,
			wantErr: context.Canceled,
		},
		{
			name: "context cancelled midway",
			reader: func(cancel context.CancelFunc) io.Reader {
				return io.MultiReader(bytes.NewReader(data[:5<<20]), &cancelReader{cancel: cancel}, bytes.NewReader(data[5<<20:]))
			},
			wantErr: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, root := openStore(t)
			ctx, cancel := context.WithCancel(ctxT(t))
			defer cancel()
			if tt.preCanc {
				cancel()
			}
			in, err := s.Ingest(ctx, tt.reader(cancel), tt.check)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Ingest = %+v, %v; want %v", in, err, tt.wantErr)
			}
			if in != nil {
				t.Errorf("Ingest returned a result with its error")
			}
			assertNoLeftovers(t, root)
			if names := dirNames(t, filepath.Join(root, "locks")); len(names) != 0 {
				t.Errorf("locks/ holds %v", names)
			}
			// The store still works.
			ingest(t, s, data[:1000])
		})
	}
}

// cancelReader cancels a context when read, and yields nothing.
type cancelReader struct{ cancel context.CancelFunc }

func (c *cancelReader) Read([]byte) (int, error) { c.cancel(); return 0, io.EOF }

func TestOpenReadsExactContent(t *testing.T) {
	s, _ := openStore(t)
	big := randomData(4<<20+3, 3) // two frames
	small := big[:200_000]        // for byte-by-byte reads
	ingest(t, s, big)
	ingest(t, s, small)
	tests := []struct {
		name    string
		data    []byte
		bufSize int
	}{
		{"big/1MiB reads", big, 1 << 20},
		{"big/4KiB reads", big, 4096},
		{"small/3-byte reads", small, 3},
		{"small/1-byte reads", small[:20_000], 1},
	}
	ingest(t, s, small[:20_000])
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(t, s, sha(tt.data), tt.bufSize)
			if err != nil || !bytes.Equal(got, tt.data) {
				t.Fatalf("read %d bytes, %v", len(got), err)
			}
		})
	}
	t.Run("WriteTo", func(t *testing.T) {
		r, err := s.Open(sha(big))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var buf bytes.Buffer
		n, err := io.Copy(&buf, r) // uses WriteTo
		if err != nil || n != int64(len(big)) || !bytes.Equal(buf.Bytes(), big) {
			t.Fatalf("io.Copy = %d, %v", n, err)
		}
		if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("Read after the end = %d, %v", n, err)
		}
	})
}

// makeWritable lets the test damage a read-only blob.
func makeWritable(t *testing.T, path string) {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
}

// expectIntegrity reads the blob (with Read, or through WriteTo) and wants
// ErrIntegrity, never a clean end.
func expectIntegrity(t *testing.T, s *cas.Store, d digest.Digest, bufSize int, writeTo bool) error {
	t.Helper()
	var err error
	if writeTo {
		r, oerr := s.Open(d)
		if oerr != nil {
			t.Fatal(oerr)
		}
		defer r.Close()
		_, err = io.Copy(io.Discard, r)
	} else {
		_, err = readAll(t, s, d, bufSize)
	}
	if err == nil {
		t.Fatal("damaged blob read to a clean io.EOF")
	}
	if !errors.Is(err, errdefs.ErrIntegrity) {
		t.Fatalf("damaged blob: %v, want ErrIntegrity", err)
	}
	return err
}

// expectIntegrityOrSame reads a damaged blob and wants ErrIntegrity, or else
// exactly the original content: some header bits (the window size's
// mantissa, for one) change nothing in what a frame decodes to, and damage
// that changes nothing is not an integrity failure. Wrong content with a
// clean end always fails the test.
func expectIntegrityOrSame(t *testing.T, s *cas.Store, d digest.Digest, want []byte, writeTo bool) {
	t.Helper()
	r, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var buf bytes.Buffer
	if writeTo {
		_, err = io.Copy(&buf, r)
	} else {
		_, err = io.CopyBuffer(&buf, struct{ io.Reader }{r}, make([]byte, 256<<10))
	}
	switch {
	case err == nil && bytes.Equal(buf.Bytes(), want):
		t.Log("this damage decodes to the same content (harmless)")
	case err == nil:
		t.Fatalf("damaged blob read to a clean io.EOF with different content (%d bytes, want %d)", buf.Len(), len(want))
	case !errors.Is(err, errdefs.ErrIntegrity):
		t.Fatalf("damaged blob: %v, want ErrIntegrity", err)
	}
}

func TestOpenDetectsFlippedBytes(t *testing.T) {
	s, root := openStore(t)
	data := randomData(4<<20+100_000, 4) // two frames
	text := bytes.Repeat([]byte("layer.tar manifest.json repositories "), 50_000)
	for _, content := range []struct {
		name string
		data []byte
	}{{"random", data}, {"compressible", text}} {
		in := ingest(t, s, content.data)
		p := blobFile(root, in.Digest)
		makeWritable(t, p)
		orig, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		n := len(orig)
		offsets := []int{0, 4, 5, 100, n / 3, n / 2, 2 * n / 3, n - 5, n - 4, n - 1}
		for _, off := range offsets {
			for _, mask := range []byte{0x01, 0xff} {
				t.Run(fmt.Sprintf("%s/offset=%d/xor=%#x", content.name, off, mask), func(t *testing.T) {
					damaged := slices.Clone(orig)
					damaged[off] ^= mask
					if err := os.WriteFile(p, damaged, 0o644); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { _ = os.WriteFile(p, orig, 0o644) })
					expectIntegrityOrSame(t, s, in.Digest, content.data, mask == 0xff)
				})
			}
		}
	}
}

func TestOpenDetectsReplacedContent(t *testing.T) {
	s, root := openStore(t)
	data := randomData(300_000, 5)
	in := ingest(t, s, data)
	other := slices.Clone(data)
	other[len(other)-1] ^= 1 // same size, one bit off
	p := blobFile(root, in.Digest)
	makeWritable(t, p)
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, enc.EncodeAll(other, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	enc.Close()
	expectIntegrity(t, s, in.Digest, 32<<10, true)
	err = expectIntegrity(t, s, in.Digest, 32<<10, false)
	for _, d := range []digest.Digest{in.Digest, sha(other)} {
		if !strings.Contains(err.Error(), d.String()) {
			t.Errorf("error %q does not name %s", err, d)
		}
	}
}

func TestOpenDetectsTruncation(t *testing.T) {
	s, root := openStore(t)
	data := randomData(8<<20+11, 6) // three frames
	in := ingest(t, s, data)
	p := blobFile(root, in.Digest)
	makeWritable(t, p)
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	n := len(orig)
	cuts := []int{0, 1, 4, 100, n / 2, n - 4, n - 1}
	// Cutting exactly between frames leaves a valid zstd stream of the first
	// frames: only the digest can tell. Frame starts are where the magic is.
	magic := []byte{0x28, 0xb5, 0x2f, 0xfd}
	frames := 0
	for i := 1; i < n; i++ {
		j := bytes.Index(orig[i:], magic)
		if j < 0 {
			break
		}
		i += j
		cuts = append(cuts, i)
		frames++
	}
	if frames < 2 {
		t.Logf("only %d frame boundaries found", frames)
	}
	for _, cut := range cuts {
		t.Run(fmt.Sprintf("cut=%d", cut), func(t *testing.T) {
			if err := os.WriteFile(p, orig[:cut], 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.WriteFile(p, orig, 0o644) })
			expectIntegrity(t, s, in.Digest, 1<<20, cut%2 == 0)
		})
	}
}

var malformed = []digest.Digest{
	"",
	"sha256:xyz",
	"sha256:",
	"md5:d41d8cd98f00b204e9800998ecf8427e",
	"../../etc",
	"sha256:../../../../etc/passwd",
	digest.Digest("sha256:" + strings.Repeat("A", 64)),
	digest.Digest("sha256:" + strings.Repeat("a", 63)),
	digest.Digest("sha256:" + strings.Repeat("a", 64) + "/../x"),
	digest.Digest("sha512:" + strings.Repeat("a", 128)), // valid, but not stored
}

func TestMalformedDigests(t *testing.T) {
	s, root := openStore(t)
	stored := ingest(t, s, []byte("something")) // a non-empty store
	ops := []struct {
		name string
		op   func(d digest.Digest) error
	}{
		{"BlobPath", func(d digest.Digest) error { _, err := s.BlobPath(d); return err }},
		{"Open", func(d digest.Digest) error {
			r, err := s.Open(d)
			if err == nil {
				r.Close()
			}
			return err
		}},
		{"Stat", func(d digest.Digest) error { _, err := s.Stat(d); return err }},
		{"Delete", s.Delete},
		{"Quarantine", func(d digest.Digest) error { _, err := s.Quarantine(d); return err }},
		{"Lock", func(d digest.Digest) error {
			l, err := s.Lock(ctxT(t), d, true)
			l.Release()
			return err
		}},
		{"TryLock", func(d digest.Digest) error {
			l, _, err := s.TryLock(d, false)
			l.Release()
			return err
		}},
	}
	for _, op := range ops {
		for _, d := range malformed {
			t.Run(fmt.Sprintf("%s/%q", op.name, d), func(t *testing.T) {
				if err := op.op(d); !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("%s(%q) = %v, want ErrInvalid", op.name, d, err)
				}
			})
		}
	}
	if names := dirNames(t, filepath.Join(root, "locks")); !slices.Equal(names, []string{stored.Digest.Encoded() + ".lock"}) {
		t.Errorf("locks/ holds %v", names)
	}
	if names := dirNames(t, filepath.Join(root, "blobs", "sha256")); len(names) != 1 {
		t.Errorf("blobs/ holds %v", names)
	}
}

func TestUnknownDigest(t *testing.T) {
	s, _ := openStore(t)
	d := sha([]byte("never stored"))
	if _, err := s.Open(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Open = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Stat = %v, want ErrNotFound", err)
	}
	if err := s.Delete(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Delete = %v, want ErrNotFound", err)
	}
	if _, err := s.Quarantine(d); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Quarantine = %v, want ErrNotFound", err)
	}
}

func TestStatNotRegular(t *testing.T) {
	s, root := openStore(t)
	d := sha([]byte("a directory"))
	if err := os.Mkdir(blobFile(root, d), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(d); !errors.Is(err, errdefs.ErrIntegrity) {
		t.Fatalf("Stat of a directory = %v, want ErrIntegrity", err)
	}
}

func TestDelete(t *testing.T) {
	s, root := openStore(t)
	keep := ingest(t, s, []byte("keep"))
	gone := ingest(t, s, []byte("gone"))
	if err := s.Delete(gone.Digest); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := os.Lstat(blobFile(root, gone.Digest)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("blob after Delete: %v", err)
	}
	if _, err := s.Open(gone.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Open after Delete = %v", err)
	}
	if err := s.Delete(gone.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second Delete = %v", err)
	}
	if _, err := s.Stat(keep.Digest); err != nil {
		t.Fatalf("the other blob: %v", err)
	}
	// Deleted content can be ingested again.
	if again := ingest(t, s, []byte("gone")); again.Deduplicated {
		t.Fatal("re-ingest of deleted content was deduplicated")
	}
}

func TestQuarantine(t *testing.T) {
	s, root := openStore(t)
	data := randomData(10_000, 7)
	in := ingest(t, s, data)
	orig, err := os.ReadFile(blobFile(root, in.Digest))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := s.Quarantine(in.Digest)
	if err != nil {
		t.Fatalf("Quarantine: %v", err)
	}
	if filepath.Dir(dst) != filepath.Join(root, "quarantine") || !strings.HasPrefix(filepath.Base(dst), in.Digest.Encoded()) {
		t.Fatalf("quarantined to %s", dst)
	}
	moved, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(moved, orig) {
		t.Fatalf("quarantined file: %v (same bytes: %v)", err, bytes.Equal(moved, orig))
	}
	if _, err := s.Stat(in.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Stat after Quarantine = %v", err)
	}
	// The same digest can be quarantined again later without clobbering.
	ingest(t, s, data)
	dst2, err := s.Quarantine(in.Digest)
	if err != nil || dst2 == dst {
		t.Fatalf("second Quarantine = %s, %v (first %s)", dst2, err, dst)
	}
	if names := dirNames(t, filepath.Join(root, "quarantine")); len(names) != 2 {
		t.Fatalf("quarantine/ holds %v", names)
	}
}

func TestWalk(t *testing.T) {
	s, root := openStore(t)
	want := map[digest.Digest]int64{}
	for i := range 3 {
		in := ingest(t, s, randomData(1000*(i+1), uint64(10+i)))
		want[in.Digest] = in.Stored
	}
	blobs := filepath.Join(root, "blobs", "sha256")
	strays := []string{
		filepath.Join(blobs, "junk.txt"),
		filepath.Join(blobs, strings.Repeat("f", 64)+".tar"),
		filepath.Join(blobs, strings.Repeat("F", 64)+".tar.zst"),
		filepath.Join(blobs, strings.Repeat("e", 64)+".tar.zst"), // a directory
		filepath.Join(blobs, strings.Repeat("d", 64)+".tar.zst"), // a symlink
	}
	for _, p := range strays[:3] {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(strays[3], 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(blobFile(root, slices.Collect(maps.Keys(want))[0]), strays[4]); err != nil {
		t.Fatal(err)
	}

	got := map[digest.Digest]int64{}
	var gotStrays []string
	err := s.Walk(func(i cas.Info) error {
		if i.ModTime.IsZero() {
			t.Errorf("%s: no ModTime", i.Digest)
		}
		got[i.Digest] = i.Stored
		return nil
	}, func(p string) { gotStrays = append(gotStrays, p) })
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	if !maps.Equal(got, want) {
		t.Errorf("Walk listed %v, want %v", got, want)
	}
	slices.Sort(gotStrays)
	slices.Sort(strays)
	if !slices.Equal(gotStrays, strays) {
		t.Errorf("strays = %v, want %v", gotStrays, strays)
	}

	// A nil stray callback is fine; fn's error stops the walk.
	errStop := errors.New("stop")
	calls := 0
	if err := s.Walk(func(cas.Info) error { calls++; return errStop }, nil); !errors.Is(err, errStop) || calls != 1 {
		t.Fatalf("Walk with a failing fn = %v after %d calls", err, calls)
	}
}

func TestCleanTmp(t *testing.T) {
	s, root := openStore(t)
	tmp := filepath.Join(root, "tmp")
	write := func(name string, size int) string {
		t.Helper()
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A crashed ingest: data and lock, nobody holding the lock.
	crashedData := write("ingest-crashed.tar.zst", 1000)
	write("ingest-crashed.lock", 0)
	// A live ingest: its lock is held.
	liveData := write("ingest-live.tar.zst", 2000)
	live, err := lockfile.Acquire(ctxT(t), filepath.Join(tmp, "ingest-live.lock"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Release()
	// Data whose lock file is gone, and a lock file without data.
	orphanData := write("ingest-orphan.tar.zst", 300)
	write("ingest-nodata.lock", 0)
	// Not ours.
	write("README", 5)

	freed, removed, err := s.CleanTmp()
	if err != nil {
		t.Fatalf("CleanTmp: %v", err)
	}
	slices.Sort(removed)
	if want := []string{crashedData, orphanData}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if freed != 1300 {
		t.Errorf("freed %d bytes, want 1300", freed)
	}
	if got, want := dirNames(t, tmp), []string{"README", "ingest-live.lock", "ingest-live.tar.zst"}; !slices.Equal(got, want) {
		t.Errorf("tmp/ holds %v, want %v", got, want)
	}
	if _, err := os.Stat(liveData); err != nil {
		t.Fatalf("live ingest's data: %v", err)
	}

	// Once the live ingest is gone (crashed), the next clean takes it.
	live.Release()
	if _, removed, err := s.CleanTmp(); err != nil || !slices.Equal(removed, []string{liveData}) {
		t.Fatalf("second CleanTmp removed %v, %v", removed, err)
	}
	if got := dirNames(t, tmp); !slices.Equal(got, []string{"README"}) {
		t.Errorf("tmp/ holds %v", got)
	}
}

// TestCleanTmpSparesRunningIngest runs CleanTmp while a real ingest is
// blocked on its input.
func TestCleanTmpSparesRunningIngest(t *testing.T) {
	s, root := openStore(t)
	data := randomData(5<<20, 8)
	pr, pw := io.Pipe()
	type res struct {
		in  *cas.Ingested
		err error
	}
	done := make(chan res, 1)
	go func() {
		in, err := s.Ingest(ctxT(t), pr, nil)
		done <- res{in, err}
	}()
	if _, err := pw.Write(data[:1<<20]); err != nil {
		t.Fatal(err)
	}
	if _, removed, err := s.CleanTmp(); err != nil || len(removed) != 0 {
		t.Fatalf("CleanTmp during an ingest removed %v, %v", removed, err)
	}
	if names := dirNames(t, filepath.Join(root, "tmp")); len(names) != 2 {
		t.Fatalf("tmp/ during an ingest: %v", names)
	}
	if _, err := pw.Write(data[1<<20:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("Ingest: %v", r.err)
	}
	defer r.in.Release()
	if r.in.Digest != sha(data) {
		t.Fatal("wrong digest")
	}
	if got, err := readAll(t, s, r.in.Digest, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob after CleanTmp: %v", err)
	}
}

func TestCleanLocks(t *testing.T) {
	s, root := openStore(t)
	present := ingest(t, s, []byte("present"))
	absent := sha([]byte("absent"))
	held := sha([]byte("held"))
	locks := filepath.Join(root, "locks")
	for _, d := range []digest.Digest{present.Digest, absent} {
		l, err := s.Lock(ctxT(t), d, false)
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
	}
	hl, err := s.Lock(ctxT(t), held, false)
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Release()
	if err := os.WriteFile(filepath.Join(locks, "junk.lock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	removed, err := s.CleanLocks()
	if err != nil {
		t.Fatalf("CleanLocks: %v", err)
	}
	if removed != 1 {
		t.Errorf("removed %d lock files, want 1", removed)
	}
	want := []string{held.Encoded() + ".lock", "junk.lock", present.Digest.Encoded() + ".lock"}
	slices.Sort(want)
	if got := dirNames(t, locks); !slices.Equal(got, want) {
		t.Errorf("locks/ holds %v, want %v", got, want)
	}
	// The held lock still excludes.
	if l, ok, err := s.TryLock(held, true); ok || err != nil {
		l.Release()
		t.Fatalf("TryLock on the held lock = %v, %v", ok, err)
	}
}

func TestConcurrentIngestSameContent(t *testing.T) {
	s, root := openStore(t)
	data := randomData(4<<20+5, 9) // two frames
	const n = 8
	var wg sync.WaitGroup
	results := make([]*cas.Ingested, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			results[i], errs[i] = s.Ingest(ctxT(t), bytes.NewReader(data), nil)
		})
	}
	close(start)
	wg.Wait()
	want := sha(data)
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("ingest %d: %v", i, errs[i])
		}
		if results[i].Digest != want || results[i].Size != int64(len(data)) {
			t.Fatalf("ingest %d: %+v", i, results[i].Info)
		}
		results[i].Release()
	}
	if names := dirNames(t, filepath.Join(root, "blobs", "sha256")); !slices.Equal(names, []string{want.Encoded() + ".tar.zst"}) {
		t.Fatalf("blobs/ holds %v", names)
	}
	if names := dirNames(t, filepath.Join(root, "tmp")); len(names) != 0 {
		t.Fatalf("tmp/ holds %v", names)
	}
	if got, err := readAll(t, s, want, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob: %v", err)
	}
}

// TestConcurrentReadersAndGC: readers holding the shared lock keep a
// would-be deleter (TryLock exclusive, as gc does) away until they are done.
func TestConcurrentReadersAndGC(t *testing.T) {
	s, _ := openStore(t)
	data := randomData(1<<20, 11)
	in := ingest(t, s, data)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		l, err := s.Lock(ctxT(t), in.Digest, false)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer l.Release()
			got, err := readBlob(s, in.Digest, 64<<10)
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("wrong content")
			}
			errs <- err
		})
	}
	for {
		l, ok, err := s.TryLock(in.Digest, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			err := s.Delete(in.Digest)
			l.Release()
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
	}
}

// Readers hold a blob's lock shared; gc takes it exclusively without
// waiting and skips the blob when it cannot.
func ExampleStore_TryLock() {
	root, _ := os.MkdirTemp("", "cas-example")
	defer os.RemoveAll(root)
	s, _ := cas.Open(root)
	in, _ := s.Ingest(context.Background(), strings.NewReader("a docker save tarball"), nil)
	in.Release()

	reader, _ := s.Lock(context.Background(), in.Digest, false) // a reader
	_, ok, _ := s.TryLock(in.Digest, true)                      // gc
	fmt.Println("gc may delete while read:", ok)
	reader.Release()

	gc, ok, _ := s.TryLock(in.Digest, true)
	fmt.Println("gc may delete once read:", ok)
	gc.Release()
	// Output:
	// gc may delete while read: false
	// gc may delete once read: true
}

// TestIngestStoredPassesContentOn: the content reaches the content writer
// whole; a writer that fails ends the ingest with its own error (not an
// integrity verdict on the blob), and nothing is published.
func TestIngestStoredPassesContentOn(t *testing.T) {
	ctx := context.Background()
	dst, _ := openStore(t)
	data := bytes.Repeat([]byte("imgcache content "), 300000)
	in, stored := storedForm(t, data)
	var content bytes.Buffer
	got, err := dst.IngestStored(ctx, bytes.NewReader(stored), in.Digest, &content)
	if err != nil {
		t.Fatal(err)
	}
	got.Release()
	if !bytes.Equal(content.Bytes(), data) {
		t.Errorf("content writer got %d bytes, want the %d of the blob", content.Len(), len(data))
	}
	dst2, _ := openStore(t)
	refused := errors.New("the load ended")
	_, err = dst2.IngestStored(ctx, bytes.NewReader(stored), in.Digest, &failAfter{n: 1000, err: refused})
	if !errors.Is(err, refused) || errors.Is(err, errdefs.ErrIntegrity) {
		t.Errorf("failing content writer: %v; want its own error, not an integrity failure", err)
	}
	if _, err := dst2.Stat(in.Digest); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a blob whose content could not be passed on was published: %v", err)
	}
}

// storedForm ingests data into a store of its own and returns the blob
// and its stored bytes (what a remote serves).
func storedForm(t *testing.T, data []byte) (*cas.Ingested, []byte) {
	t.Helper()
	src, root := openStore(t)
	in, err := src.Ingest(context.Background(), bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	in.Release()
	stored, err := os.ReadFile(blobFile(root, in.Digest))
	if err != nil {
		t.Fatal(err)
	}
	return in, stored
}

// failAfter takes n bytes, then fails with err.
type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k := f.n
		f.n = 0
		return k, f.err
	}
	f.n -= len(p)
	return len(p), nil
}

// IngestStored keeps another store's zstd stream as it is, and refuses
// content other than it claims, or bytes that are no zstd stream.
func TestIngestStored(t *testing.T) {
	ctx := context.Background()
	dst, dstRoot := openStore(t)
	data := bytes.Repeat([]byte("imgcache "), 1<<20)
	in, stored := storedForm(t, data)
	got, err := dst.IngestStored(ctx, bytes.NewReader(stored), in.Digest, nil)
	if err != nil {
		t.Fatal(err)
	}
	got.Release()
	if kept, _ := os.ReadFile(blobFile(dstRoot, in.Digest)); !bytes.Equal(kept, stored) || got.Size != int64(len(data)) || got.Stored != int64(len(stored)) {
		t.Errorf("stored %d bytes (size %d), want the %d bytes as they were", got.Stored, got.Size, len(stored))
	}
	other := digest.FromString("other")
	if _, err := dst.IngestStored(ctx, bytes.NewReader(stored), other, nil); !errors.Is(err, errdefs.ErrIntegrity) {
		t.Errorf("wrong content: %v", err)
	}
	if _, err := dst.IngestStored(ctx, bytes.NewReader(data[:1000]), other, nil); !errors.Is(err, errdefs.ErrIntegrity) {
		t.Errorf("not zstd: %v", err)
	}
	if _, err := dst.Stat(other); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a refused blob was published: %v", err)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dstRoot, "tmp")); len(tmp) != 0 {
		t.Errorf("refused ingests left %d files in tmp/", len(tmp))
	}
}
