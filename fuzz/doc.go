// Package fuzz holds fuzz targets that cross package boundaries: arbitrary
// input through the whole ingest path (archive parsing, hashing, compression,
// publishing, manifest). Parsers also have their own Fuzz* targets beside
// their code (naming, archive, manifest, dockerbridge).
package fuzz
