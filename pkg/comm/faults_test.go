package comm

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// collectiveCalls are the collectives the fault tests interrupt; each runs
// one call on group g at rank r. absent is a rank whose absence blocks all
// the others: the last rank of a ring, the root of a broadcast, the first
// link of a reduce chain (root 0, chain 1 → 2 → ... → 0).
var collectiveCalls = []struct {
	name   string
	absent func(w int) int
	call   func(ctx context.Context, g *Group, r int) error
}{
	{"allreduce", last, func(ctx context.Context, g *Group, r int) error {
		return g.AllReduce(ctx, make([]float32, 1000), Sum, WireBF16)
	}},
	{"allgather", last, func(ctx context.Context, g *Group, r int) error {
		_, err := g.AllGather(ctx, make([]byte, 100*r))
		return err
	}},
	{"broadcast", func(int) int { return 0 }, func(ctx context.Context, g *Group, r int) error {
		_, err := g.Broadcast(ctx, 0, make([]byte, 100))
		return err
	}},
	{"reduce", func(int) int { return 1 }, func(ctx context.Context, g *Group, r int) error {
		return g.Reduce(ctx, 0, make([]float32, 1000), Mean, WireFloat32)
	}},
	{"barrier", last, func(ctx context.Context, g *Group, r int) error {
		return g.Barrier(ctx)
	}},
}

func last(w int) int { return w - 1 }

// TestEpochAbortsCollective starts a collective on all ranks but one, whose
// absence blocks the others; once every participant is blocked, every rank
// moves to a new epoch, and every participant must fail with an
// *EpochError at once (there is no timeout to fall back on). Then the
// ranks run the collective again, in new groups, in the new epoch.
func TestEpochAbortsCollective(t *testing.T) {
	for _, cc := range collectiveCalls {
		for _, w := range []int{2, 3, 5} {
			t.Run(fmt.Sprintf("%s/W=%d", cc.name, w), func(t *testing.T) {
				net := newNet(t, w, MemOptions{})
				gs := groups(net)
				absent := cc.absent(w)
				errc := make(chan error, w)
				for r := range w {
					if r != absent {
						go func() { errc <- cc.call(testCtx(t), gs[r], r) }()
					}
				}
				for r := range w {
					if r != absent {
						waitFor(t, fmt.Sprintf("rank %d to block", r), func() bool {
							return net[r].blocked() > 0 || len(errc) > 0
						})
					}
				}
				for _, tr := range net {
					if err := tr.SetEpoch(1); err != nil {
						t.Fatal(err)
					}
				}
				for range w - 1 {
					err := <-errc
					var ee *EpochError
					if !errors.As(err, &ee) || ee.Have != 0 || ee.Now != 1 {
						t.Fatalf("got %v, want an *EpochError from epoch 0 to 1", err)
					}
				}

				// The old groups refuse to run; fresh ones work, and
				// nothing of the old epoch leaks into them.
				var ee *EpochError
				if err := gs[absent].Barrier(testCtx(t)); !errors.As(err, &ee) {
					t.Fatalf("group of epoch 0 used in epoch 1: got %v, want an *EpochError", err)
				}
				gs = groups(net)
				mustRun(t, w, func(ctx context.Context, r int) error {
					return cc.call(ctx, gs[r], r)
				})
			})
		}
	}
}

// TestClosedRankFailsPeers closes the last rank's transport (a dead
// process) and runs a collective on the others. Its ring neighbours must
// fail at once with a *PeerError naming it; with W ≤ 3 every survivor is a
// neighbour, so no timeout is configured and a hang would hit the test
// deadline. With more ranks, survivors further away wait for a neighbour
// that stopped, and fail with a *PeerError at the transport's timeout.
func TestClosedRankFailsPeers(t *testing.T) {
	for _, w := range []int{2, 3, 4, 5} {
		t.Run(fmt.Sprintf("W=%d", w), func(t *testing.T) {
			var opts MemOptions
			if w > 3 {
				opts.Timeout = 200 * time.Millisecond
			}
			net := newNet(t, w, opts)
			gs := groups(net)
			dead := w - 1
			if err := net[dead].Close(); err != nil {
				t.Fatal(err)
			}
			errs := runRanks(t, w-1, func(ctx context.Context, r int) error {
				return gs[r].AllReduce(ctx, make([]float32, 100), Sum, WireFloat32)
			})
			for r, err := range errs {
				var pe *PeerError
				if !errors.As(err, &pe) {
					t.Fatalf("rank %d: got %v, want a *PeerError", r, err)
				}
				neighbour := r == (dead+1)%w || r == dead-1
				if neighbour && (pe.Rank != dead || !errors.Is(err, ErrPeerClosed)) {
					t.Fatalf("rank %d, a neighbour of dead rank %d: got %v", r, dead, err)
				}
				if !neighbour && !errors.Is(err, ErrTimeout) {
					t.Fatalf("rank %d: got %v, want a timeout", r, err)
				}
			}
		})
	}
}

// TestCanceledContext checks a collective stops when its context ends.
func TestCanceledContext(t *testing.T) {
	net := newNet(t, 2, MemOptions{})
	g := NewGroup(net[0])
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() { errc <- g.AllReduce(ctx, make([]float32, 10), Sum, WireFloat32) }()
	waitFor(t, "all-reduce to block", func() bool { return net[0].blocked() > 0 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}
