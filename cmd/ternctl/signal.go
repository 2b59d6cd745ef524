package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// notifyContext returns a context cancelled by the first SIGINT or SIGTERM.
// After that first signal the default handlers are restored, so a second
// Ctrl-C kills the process at once instead of waiting for the loop to reach
// a clean stopping point. Call the returned function when done.
func notifyContext(parent context.Context, stderr io.Writer) (context.Context, func()) {
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	finished := make(chan struct{})
	go func() {
		<-ctx.Done()
		stop()
		select {
		case <-finished: // cancelled by the caller finishing, not by a signal
		default:
			fmt.Fprintln(stderr, "\ninterrupted: stopping after the current step (press Ctrl-C again to quit now)")
		}
	}()
	return ctx, func() {
		close(finished)
		stop()
	}
}
