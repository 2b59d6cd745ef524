//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package data

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// lockPoll is how often a process waiting for another one's tokenisation
// checks the lock; tokenising takes seconds to minutes, so 100 ms is cheap.
const lockPoll = 100 * time.Millisecond

// lockFile takes an exclusive advisory lock on path so that workers sharing
// a machine (the local cluster runs four) tokenise a corpus once, not once
// each. It polls rather than blocks so that ctx can cancel the wait.
func lockFile(ctx context.Context, path string, progress io.Writer) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock token cache: %w", err)
	}
	fd := int(f.Fd())
	told := false
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				syscall.Flock(fd, syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock token cache %s: %w", path, err)
		}
		if !told && progress != nil {
			fmt.Fprintf(progress, "waiting for another process to finish tokenising (lock %s)\n", path)
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(lockPoll):
		}
	}
}
