package manifest

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// findEntry locates name's entry in manifest bytes without decoding any
// entry: json.Valid proves the whole document well-formed (no allocation),
// then a walk over the plain shape Encode writes finds the one value.
//
// ok is false when the document is anything but that plain shape: not
// valid JSON; top-level keys other than "version" and "entries" exactly
// once each; a version other than the literal 1 or 2; a key with an escape (it
// could decode to name) or invalid UTF-8; name twice. The caller then decodes the slow,
// exact way, which also says what is wrong. When ok is true, found and raw
// are what encoding/json would make of the same bytes (FuzzLookup).
func findEntry(data []byte, name string) (raw []byte, found, ok bool) {
	if !json.Valid(data) {
		return nil, false, false
	}
	s := scanner{data: data}
	if s.ws() != '{' {
		return nil, false, false
	}
	s.i++
	var version, entries bool
	for {
		if s.ws() == '}' {
			break
		}
		key, plain := s.key()
		if !plain {
			return nil, false, false
		}
		switch string(key) {
		case "version":
			if version {
				return nil, false, false
			}
			version = true
			start := s.i
			s.skip()
			if v := data[start:s.i]; !bytes.Equal(v, []byte("1")) && !bytes.Equal(v, []byte("2")) {
				return nil, false, false
			}
			// A split entry under version 1 is caught by lookup's strict
			// pass only on the slow path; the writers never make one.
		case "entries":
			if entries || s.ws() != '{' {
				return nil, false, false
			}
			entries = true
			s.i++
			for s.ws() != '}' {
				k, plain := s.key()
				if !plain {
					return nil, false, false
				}
				start := s.i
				s.skip()
				if string(k) == name {
					if found {
						return nil, false, false
					}
					raw, found = data[start:s.i], true
				}
				if s.ws() == ',' {
					s.i++
				}
			}
			s.i++
		default:
			return nil, false, false
		}
		if s.ws() == ',' {
			s.i++
		}
	}
	if !version || !entries {
		return nil, false, false
	}
	return raw, found, true
}

// scanner walks JSON already known to be valid.
type scanner struct {
	data []byte
	i    int
}

// ws skips white space and returns the next byte (0 at the end).
func (s *scanner) ws() byte {
	for s.i < len(s.data) {
		switch c := s.data[s.i]; c {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return c
		}
	}
	return 0
}

// key reads `"key":` and returns the key's bytes; plain is false when the
// key holds an escape or invalid UTF-8 (which encoding/json would rewrite).
func (s *scanner) key() (key []byte, plain bool) {
	s.ws()
	start := s.i + 1
	s.str()
	key = s.data[start : s.i-1]
	s.ws()
	s.i++ // ':'
	s.ws()
	return key, bytes.IndexByte(key, '\\') < 0 && utf8.Valid(key)
}

// str skips a string starting at its opening quote.
func (s *scanner) str() {
	for s.i++; s.i < len(s.data); s.i++ {
		switch s.data[s.i] {
		case '\\':
			s.i++
		case '"':
			s.i++
			return
		}
	}
}

// skip skips one value starting at s.i.
func (s *scanner) skip() {
	switch s.ws() {
	case '"':
		s.str()
	case '{', '[':
		depth := 0
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case '"':
				s.str()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return
				}
			}
			s.i++
		}
	default: // number, true, false, null
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.i++
		}
	}
}
