//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package data

import (
	"context"
	"io"
)

// lockFile is a no-op where flock is unavailable: concurrent loads then each
// tokenise, and the atomic renames still leave one complete cache.
func lockFile(ctx context.Context, path string, progress io.Writer) (func(), error) {
	return func() {}, nil
}
