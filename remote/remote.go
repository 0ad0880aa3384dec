// Package remote is imgcache's fleet tier: one repository of an OCI
// registry (CNCF Distribution, Harbor, a cloud registry) that many hosts
// push their cache entries to and pull them from.
//
// An entry is an OCI manifest (artifactType ArtifactEntry) whose config is
// the entry's record and whose layers are the blobs the entry is stored
// as (its skeleton and pieces, or its one whole tar), each as the zstd
// stream its host stored, annotated with the sha256 of what it holds. It
// is tagged with the cache name (a manifest of its own, annotated with the
// name) and with EntryTag(digest) (one without), so that moving or
// deleting a name never makes the content unreachable. Every blob also has
// a small manifest of its own, tagged BlobTag(content digest): a host
// looks a layer up by what it holds, so two hosts whose compressors make
// different bytes of one base layer still share one copy in the registry.
//
// The registry protocol, credentials (what `docker login` stores: config
// files and credential helpers), bearer and basic auth, retries and TLS are
// oras-go's; this package adds the format, the integrity checks and the
// mapping of failures to imgcache's error categories.
package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"

	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/manifest"
)

// Options configure a Registry.
type Options struct {
	// Repo is the repository, "host[:port]/path" (no tag), e.g.
	// 127.0.0.1:5000/ci/imgcache.
	Repo string
	// Insecure allows plain HTTP to a registry that is not on a loopback
	// address. A loopback registry gets HTTPS when it answers a TLS
	// handshake (or CAFile is set), else plain HTTP, as Docker allows.
	Insecure bool
	// CAFile is a PEM file of CA certificates trusted besides the system's.
	CAFile string
	// Timeout bounds each request until its response headers arrive and
	// each connection attempt; default 30s.
	Timeout time.Duration
	// Retries is how often a request that failed transiently (5xx, 429,
	// timeouts, resets) is retried, with exponential backoff; default 4.
	Retries int
	// UserAgent is sent with every request.
	UserAgent string
	// Log receives debug lines; default discards.
	Log *slog.Logger
}

// Registry is one repository of a registry.
type Registry struct {
	repo *orasremote.Repository
	name string // host/path, for messages
	host string
	log  *slog.Logger
}

// Open checks the options and prepares a client; it does not contact the
// registry.
func Open(opt Options) (*Registry, error) {
	ref, err := registry.ParseReference(opt.Repo)
	if err != nil || ref.Reference != "" {
		why := "it has a tag or digest"
		if err != nil {
			why = err.Error()
		}
		return nil, fmt.Errorf("%w: remote %q: %s; want host[:port]/repository, e.g. 127.0.0.1:5000/ci/imgcache", errdefs.ErrInvalid, opt.Repo, why)
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 30 * time.Second
	}
	if opt.Retries <= 0 {
		opt.Retries = 4
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	loop := isLoopback(ref.Registry)
	// Loopback registries may speak plain HTTP (as Docker allows them);
	// one that answers a TLS handshake gets HTTPS, its certificate checked.
	plain := (loop && opt.CAFile == "" && !speaksTLS(ref.Registry, opt.Timeout)) || opt.Insecure
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = opt.Timeout
	tr.TLSHandshakeTimeout = opt.Timeout
	tr.DialContext = (&net.Dialer{Timeout: opt.Timeout, KeepAlive: 30 * time.Second}).DialContext
	if opt.CAFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(opt.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: remote CA file: %w", errdefs.ErrInvalid, err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: remote CA file %s holds no PEM certificate", errdefs.ErrInvalid, opt.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	policy := &retry.GenericPolicy{
		Retryable: retry.DefaultPredicate,
		Backoff:   retry.DefaultBackoff,
		MinWait:   200 * time.Millisecond,
		MaxWait:   3 * time.Second,
		MaxRetry:  opt.Retries,
	}
	store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: docker credentials (config.json): %w", errdefs.ErrInvalid, err)
	}
	client := &auth.Client{
		Client:     &http.Client{Transport: &retry.Transport{Base: tr, Policy: func() retry.Policy { return policy }}},
		Credential: credentials.Credential(store),
		Cache:      auth.NewCache(),
	}
	if loop {
		// A token service beside a loopback registry is on loopback too.
		client.BlockedRealmPrefixes = slices.DeleteFunc(auth.DefaultBlockedRealmPrefixes(), func(p netip.Prefix) bool {
			return p.Addr().IsLoopback()
		})
	}
	if opt.UserAgent != "" {
		client.SetUserAgent(opt.UserAgent)
	}
	repo := &orasremote.Repository{
		Client:             client,
		Reference:          ref,
		PlainHTTP:          plain,
		ManifestMediaTypes: []string{ocispec.MediaTypeImageManifest},
		TagListPageSize:    1000,
		MaxMetadataBytes:   4 << 20,
	}
	repo.SetReferrersCapability(false)
	return &Registry{repo: repo, name: ref.Registry + "/" + ref.Repository, host: ref.Registry, log: opt.Log}, nil
}

// String is the repository, host/path.
func (r *Registry) String() string { return r.name }

// speaksTLS reports whether hostport completes a TLS handshake (nothing
// is sent over it; the certificate is checked by the real requests).
func speaksTLS(hostport string, timeout time.Duration) bool {
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), "443")
	}
	d := &net.Dialer{Timeout: min(timeout, 5*time.Second)}
	conn, err := tls.DialWithDialer(d, "tcp", hostport, &tls.Config{InsecureSkipVerify: true}) // a probe only
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func isLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// fail maps err to imgcache's categories, saying what was done to what and
// at which registry.
func (r *Registry) fail(err error, what string) error {
	if err == nil {
		return nil
	}
	var er *errcode.ErrorResponse
	var ne net.Error
	var ue *url.Error
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s at %s: %w", what, r.name, err)
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return fmt.Errorf("%s at %s: %w: it asks for credentials and docker has none stored for %s: log in with `docker login %s` (imgcache reads the credentials docker stores)", what, r.name, errdefs.ErrRemoteAuth, r.host, r.host)
	case errors.As(err, &er) && (er.StatusCode == http.StatusUnauthorized || er.StatusCode == http.StatusForbidden):
		return fmt.Errorf("%s at %s: %w (HTTP %d): log in with `docker login %s` (imgcache reads the credentials docker stores): %v", what, r.name, errdefs.ErrRemoteAuth, er.StatusCode, r.host, err)
	case errors.As(err, &er) && er.StatusCode == http.StatusNotFound, errors.Is(err, errdef.ErrNotFound):
		return fmt.Errorf("%s at %s: %w", what, r.name, errdefs.ErrNotFound)
	case errors.As(err, &er) && (er.StatusCode >= 500 || er.StatusCode == http.StatusTooManyRequests || er.StatusCode == http.StatusRequestTimeout):
		return fmt.Errorf("%s at %s: %w: HTTP %d after retries: %v", what, r.name, errdefs.ErrRemote, er.StatusCode, err)
	case errors.Is(err, errdefs.ErrIntegrity), errors.Is(err, errdefs.ErrInvalid), errors.Is(err, errdefs.ErrNewerSchema):
		return fmt.Errorf("%s at %s: %w", what, r.name, err)
	case errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci):
		return fmt.Errorf("%s at %s: %w: its TLS certificate is not trusted here (give its CA with --remote-ca FILE, or install it in the system's roots): %v", what, r.name, errdefs.ErrRemote, err)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne), errors.As(err, &ue),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s at %s: %w: %v", what, r.name, errdefs.ErrRemote, err)
	case errors.As(err, &er) && er.StatusCode == http.StatusMethodNotAllowed:
		return fmt.Errorf("%s at %s: the registry does not allow it (HTTP 405; Distribution: storage.delete.enabled): %w", what, r.name, err)
	}
	return fmt.Errorf("%s at %s: %w", what, r.name, err)
}

// ErrBlobUnknown: the registry refused a manifest because a blob it
// references is missing (its gc ran since the blob was found).
var ErrBlobUnknown = errors.New("registry lacks a blob the manifest references")

func blobUnknown(err error) bool {
	var er *errcode.ErrorResponse
	if !errors.As(err, &er) {
		return false
	}
	for _, e := range er.Errors {
		if e.Code == "BLOB_UNKNOWN" || e.Code == "MANIFEST_BLOB_UNKNOWN" {
			return true
		}
	}
	return false
}

// Ping checks that the registry answers and accepts the credentials.
func (r *Registry) Ping(ctx context.Context) error {
	err := r.repo.Tags(ctx, "", func([]string) error { return errStop })
	if errors.Is(err, errStop) || err == nil {
		return nil
	}
	var er *errcode.ErrorResponse
	if errors.As(err, &er) && er.StatusCode == http.StatusNotFound {
		return nil // an empty repository
	}
	return r.fail(err, "list tags")
}

var errStop = errors.New("stop")

// maxManifest bounds manifests and records read into memory.
const maxManifest = 4 << 20

// fetchManifest reads the manifest tag (or digest) names, verified against
// its digest.
func (r *Registry) fetchManifest(ctx context.Context, reference string) (ocispec.Descriptor, []byte, error) {
	desc, rc, err := r.repo.Manifests().FetchReference(ctx, reference)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	defer rc.Close()
	b, err := readVerified(rc, desc, maxManifest)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return desc, b, nil
}

// readVerified reads a small blob or manifest whole and checks its digest.
func readVerified(r io.Reader, desc ocispec.Descriptor, limit int64) ([]byte, error) {
	if desc.Size > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than %d", errdefs.ErrIntegrity, desc.Digest, desc.Size, limit)
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: descriptor digest %q: %v", errdefs.ErrIntegrity, desc.Digest, err)
	}
	if got := desc.Digest.Algorithm().FromBytes(b); got != desc.Digest || int64(len(b)) != desc.Size {
		return nil, fmt.Errorf("%w: %s: the registry sent %d bytes of digest %s", errdefs.ErrIntegrity, desc.Digest, len(b), got)
	}
	return b, nil
}

// FindBlob is the registry's blob holding content u: the one its blob tag
// names, if that blob is still there.
func (r *Registry) FindBlob(ctx context.Context, u digest.Digest) (ocispec.Descriptor, bool, error) {
	_, b, err := r.fetchManifest(ctx, BlobTag(u))
	if errors.Is(err, errdef.ErrNotFound) {
		return ocispec.Descriptor{}, false, nil
	}
	if err != nil {
		return ocispec.Descriptor{}, false, r.fail(err, "look up blob "+u.String())
	}
	m, err := parseManifest(b, ArtifactBlob, "blob manifest "+BlobTag(u))
	if err != nil {
		return ocispec.Descriptor{}, false, r.fail(err, "look up blob "+u.String())
	}
	if len(m.Layers) != 1 || ContentOf(m.Layers[0]) != u {
		return ocispec.Descriptor{}, false, r.fail(fmt.Errorf("%w: blob manifest %s does not describe %s", errdefs.ErrIntegrity, BlobTag(u), u), "look up blob")
	}
	ok, err := r.repo.Blobs().Exists(ctx, m.Layers[0])
	if err != nil {
		return ocispec.Descriptor{}, false, r.fail(err, "check blob "+m.Layers[0].Digest.String())
	}
	return m.Layers[0], ok, nil
}

// BlobDescriptor describes a stored blob: size stored bytes of sha256
// stored, holding usize bytes of content u.
func BlobDescriptor(stored digest.Digest, size int64, u digest.Digest, usize int64) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: MediaBlob,
		Digest:    stored,
		Size:      size,
		Annotations: map[string]string{
			AnnContent:     u.String(),
			AnnContentSize: strconv.FormatInt(usize, 10),
		},
	}
}

// PushBlob uploads the blob desc describes from open (unless the registry
// says it has those bytes, and force is false), then its blob manifest.
// It reports whether bytes were sent.
func (r *Registry) PushBlob(ctx context.Context, desc ocispec.Descriptor, open func() (io.ReadCloser, error), force bool) (bool, error) {
	u := ContentOf(desc)
	what := "push blob " + u.String()
	sent := false
	ok := false
	if !force {
		var err error
		if ok, err = r.repo.Blobs().Exists(ctx, desc); err != nil {
			return false, r.fail(err, what)
		}
	}
	if !ok {
		rc, err := open()
		if err != nil {
			return false, err
		}
		err = r.repo.Blobs().Push(ctx, desc, rc)
		rc.Close()
		if err != nil {
			return false, r.fail(err, what)
		}
		sent = true
	}
	if err := r.pushManifest(ctx, ArtifactBlob, ocispec.DescriptorEmptyJSON, nil, []ocispec.Descriptor{desc}, nil, BlobTag(u)); err != nil {
		return sent, r.fail(err, what)
	}
	return sent, nil
}

// pushManifest pushes the config (configData; the OCI empty descriptor's
// own for that one) unless the registry has it, then a manifest of
// artifact type artifact with the layers and annotations, tagged tag.
func (r *Registry) pushManifest(ctx context.Context, artifact string, config ocispec.Descriptor, configData []byte, layers []ocispec.Descriptor, ann map[string]string, tag string) error {
	if config.Digest == ocispec.DescriptorEmptyJSON.Digest {
		configData = ocispec.DescriptorEmptyJSON.Data
		config.Data = nil
	}
	ok, err := r.repo.Blobs().Exists(ctx, config)
	if err != nil {
		return err
	}
	if !ok {
		if err := r.repo.Blobs().Push(ctx, config, bytes.NewReader(configData)); err != nil {
			return err
		}
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifact,
		Config:       config,
		Layers:       layers,
		Annotations:  ann,
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(b), Size: int64(len(b))}
	err = r.repo.Manifests().PushReference(ctx, desc, bytes.NewReader(b), tag)
	if blobUnknown(err) {
		return fmt.Errorf("%w: %w", ErrBlobUnknown, err)
	}
	return err
}

// OpenBlob streams a blob's content, uncompressed. The read that reaches
// the end fails with an error wrapping errdefs.ErrIntegrity if the bytes
// the registry sent do not match desc's digest, or what they hold does not
// match its content digest.
func (r *Registry) OpenBlob(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	u, err := contentOf(desc)
	if err != nil {
		return nil, r.fail(err, "fetch blob")
	}
	rc, err := r.repo.Blobs().Fetch(ctx, desc)
	if err != nil {
		return nil, r.fail(err, "fetch blob "+desc.Digest.String())
	}
	raw := &hashingReader{r: rc, h: sha256.New()}
	dec, err := zstd.NewReader(raw, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(1<<30))
	if err != nil {
		rc.Close()
		return nil, err
	}
	return &blobReader{reg: r, rc: rc, raw: raw, dec: dec, desc: desc, content: u, h: sha256.New()}, nil
}

// FetchStored streams a blob's bytes as the registry holds them (one zstd
// stream); the read that reaches the end fails with an error wrapping
// errdefs.ErrIntegrity if they do not match desc.
func (r *Registry) FetchStored(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if _, err := contentOf(desc); err != nil {
		return nil, r.fail(err, "fetch blob")
	}
	rc, err := r.repo.Blobs().Fetch(ctx, desc)
	if err != nil {
		return nil, r.fail(err, "fetch blob "+desc.Digest.String())
	}
	return &storedReader{reg: r, rc: rc, raw: &hashingReader{r: rc, h: sha256.New()}, desc: desc}, nil
}

type storedReader struct {
	reg  *Registry
	rc   io.ReadCloser
	raw  *hashingReader
	desc ocispec.Descriptor
}

func (s *storedReader) Read(p []byte) (int, error) {
	n, err := s.raw.Read(p)
	switch {
	case err == io.EOF:
		if got := digest.NewDigest(digest.SHA256, s.raw.h); got != s.desc.Digest || s.raw.n != s.desc.Size {
			return n, s.reg.fail(fmt.Errorf("%w: blob %s: the registry sent %d bytes of sha256 %s", errdefs.ErrIntegrity, s.desc.Digest, s.raw.n, got), "fetch blob")
		}
	case err != nil:
		err = s.reg.fail(err, "fetch blob "+s.desc.Digest.String())
	case s.raw.n > s.desc.Size:
		err = s.reg.fail(fmt.Errorf("%w: blob %s: the registry sent more than its %d bytes", errdefs.ErrIntegrity, s.desc.Digest, s.desc.Size), "fetch blob")
	}
	return n, err
}

func (s *storedReader) Close() error { return s.rc.Close() }

type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

type blobReader struct {
	reg     *Registry
	rc      io.ReadCloser
	raw     *hashingReader
	dec     *zstd.Decoder
	desc    ocispec.Descriptor
	content digest.Digest
	h       hash.Hash
	err     error
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.dec.Read(p)
	b.h.Write(p[:n])
	if err == io.EOF {
		err = b.check()
	} else if err != nil {
		if !errors.Is(err, errdefs.ErrIntegrity) && b.raw.n == b.desc.Size {
			// The registry's bytes were all there: the zstd stream is bad.
			err = fmt.Errorf("%w: blob %s is not a valid zstd stream: %v", errdefs.ErrIntegrity, b.desc.Digest, err)
		}
		err = b.reg.fail(err, "fetch blob "+b.desc.Digest.String())
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// check runs at the end of the content: both digests must match.
func (b *blobReader) check() error {
	io.Copy(io.Discard, b.raw) // a zstd stream ends before any trailing bytes
	if got := digest.NewDigest(digest.SHA256, b.raw.h); got != b.desc.Digest || b.raw.n != b.desc.Size {
		return b.reg.fail(fmt.Errorf("%w: blob %s: the registry sent %d bytes of sha256 %s", errdefs.ErrIntegrity, b.desc.Digest, b.raw.n, got), "fetch blob")
	}
	if got := digest.NewDigest(digest.SHA256, b.h); got != b.content {
		return b.reg.fail(fmt.Errorf("%w: blob %s holds content of sha256 %s where its manifest says %s", errdefs.ErrIntegrity, b.desc.Digest, got, b.content), "fetch blob")
	}
	return io.EOF
}

func (b *blobReader) Close() error {
	b.dec.Close()
	return b.rc.Close()
}

// Entry is an entry as the registry holds it.
type Entry struct {
	Tag      string
	Manifest ocispec.Descriptor   // the tag's manifest
	Record   manifest.Entry       // as its pushing host recorded it
	Blobs    []ocispec.Descriptor // the stored blobs, in LayerBlobs order
}

// Resolve reads the entry tag names (a cache name, or EntryTag), its
// manifest and record verified. ErrNotFound when there is no such tag.
func (r *Registry) Resolve(ctx context.Context, tag string) (*Entry, error) {
	what := "resolve " + tag
	desc, b, err := r.fetchManifest(ctx, tag)
	if err != nil {
		return nil, r.fail(err, what)
	}
	m, err := parseManifest(b, ArtifactEntry, "manifest of "+tag)
	if err != nil {
		return nil, r.fail(err, what)
	}
	if err := checkMediaType(m.Config.MediaType, MediaRecord, "record of "+tag); err != nil {
		return nil, r.fail(err, what)
	}
	rc, err := r.repo.Blobs().Fetch(ctx, m.Config)
	if err != nil {
		return nil, r.fail(err, what+": record "+m.Config.Digest.String())
	}
	rb, err := readVerified(rc, m.Config, maxManifest)
	rc.Close()
	if err != nil {
		return nil, r.fail(err, what+": record")
	}
	e, err := parseRecord(rb, "record of "+tag)
	if err != nil {
		return nil, r.fail(err, what)
	}
	if want := m.Annotations[AnnEntry]; want != e.Digest.String() {
		return nil, r.fail(fmt.Errorf("%w: manifest of %s says entry %s, its record %s", errdefs.ErrIntegrity, tag, want, e.Digest), what)
	}
	if err := checkBlobs(e, m.Layers); err != nil {
		return nil, r.fail(fmt.Errorf("manifest of %s: %w", tag, err), what)
	}
	return &Entry{Tag: tag, Manifest: desc, Record: e, Blobs: m.Layers}, nil
}

// checkBlobs: the manifest's blobs are the ones the record says it is stored as.
func checkBlobs(e manifest.Entry, blobs []ocispec.Descriptor) error {
	want := e.LayerBlobs()
	if !e.Split() {
		want = []digest.Digest{e.Digest}
	}
	if len(blobs) != len(want) {
		return fmt.Errorf("%w: %d blobs where the record needs %d", errdefs.ErrIntegrity, len(blobs), len(want))
	}
	for i, b := range blobs {
		if ContentOf(b) != want[i] {
			return fmt.Errorf("%w: blob %d holds %s where the record needs %s", errdefs.ErrIntegrity, i, ContentOf(b), want[i])
		}
	}
	return nil
}

// PushEntry pushes e's record and its digest's manifest (tagged
// EntryTag) over blobs, already pushed. ErrBlobUnknown when the registry
// lacks one of them.
func (r *Registry) PushEntry(ctx context.Context, e manifest.Entry, blobs []ocispec.Descriptor) error {
	config, rec, ann, err := entryManifest(e, blobs)
	if err != nil {
		return err
	}
	return r.fail(r.pushManifest(ctx, ArtifactEntry, config, rec, blobs, ann, EntryTag(e.Digest)), "push "+e.Digest.String())
}

// TagName pushes the name's own manifest of e (annotated with the name),
// tagged name. ErrBlobUnknown when the registry lacks a blob.
func (r *Registry) TagName(ctx context.Context, name string, e manifest.Entry, blobs []ocispec.Descriptor) (ocispec.Descriptor, error) {
	what := "push " + name
	config, rec, ann, err := entryManifest(e, blobs)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	ann[AnnName] = name
	if err := r.pushManifest(ctx, ArtifactEntry, config, rec, blobs, ann, name); err != nil {
		return ocispec.Descriptor{}, r.fail(err, what)
	}
	desc, err := r.repo.Manifests().Resolve(ctx, name)
	if err != nil {
		return ocispec.Descriptor{}, r.fail(err, what)
	}
	return desc, nil
}

// entryManifest is the record blob and annotations of e's manifests.
func entryManifest(e manifest.Entry, blobs []ocispec.Descriptor) (ocispec.Descriptor, []byte, map[string]string, error) {
	if err := checkBlobs(e, blobs); err != nil {
		return ocispec.Descriptor{}, nil, nil, err
	}
	rec, err := json.Marshal(newRecord(e))
	if err != nil {
		return ocispec.Descriptor{}, nil, nil, err
	}
	config := ocispec.Descriptor{MediaType: MediaRecord, Digest: digest.FromBytes(rec), Size: int64(len(rec))}
	ann := map[string]string{AnnEntry: e.Digest.String(), AnnSize: strconv.FormatInt(e.Size, 10)}
	return config, rec, ann, nil
}

// Delete removes the name tag's manifest (only that name's: the digest's
// manifest and the blobs stay, for the registry's own gc).
func (r *Registry) Delete(ctx context.Context, name string) error {
	what := "remove " + name
	desc, b, err := r.fetchManifest(ctx, name)
	if err != nil {
		return r.fail(err, what)
	}
	m, err := parseManifest(b, ArtifactEntry, "manifest of "+name)
	if err != nil {
		return r.fail(err, what)
	}
	if m.Annotations[AnnName] != name {
		return r.fail(fmt.Errorf("%w: the manifest tagged %s is annotated with name %q; not deleting it", errdefs.ErrInvalid, name, m.Annotations[AnnName]), what)
	}
	return r.fail(r.repo.Manifests().Delete(ctx, desc), what)
}

// Listed is one name the registry holds.
type Listed struct {
	Name     string        `json:"name"`
	Digest   digest.Digest `json:"digest"`   // the entry's (its tar's sha256)
	Size     int64         `json:"size"`     // the tar's bytes
	Stored   int64         `json:"stored"`   // the compressed bytes of its blobs, shared ones included
	Manifest digest.Digest `json:"manifest"` // the name's manifest
}

// List reads every name tag and its manifest.
func (r *Registry) List(ctx context.Context) ([]Listed, error) {
	var tags []string
	err := r.repo.Tags(ctx, "", func(page []string) error {
		for _, t := range page {
			if IsNameTag(t) {
				tags = append(tags, t)
			}
		}
		return nil
	})
	var er *errcode.ErrorResponse
	if errors.As(err, &er) && er.StatusCode == http.StatusNotFound {
		return nil, nil // nothing pushed yet
	}
	if err != nil {
		return nil, r.fail(err, "list tags")
	}
	slices.Sort(tags)
	out := make([]Listed, 0, len(tags))
	for _, t := range tags {
		desc, b, err := r.fetchManifest(ctx, t)
		if errors.Is(err, errdef.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, r.fail(err, "read "+t)
		}
		m, err := parseManifest(b, ArtifactEntry, "manifest of "+t)
		if err != nil {
			r.log.Warn("not an imgcache entry; skipped", "tag", t, "err", err)
			continue
		}
		l := Listed{Name: t, Digest: digest.Digest(m.Annotations[AnnEntry]), Manifest: desc.Digest}
		l.Size, _ = strconv.ParseInt(m.Annotations[AnnSize], 10, 64)
		for _, b := range m.Layers {
			l.Stored += b.Size
		}
		out = append(out, l)
	}
	return out, nil
}
