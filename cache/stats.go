package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"

	"github.com/imgcache/imgcache/cas"
	"github.com/imgcache/imgcache/internal/fsutil"
	"github.com/imgcache/imgcache/internal/lockfile"
	"github.com/imgcache/imgcache/naming"
)

// Counters are the cache's running totals, kept in <dir>/stats.json beside
// the manifest and guarded by <dir>/stats.lock. They are updated best-effort:
// a failure to count never fails the operation.
type Counters struct {
	WarmHits          int64     `json:"warm_hits"`          // get found the image in the daemon
	Loads             int64     `json:"loads"`              // get loaded a verified blob
	Puts              int64     `json:"puts"`               // put and save ingests
	Exports           int64     `json:"exports"`            // export runs
	Evictions         int64     `json:"evictions"`          // names dropped by gc
	IntegrityFailures int64     `json:"integrity_failures"` // blobs that failed verification
	BytesIngested     int64     `json:"bytes_ingested"`     // uncompressed bytes put or saved
	BytesLoaded       int64     `json:"bytes_loaded"`       // archive bytes sent to the daemon
	BytesReclaimed    int64     `json:"bytes_reclaimed"`    // stored bytes gc deleted (blobs and dead ingests)
	RemotePushes      int64     `json:"remote_pushes"`      // entries pushed to the remote
	RemotePulls       int64     `json:"remote_pulls"`       // entries pulled from the remote
	RemoteFailures    int64     `json:"remote_failures"`    // pushes and pulls that failed (write-back warnings included)
	BytesPushed       int64     `json:"bytes_pushed"`       // stored bytes uploaded
	BytesPulled       int64     `json:"bytes_pulled"`       // stored bytes fetched
	Since             time.Time `json:"since"`              // when counting began
}

// StatsReport is the counters plus what the cache holds now.
type StatsReport struct {
	Dir         string   `json:"dir"`
	Counters    Counters `json:"counters"`
	Entries     int      `json:"entries"`
	Pinned      int      `json:"pinned"`
	Blobs       int      `json:"blobs"`        // blobs on disk: whole tars, skeletons and layers
	LayerBlobs  int      `json:"layer_blobs"`  // of which in the layer store
	StoredBytes int64    `json:"stored_bytes"` // bytes of all blobs on disk
	// SharedBytes is the stored bytes of blobs that more than one distinct
	// tar uses (layers of a common base): stored once, counted once here.
	SharedBytes int64 `json:"shared_bytes"`
	RawBytes    int64 `json:"raw_bytes"` // uncompressed bytes of the distinct tars entries name
	// Ratio is the stored bytes of the blobs entries use over RawBytes:
	// below the compression ratio when layers are shared.
	Ratio float64 `json:"compression_ratio"`
	// Daemon is what imgcache's images hold in the daemon, when the caller
	// asked it (DaemonUsage): Stats itself never reaches the daemon.
	Daemon DaemonUsage `json:"daemon"`
}

// DaemonUsage is what the images imgcache loaded hold in the daemon.
type DaemonUsage struct {
	Reachable bool `json:"reachable"` // false: not asked, or no daemon answered
	Images    int  `json:"images"`    // images carrying an imgcache tag
	// Bytes is the sum of those images' sizes as the daemon lists them:
	// layers they share are counted once per image, so it is an upper
	// bound of what removing them all would free.
	Bytes int64 `json:"bytes"`
}

// DaemonUsage asks the daemon which images carry imgcache's tags and how
// large they are.
func (c *Cache) DaemonUsage(ctx context.Context) (DaemonUsage, error) {
	b, err := c.docker(ctx)
	if err != nil {
		return DaemonUsage{}, err
	}
	imgs, err := b.Images(ctx)
	if err != nil {
		return DaemonUsage{}, err
	}
	u := DaemonUsage{Reachable: true}
	for _, img := range imgs {
		for _, ref := range img.RepoTags {
			if _, _, ok := naming.ParseRef(ref); ok {
				u.Images++
				u.Bytes += img.Size
				break
			}
		}
	}
	return u, nil
}

func (c *Cache) statsPath() string { return filepath.Join(c.dir, "stats.json") }

// count applies fn to the counters under their lock. Best-effort.
func (c *Cache) count(fn func(*Counters)) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l, err := lockfile.Acquire(ctx, filepath.Join(c.dir, "stats.lock"), true)
	if err != nil {
		c.opt.Log.Debug("stats not updated", "err", err)
		return
	}
	defer l.Release()
	cnt := c.readCounters()
	fn(&cnt)
	// Under stats.lock: a fixed temp name is safe.
	err = fsutil.WriteAtomic(c.statsPath(), c.statsPath()+".tmp", func(w io.Writer) error { return writeJSON(w, cnt) })
	if err != nil {
		c.opt.Log.Debug("stats not updated", "err", err)
	}
}

func (c *Cache) readCounters() Counters {
	var cnt Counters
	b, err := os.ReadFile(c.statsPath())
	if err == nil {
		err = json.Unmarshal(b, &cnt)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.opt.Log.Warn("stats.json unreadable; counting starts again", "err", err)
		cnt = Counters{}
	}
	if cnt.Since.IsZero() {
		cnt.Since = c.opt.Now().UTC()
	}
	return cnt
}

// Stats returns the counters and the cache's current contents. Not a use.
func (c *Cache) Stats(ctx context.Context) (*StatsReport, error) {
	m, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	rep := &StatsReport{Dir: c.dir, Counters: c.readCounters(), Entries: len(m.Entries)}
	raw := map[string]int64{}
	users := map[string]map[string]bool{} // blob key → the tars that use it
	for _, e := range m.Entries {
		raw[e.Digest.String()] = e.Size
		if e.Pinned {
			rep.Pinned++
		}
		head, parts := entryKeys(e)
		for _, k := range append(parts, head) {
			if users[k] == nil {
				users[k] = map[string]bool{}
			}
			users[k][e.Digest.String()] = true
		}
	}
	for _, n := range raw {
		rep.RawBytes += n
	}
	var storedNamed int64
	for _, store := range c.stores() {
		err = store.Walk(func(i cas.Info) error {
			key := c.blobKey(store, i.Digest)
			rep.Blobs++
			if store == c.layers {
				rep.LayerBlobs++
			}
			rep.StoredBytes += i.Stored
			if u := users[key]; len(u) > 0 {
				storedNamed += i.Stored
				if len(u) > 1 {
					rep.SharedBytes += i.Stored
				}
			}
			return nil
		}, nil)
		if err != nil {
			return nil, err
		}
	}
	if rep.RawBytes > 0 {
		rep.Ratio = float64(storedNamed) / float64(rep.RawBytes)
	}
	return rep, nil
}

// WritePrometheus writes the report in the Prometheus text exposition format
// (for node_exporter's textfile collector), encoded by prometheus/common's
// expfmt: label values are escaped as Prometheus requires. The dir label is
// the cache directory, made valid UTF-8 (a path is bytes; the format is text).
func WritePrometheus(w io.Writer, r *StatsReport) error {
	type metric struct {
		name string
		kind dto.MetricType
		help string
		val  float64
	}
	c := r.Counters
	counter, gauge := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	ms := []metric{
		{"imgcache_warm_hits_total", counter, "get calls that found the image already in the daemon", float64(c.WarmHits)},
		{"imgcache_loads_total", counter, "verified loads of a blob into the daemon", float64(c.Loads)},
		{"imgcache_puts_total", counter, "images ingested by put or save", float64(c.Puts)},
		{"imgcache_exports_total", counter, "exports of an original tar", float64(c.Exports)},
		{"imgcache_evictions_total", counter, "names evicted by gc", float64(c.Evictions)},
		{"imgcache_integrity_failures_total", counter, "blobs that failed verification", float64(c.IntegrityFailures)},
		{"imgcache_ingested_bytes_total", counter, "uncompressed bytes ingested", float64(c.BytesIngested)},
		{"imgcache_loaded_bytes_total", counter, "uncompressed archive bytes sent to the daemon (only the missing layers of a partial load)", float64(c.BytesLoaded)},
		{"imgcache_reclaimed_bytes_total", counter, "stored bytes reclaimed by gc", float64(c.BytesReclaimed)},
		{"imgcache_entries", gauge, "names in the cache", float64(r.Entries)},
		{"imgcache_pinned_entries", gauge, "pinned names", float64(r.Pinned)},
		{"imgcache_blobs", gauge, "blobs on disk", float64(r.Blobs)},
		{"imgcache_stored_bytes", gauge, "bytes of all blobs on disk", float64(r.StoredBytes)},
		{"imgcache_layer_blobs", gauge, "blobs in the layer store (skeletons and layers)", float64(r.LayerBlobs)},
		{"imgcache_shared_bytes", gauge, "stored bytes of blobs more than one distinct image uses", float64(r.SharedBytes)},
		{"imgcache_raw_bytes", gauge, "uncompressed bytes of the distinct tars the names hold", float64(r.RawBytes)},
		{"imgcache_compression_ratio", gauge, "stored bytes of the blobs names use over their raw bytes", r.Ratio},
	}
	if r.Daemon.Reachable { // unknown is left out, not written as 0
		ms = append(ms,
			metric{"imgcache_daemon_images", gauge, "images in the Docker daemon that carry an imgcache tag", float64(r.Daemon.Images)},
			metric{"imgcache_daemon_bytes", gauge, "sizes of those images as the daemon lists them (shared layers counted per image: an upper bound)", float64(r.Daemon.Bytes)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].name < ms[j].name })
	dir := strings.ToValidUTF8(r.Dir, "\uFFFD")
	label := []*dto.LabelPair{{Name: proto.String("dir"), Value: &dir}}
	for _, m := range ms {
		mf := &dto.MetricFamily{Name: proto.String(m.name), Help: proto.String(m.help), Type: m.kind.Enum()}
		val := m.val
		switch m.kind {
		case dto.MetricType_COUNTER:
			mf.Metric = []*dto.Metric{{Label: label, Counter: &dto.Counter{Value: &val}}}
		default:
			mf.Metric = []*dto.Metric{{Label: label, Gauge: &dto.Gauge{Value: &val}}}
		}
		if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
			return err
		}
	}
	return nil
}

// WritePrometheusFile writes the report to path atomically (temp file in the
// same directory, fsync, rename), as the textfile collector requires.
func WritePrometheusFile(path string, r *StatsReport) error {
	if err := fsutil.WriteOutput(path, true, func(w io.Writer) error { return WritePrometheus(w, r) }); err != nil {
		return fmt.Errorf("prometheus file: %w", err)
	}
	return nil
}
