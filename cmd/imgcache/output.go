package main

import (
	"fmt"
	"strings"
	"time"

	units "github.com/docker/go-units"

	"github.com/imgcache/imgcache/cache"
	"github.com/imgcache/imgcache/lru"
	"github.com/imgcache/imgcache/manifest"
)

// The CLI's JSON output types. They are the command contract (the README
// and the golden shapes in testdata/); the on-disk manifest (manifest.Entry)
// may change without changing them.

// entryOutput is one entry, as ls, inspect, put, save, get and build print it.
type entryOutput struct {
	Name           string        `json:"name"`
	Digest         string        `json:"digest"`
	Size           int64         `json:"size"`
	StoredSize     int64         `json:"stored_size"`
	Format         string        `json:"format"`
	ImageID        string        `json:"image_id"`
	RepoTags       []string      `json:"repo_tags,omitempty"`
	OS             string        `json:"os"`
	Arch           string        `json:"arch"`
	Variant        string        `json:"arch_variant"`
	MetadataOffset int64         `json:"metadata_offset"`
	Created        time.Time     `json:"created,omitzero"`
	Added          time.Time     `json:"added"`
	LastUsed       time.Time     `json:"last_used"`
	Pinned         bool          `json:"pinned"`
	Base           *baseOutput   `json:"base"`
	Recipe         *recipeOutput `json:"recipe"`
	// How the tar is stored: "split" (skeleton and pieces in the layer
	// store) or "whole" (one blob); Whole says why a layered cache stores
	// it whole.
	Layout   string        `json:"layout"`
	Whole    string        `json:"whole,omitempty"`
	Skeleton *blobOutput   `json:"skeleton,omitempty"`
	Pieces   []blobOutput  `json:"pieces,omitempty"`
	Layers   []layerOutput `json:"layers,omitempty"`
	Usage    *cache.Usage  `json:"usage,omitempty"` // ls and inspect: own and shared stored bytes
}

type blobOutput struct {
	Digest     string `json:"digest"`
	Size       int64  `json:"size"`
	StoredSize int64  `json:"stored_size"`
}

type layerOutput struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	DiffID    string `json:"diff_id"`
	MediaType string `json:"media_type"`
	Path      string `json:"path"`
}

type baseOutput struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
}

type recipeOutput struct {
	Dockerfile string            `json:"dockerfile"`
	Context    string            `json:"context"`
	BuildArgs  map[string]string `json:"build_args,omitempty"`
}

func entryJSON(e manifest.Entry) entryOutput {
	o := entryOutput{
		Name: e.Name, Digest: e.Digest.String(), Size: e.Size, StoredSize: e.StoredSize, Format: e.Format,
		ImageID: e.ImageID, RepoTags: e.RepoTags, OS: e.OS, Arch: e.Arch, Variant: e.Variant,
		MetadataOffset: e.MetadataOffset, Created: e.Created, Added: e.Added, LastUsed: e.LastUsed, Pinned: e.Pinned,
	}
	if e.Base != nil {
		o.Base = &baseOutput{Name: e.Base.Name, Digest: e.Base.Digest.String()}
	}
	if e.Recipe != nil {
		o.Recipe = &recipeOutput{Dockerfile: e.Recipe.Dockerfile, Context: e.Recipe.Context, BuildArgs: e.Recipe.BuildArgs}
	}
	o.Layout, o.Whole = "whole", e.Whole
	if e.Split() {
		o.Layout = "split"
		o.Skeleton = &blobOutput{Digest: e.Skeleton.Digest.String(), Size: e.Skeleton.Size, StoredSize: e.Skeleton.StoredSize}
		for _, p := range e.Pieces {
			o.Pieces = append(o.Pieces, blobOutput{Digest: p.Digest.String(), Size: p.Size, StoredSize: p.StoredSize})
		}
		for _, l := range e.Layers {
			o.Layers = append(o.Layers, layerOutput{Digest: l.Digest.String(), Size: l.Size, DiffID: l.DiffID.String(), MediaType: l.MediaType, Path: l.Path})
		}
	}
	return o
}

func entriesJSON(es []manifest.Entry) []entryOutput {
	out := make([]entryOutput, len(es))
	usage := cache.Usages(es)
	for i, e := range es {
		out[i] = entryJSON(e)
		u := usage[e.Name]
		out[i].Usage = &u
	}
	return out
}

// gcOutput is gc --json: the report, with the shortfalls as the CLI says
// them ("Limit", "Missing" and "Why", the first round's keys, and the
// structured parts).
type gcOutput struct {
	*cache.GCReport
	Shortfalls []shortfallOutput `json:"shortfalls"`
}

type shortfallOutput struct {
	Limit   string   `json:"Limit"`
	Missing int64    `json:"Missing"`
	Why     string   `json:"Why"`
	Pinned  lru.Held `json:"pinned"`
	InUse   lru.Held `json:"in_use"`
	Recent  lru.Held `json:"recent"`
	Shared  lru.Held `json:"shared"`
	Other   lru.Held `json:"other"`
	Outside int64    `json:"outside"`
}

func gcJSON(rep *cache.GCReport) gcOutput {
	o := gcOutput{GCReport: rep, Shortfalls: []shortfallOutput{}}
	for _, s := range rep.Shortfalls {
		o.Shortfalls = append(o.Shortfalls, shortfallOutput{Limit: s.Limit, Missing: s.Missing, Why: shortfallWhy(s),
			Pinned: s.Pinned, InUse: s.InUse, Recent: s.Recent, Shared: s.Shared, Other: s.Other, Outside: s.Outside})
	}
	return o
}

// shortfallWhy says what holds the bytes a gc target missed, e.g. "2 pinned
// blobs hold 12GiB and 1 in-use blob holds 512MiB".
func shortfallWhy(s lru.Shortfall) string {
	var parts []string
	for _, h := range []struct {
		what, note string
		held       lru.Held
	}{
		{"pinned", "", s.Pinned},
		{"in-use", "", s.InUse},
		{"recently used or held", " (--min-age, get --hold)", s.Recent},
		{"shared-layer", " (evicting them frees none of their layers)", s.Shared},
		{"other", "", s.Other},
	} {
		switch h.held.Blobs {
		case 0:
		case 1:
			parts = append(parts, fmt.Sprintf("1 %s blob holds %s%s", h.what, units.BytesSize(float64(h.held.Bytes)), h.note))
		default:
			parts = append(parts, fmt.Sprintf("%d %s blobs hold %s%s", h.held.Blobs, h.what, units.BytesSize(float64(h.held.Bytes)), h.note))
		}
	}
	if len(parts) == 0 {
		return "the cache holds nothing more to evict; the space is used outside the cache"
	}
	msg := strings.Join(parts, " and ")
	if s.Outside > 0 {
		msg += fmt.Sprintf("; even without them %s would be missing (used outside the cache)", units.BytesSize(float64(s.Outside)))
	}
	return msg
}
