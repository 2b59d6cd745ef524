package comm

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// testDeadline bounds every multi-rank test, so a hang fails instead of
// blocking the suite; it is far above what any test needs.
const testDeadline = 60 * time.Second

// newNet returns a network closed at the end of the test.
func newNet(t testing.TB, w int, opts MemOptions) []*MemTransport {
	t.Helper()
	net, err := NewMemNetwork(w, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, tr := range net {
			tr.Close()
		}
	})
	return net
}

// runRanks runs f for every rank concurrently and returns their errors.
func runRanks(t testing.TB, w int, f func(ctx context.Context, r int) error) []error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	errs := make([]error, w)
	var wg sync.WaitGroup
	for r := range w {
		wg.Go(func() { errs[r] = f(ctx, r) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("ranks still running after %v", testDeadline)
	}
	return errs
}

// mustRun is runRanks that fails the test on any error.
func mustRun(t testing.TB, w int, f func(ctx context.Context, r int) error) {
	t.Helper()
	for r, err := range runRanks(t, w, f) {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %v", what, testDeadline)
		}
		time.Sleep(time.Millisecond)
	}
}

// groups returns one world group per rank.
func groups(net []*MemTransport) []*Group {
	gs := make([]*Group, len(net))
	for r, tr := range net {
		gs[r] = NewGroup(tr)
	}
	return gs
}

// subGroups returns the group of ranks, with opts, for each member.
func subGroups(t testing.TB, net []*MemTransport, ranks []int, opts GroupOptions) map[int]*Group {
	t.Helper()
	gs := make(map[int]*Group, len(ranks))
	for _, r := range ranks {
		g, err := NewSubGroup(net[r], ranks, opts)
		if err != nil {
			t.Fatal(err)
		}
		gs[r] = g
	}
	return gs
}

// randVectors returns w vectors of n values of mixed sign and magnitude,
// the same for the same seed.
func randVectors(seed uint64, w, n int) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, uint64(w)<<32|uint64(n)))
	xs := make([][]float32, w)
	for r := range xs {
		xs[r] = make([]float32, n)
		for i := range xs[r] {
			xs[r][i] = float32(rng.NormFloat64() * float64(int(1)<<rng.IntN(8)))
		}
	}
	return xs
}

func randBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func clone32(xs [][]float32) [][]float32 {
	out := make([][]float32, len(xs))
	for i, x := range xs {
		out[i] = append([]float32(nil), x...)
	}
	return out
}

// testCtx is a context that ends at the test deadline, so a call that
// should not block fails instead of hanging.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	t.Cleanup(cancel)
	return ctx
}
