package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

// Many workers heartbeating at once share one keepalive stream: every
// renewal is answered for its own lease, a lease that is gone answers
// ErrLeaseExpired without disturbing the others, a renewal whose ctx ends
// returns, and after Close renewals fail rather than hang.
func TestConcurrentRefreshShareOneStream(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{})
	const workers, beats = 40, 10
	leases := make([]*WorkerLease, workers)
	for i := range leases {
		w, err := l.RegisterWorker(ctx, fmt.Sprintf("w%d", i), []byte("info"), workerTTL)
		if err != nil {
			t.Fatal(err)
		}
		leases[i] = w
	}
	// Worker 0 is gone: its refreshes must say so while the others renew.
	if err := l.DeleteWorker(ctx, "w0"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*beats)
	for i, w := range leases {
		for range beats {
			wg.Go(func() {
				err := w.Refresh(ctx)
				switch {
				case i == 0 && !errors.Is(err, ErrLeaseExpired):
					errs <- fmt.Errorf("refresh of the deleted worker: %v, want ErrLeaseExpired", err)
				case i > 0 && err != nil:
					errs <- fmt.Errorf("refresh of w%d: %v", i, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, w := range leases[1:] {
		r, err := s.Client().TimeToLive(ctx, w.ID())
		if err != nil || r.TTL < 1 {
			t.Fatalf("lease of %s after the refreshes: %+v, %v", w.Name(), r, err)
		}
	}

	// A renewal whose ctx has ended returns at once; the next one works.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := leases[1].Refresh(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("refresh with an ended ctx: %v", err)
	}
	if err := leases[1].Refresh(ctx); err != nil {
		t.Fatalf("refresh after a cancelled one: %v", err)
	}

	// After Close the stream is gone and renewals fail.
	s.Close()
	if err := leases[1].Refresh(ctx); !errors.Is(err, errRenewerClosed) {
		t.Fatalf("refresh through a closed store: %v, want the store's refusal", err)
	}
}
