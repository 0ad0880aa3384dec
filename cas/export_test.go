package cas

// WithGoEncoder makes the store write blobs with the pure-Go encoder, so that
// one test binary covers both encoders whatever the build.
func WithGoEncoder() Option {
	return func(s *Store) { s.newCompressor = newGoCompressor }
}
