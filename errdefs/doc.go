// Package errdefs holds the error categories shared by every imgcache package.
//
// Packages wrap these sentinels with context (fmt.Errorf("…: %w", ErrNotFound));
// callers test them with errors.Is. The CLI maps each category to one
// documented exit code, in one place (cmd/imgcache/exit.go). This package
// imports nothing.
package errdefs
