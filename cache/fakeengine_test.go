package cache_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/dockerbridge"
	"github.com/imgcache/imgcache/errdefs"
	"github.com/imgcache/imgcache/internal/testimage"
)

// fakeEngine is an in-memory container engine. It checks what it is sent as
// a daemon would, so a test cannot pass by a fake that accepts anything:
// Load reads the whole archive and commits nothing if the body fails, and
// refuses an archive whose manifest.json names a config or layer the tar
// does not hold; Build refuses a BASE_IMAGE it does not have.
type fakeEngine struct {
	t *testing.T

	mu     sync.Mutex
	images map[string]*fakeImage // by ID
	tags   map[string]string     // ref → ID
	os     string
	arch   string

	// What it was sent.
	loads  []fakeLoad
	builds []fakeBuild
	saves  []string
	closed bool

	// Behaviour.
	// classic makes it Docker's classic image store: an archive may leave
	// out the files of layers it holds (by chain ID). Otherwise it needs
	// every file, as Podman and the containerd store do.
	classic      bool
	chains       map[digest.Digest]bool // chain IDs of the layers it holds
	phantom      map[digest.Digest]bool // chains Layers reports that Load then lacks
	rejectLoads  error                  // returned by Load after reading the body
	connectErr   error                  // returned by the connect function
	inUse        map[string]bool
	dataRoot     string          // DataRoot's answer; "" = not local
	emulates     map[string]bool // architectures CanRun accepts besides its own
	loadStarted  chan struct{}   // closed at the first Load, if set
	releaseLoads chan struct{}   // Load waits for it, if set
}

type fakeImage struct {
	id       string
	tar      []byte
	os, arch string
	labels   map[string]string
	chains   []digest.Digest
}

// fakeLoad is one Load the engine committed or refused.
type fakeLoad struct {
	Digest    digest.Digest // sha256 of the bytes read
	Size      int64
	ImageID   string // "" when nothing was committed
	Layers    int
	Err       error
	Truncated bool // the body failed before its end
}

// fakeBuild is one Build call.
type fakeBuild struct {
	Opts  dockerbridge.BuildOptions
	Base  string            // BASE_IMAGE's value
	Files map[string]string // the context tar
	ID    string            // "" when the build failed
}

func newFakeEngine(t *testing.T) *fakeEngine {
	return &fakeEngine{t: t, images: map[string]*fakeImage{}, tags: map[string]string{}, os: "linux", arch: runtime.GOARCH, inUse: map[string]bool{},
		chains: map[digest.Digest]bool{}, phantom: map[digest.Digest]bool{}}
}

func (f *fakeEngine) Layers(context.Context) (dockerbridge.Layers, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.classic {
		return dockerbridge.Layers{Store: dockerbridge.StorePodman}, nil
	}
	l := dockerbridge.Layers{Partial: true, Store: dockerbridge.StoreClassic, Chains: maps.Clone(f.chains)}
	maps.Copy(l.Chains, f.phantom)
	return l, nil
}

// connect is the Options.Engine function.
func (f *fakeEngine) connect(context.Context) (cache.Engine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.connectErr != nil {
		return nil, f.connectErr
	}
	return f, nil
}

var _ cache.Engine = (*fakeEngine)(nil)

func (f *fakeEngine) Platform(context.Context) (string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.os, f.arch, nil
}

// resolve finds an image by ID or tag (also with docker.io/ in front); the
// caller holds mu.
func (f *fakeEngine) resolve(ref string) (*fakeImage, bool) {
	if img, ok := f.images[ref]; ok {
		return img, true
	}
	id, ok := f.tags[strings.TrimPrefix(ref, "docker.io/")]
	if !ok {
		return nil, false
	}
	return f.images[id], true
}

func (f *fakeEngine) tagsOf(id string) []string {
	var tags []string
	for ref, tid := range f.tags {
		if tid == id {
			tags = append(tags, ref)
		}
	}
	sort.Strings(tags)
	return tags
}

func (f *fakeEngine) Inspect(_ context.Context, ref string) (dockerbridge.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, ok := f.resolve(ref)
	if !ok {
		return dockerbridge.Image{}, fmt.Errorf("inspect %s: %w", ref, errdefs.ErrNotFound)
	}
	return dockerbridge.Image{ID: img.id, RepoTags: f.tagsOf(img.id), OS: img.os, Arch: img.arch, Size: int64(len(img.tar))}, nil
}

func (f *fakeEngine) Tag(_ context.Context, id, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, ok := f.resolve(id)
	if !ok {
		return fmt.Errorf("tag %s: %w", id, errdefs.ErrNotFound)
	}
	f.tags[ref] = img.id
	return nil
}

func (f *fakeEngine) Load(ctx context.Context, body io.Reader) ([]string, error) {
	return nil, f.load(ctx, body)
}

func (f *fakeEngine) load(ctx context.Context, body io.Reader) error {
	f.mu.Lock()
	started, release := f.loadStarted, f.releaseLoads
	f.loadStarted = nil
	f.mu.Unlock()
	if started != nil {
		close(started)
	}
	if release != nil {
		<-release
	}
	h := sha256.New()
	data, err := io.ReadAll(io.TeeReader(body, h))
	rec := fakeLoad{Digest: digest.NewDigest(digest.SHA256, h), Size: int64(len(data))}
	defer func() {
		f.mu.Lock()
		f.loads = append(f.loads, rec)
		f.mu.Unlock()
	}()
	if err != nil {
		// The request aborts: a daemon commits nothing.
		rec.Err, rec.Truncated = err, true
		return err
	}
	f.mu.Lock()
	have := maps.Clone(f.chains)
	if !f.classic {
		have = nil
	}
	f.mu.Unlock()
	img, layers, err := parseArchive(data, have)
	if err != nil {
		rec.Err = fmt.Errorf("%w: %w", errdefs.ErrRejected, err)
		return rec.Err
	}
	f.mu.Lock()
	reject := f.rejectLoads
	f.mu.Unlock()
	if reject != nil {
		rec.Err = reject
		return reject
	}
	if img.os != "" && img.os != f.os || img.arch != "" && img.arch != f.arch && !f.emulates[img.arch] {
		rec.Err = fmt.Errorf("%w: image is %s/%s", errdefs.ErrRejected, img.os, img.arch)
		return rec.Err
	}
	rec.ImageID, rec.Layers = img.id, layers
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[img.id] = img
	for _, c := range img.chains {
		f.chains[c] = true
	}
	return nil
}

// parseArchive checks a docker-archive the way a daemon's load does:
// manifest.json, and every config and layer it names present in the tar,
// but for layers whose chain is in have (Docker's classic store).
func parseArchive(data []byte, have map[digest.Digest]bool) (*fakeImage, int, error) {
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("not a tar: %w", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, 0, err
		}
		files[strings.TrimPrefix(hdr.Name, "./")] = b
	}
	raw, ok := files["manifest.json"]
	if !ok {
		return nil, 0, errors.New("no manifest.json in the archive")
	}
	var man []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(raw, &man); err != nil || len(man) != 1 {
		return nil, 0, fmt.Errorf("manifest.json: %v (%d images)", err, len(man))
	}
	cfg, ok := files[man[0].Config]
	if !ok {
		return nil, 0, fmt.Errorf("config %s is not in the archive", man[0].Config)
	}
	var c struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Config       struct {
			Labels map[string]string
		} `json:"config"`
		RootFS struct {
			DiffIDs []digest.Digest `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cfg, &c); err != nil {
		return nil, 0, fmt.Errorf("config: %w", err)
	}
	if len(c.RootFS.DiffIDs) != len(man[0].Layers) {
		return nil, 0, fmt.Errorf("%d layers, %d diff_ids", len(man[0].Layers), len(c.RootFS.DiffIDs))
	}
	chains := identity.ChainIDs(slices.Clone(c.RootFS.DiffIDs))
	for i, l := range man[0].Layers {
		b, ok := files[l]
		if zr, err := gzip.NewReader(bytes.NewReader(b)); ok && err == nil {
			// A compressed layer (an OCI archive's): the daemon decompresses
			// it and checks what it holds.
			if b, err = io.ReadAll(zr); err != nil {
				return nil, 0, fmt.Errorf("layer %s: %w", l, err)
			}
		}
		switch {
		case !ok && have[chains[i]]:
		case !ok && have != nil:
			return nil, 0, fmt.Errorf("open /var/lib/docker/tmp/docker-import-1/%s: no such file or directory", l)
		case !ok:
			return nil, 0, fmt.Errorf("layer %s is not in the archive", l)
		case digest.FromBytes(b) != c.RootFS.DiffIDs[i]:
			return nil, 0, fmt.Errorf("layer %s does not match its diff_id", l)
		}
	}
	return &fakeImage{id: digest.FromBytes(cfg).String(), tar: data, os: c.OS, arch: c.Architecture, labels: c.Config.Labels, chains: chains}, len(man[0].Layers), nil
}

func (f *fakeEngine) Save(_ context.Context, ref string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, ok := f.resolve(ref)
	if !ok {
		return nil, fmt.Errorf("save %s: %w", ref, errdefs.ErrNotFound)
	}
	f.saves = append(f.saves, ref)
	return io.NopCloser(bytes.NewReader(img.tar)), nil
}

// Build makes an image whose content depends on the base image, the context
// and the build args (the same inputs give the same image, as a layer cache
// would; NoCache gives a new one). A Dockerfile line "RUN false" fails the
// build at that step.
func (f *fakeEngine) Build(_ context.Context, contextTar io.Reader, opts dockerbridge.BuildOptions, progress io.Writer) (string, error) {
	files, err := readContext(contextTar)
	if err != nil {
		return "", err
	}
	rec := fakeBuild{Opts: opts, Files: files}
	if v := opts.BuildArgs[cache.BaseArg]; v != nil {
		rec.Base = *v
	}
	defer func() {
		f.mu.Lock()
		f.builds = append(f.builds, rec)
		f.mu.Unlock()
	}()
	df := opts.Dockerfile
	if df == "" {
		df = "Dockerfile"
	}
	lines := strings.Split(strings.TrimSpace(files[df]), "\n")
	if files[df] == "" {
		return "", fmt.Errorf("%w: no Dockerfile %s in the context", errdefs.ErrRejected, df)
	}
	f.mu.Lock()
	base, ok := f.resolve(rec.Base)
	f.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("%w: base image %q is not in the engine (it would be pulled)", errdefs.ErrRejected, rec.Base)
	}
	for i, l := range lines {
		step := fmt.Sprintf("Step %d/%d : %s", i+1, len(lines), l)
		fmt.Fprintln(progress, step)
		if strings.TrimSpace(l) == "RUN false" {
			return "", fmt.Errorf("%w: build failed at step %q: returned a non-zero code: 1", errdefs.ErrRejected, step)
		}
	}
	h := sha256.New()
	fmt.Fprintln(h, base.id)
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "%s\x00%s\x00", k, files[k])
	}
	for _, k := range slices.Sorted(maps.Keys(opts.BuildArgs)) {
		if k != cache.BaseArg && opts.BuildArgs[k] != nil {
			fmt.Fprintf(h, "%s=%s\x00", k, *opts.BuildArgs[k])
		}
	}
	f.mu.Lock()
	if opts.NoCache {
		fmt.Fprintln(h, len(f.builds))
	}
	f.mu.Unlock()
	seed := int64(binary.BigEndian.Uint64(h.Sum(nil)) >> 1)
	data, res, err := testimage.Bytes(testimage.Options{Seed: seed, OS: base.os, Architecture: base.arch})
	if err != nil {
		return "", err
	}
	img := &fakeImage{id: res.ImageID.String(), tar: data, os: base.os, arch: base.arch, labels: opts.Labels}
	f.mu.Lock()
	f.images[img.id] = img
	for _, t := range opts.Tags {
		f.tags[t] = img.id
	}
	f.mu.Unlock()
	rec.ID = img.id
	return img.id, nil
}

func readContext(r io.Reader) (map[string]string, error) {
	files := map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		files[hdr.Name] = string(b)
	}
}

func (f *fakeEngine) Remove(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, ok := f.resolve(ref)
	if !ok {
		return fmt.Errorf("remove %s: %w", ref, errdefs.ErrNotFound)
	}
	if f.inUse[img.id] {
		return fmt.Errorf("remove %s: image is being used by a container: %w", ref, errdefs.ErrRejected)
	}
	delete(f.tags, strings.TrimPrefix(ref, "docker.io/"))
	if len(f.tagsOf(img.id)) == 0 {
		delete(f.images, img.id)
	}
	return nil
}

func (f *fakeEngine) Images(context.Context) ([]dockerbridge.ImageSummary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []dockerbridge.ImageSummary
	for _, id := range slices.Sorted(maps.Keys(f.images)) {
		if tags := f.tagsOf(id); len(tags) > 0 {
			out = append(out, dockerbridge.ImageSummary{ID: id, RepoTags: tags, Size: int64(len(f.images[id].tar))})
		}
	}
	return out, nil
}

func (f *fakeEngine) CanRun(_ context.Context, goos, goarch string) (bool, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if goos == f.os && (goarch == f.arch || f.emulates[goarch]) {
		return true, "", nil
	}
	return false, "the fake engine does not emulate " + goarch, nil
}

func (f *fakeEngine) DataRoot(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dataRoot == "" {
		return "", fmt.Errorf("%w: the fake engine is not local", errdefs.ErrInvalid)
	}
	return f.dataRoot, nil
}

func (f *fakeEngine) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// Accessors for tests.

func (f *fakeEngine) committedLoads() []fakeLoad {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeLoad
	for _, l := range f.loads {
		if l.ImageID != "" {
			out = append(out, l)
		}
	}
	return out
}

func (f *fakeEngine) allLoads() []fakeLoad {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.loads)
}

func (f *fakeEngine) allBuilds() []fakeBuild {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.builds)
}

func (f *fakeEngine) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.images[id]
	return ok
}

func (f *fakeEngine) tagged(ref string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tags[ref]
}

// engineCache opens a cache in a fresh directory whose engine is a new fake.
func engineCache(t *testing.T) (*cache.Cache, *fakeEngine, *fakeClock) {
	t.Helper()
	return engineCacheIn(t, t.TempDir())
}

func engineCacheIn(t *testing.T, dir string) (*cache.Cache, *fakeEngine, *fakeClock) {
	t.Helper()
	wholeTar(t, dir)
	return engineAny(t, dir)
}

// engineAny is engineCacheIn on dir as it is (a new one becomes layered).
func engineAny(t *testing.T, dir string, tune ...func(*cache.Options)) (*cache.Cache, *fakeEngine, *fakeClock) {
	t.Helper()
	eng := newFakeEngine(t)
	clk := &fakeClock{now: t0}
	opt := baseOptions(t)
	opt.Now = clk.Now
	opt.Engine = eng.connect
	for _, f := range tune {
		f(&opt)
	}
	c, err := cache.Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, eng, clk
}
