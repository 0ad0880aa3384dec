// Package archive reads the metadata of Docker image archives: the
// docker-archive written by `docker save` (manifest.json, <config>.json,
// <id>/layer.tar, repositories) and the OCI image layout tarball (index.json,
// oci-layout, blobs/sha256/<hex>) that newer Docker writes alongside
// manifest.json.
//
// It owns one thing: [Read], which takes a stream, walks the tar once
// without seeking, and reports the archive's format, its images (image ID =
// config digest, repo tags, OS, architecture, variant, creation time, layer
// count), the byte offset of its first top-level manifest.json / index.json
// header ([Info.MetadataOffset]) and the number of tar bytes read ([Info.Size]).
// Read consumes the stream exactly up to the end-of-archive marker and never
// beyond it, so a caller hashing the stream can drain the rest itself.
//
// What it must never do:
//
//   - touch the disk: everything is read from the io.Reader it is given;
//   - trust a size it reads: entry sizes, descriptor sizes and JSON lengths
//     are checked against fixed limits before anything is allocated, and
//     memory stays bounded (at most 8 MiB per metadata file, 64 MiB of
//     metadata in all, 1,000,000 entries) whatever the archive size;
//   - extract, follow links or interpret layer contents: layers are drained,
//     never unpacked.
//
// Every error wraps one of [ErrNotTar], [ErrTruncated], [ErrNotImage] or
// [ErrUnsafe] and names the entry at fault; an error returned by the
// underlying reader itself is passed through wrapped, not converted.
package archive
