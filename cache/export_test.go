package cache

// SetVerifySnapshotHook makes c's Verify call f between its snapshot of the
// manifest and the hashing.
func SetVerifySnapshotHook(c *Cache, f func()) { c.hooks.verifySnapshot = f }

// SetGCPlannedHook makes c's GC call f between its plan and its commit.
func SetGCPlannedHook(c *Cache, f func()) { c.hooks.gcPlanned = f }

// SetFreeBytes replaces how c measures free space (the daemon-side limit's).
func SetFreeBytes(c *Cache, f func(string) (int64, error)) { c.freeBytes = f }
