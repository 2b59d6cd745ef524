package tensor

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// ParallelFor splits [0,n) into fixed chunks of grain items (the last may be
// shorter) and runs fn(lo, hi) on each, spread over up to GOMAXPROCS
// goroutines. The chunk boundaries depend only on n and grain, so any kernel
// whose chunks write disjoint outputs is bitwise deterministic on any core
// count. fn must not depend on which goroutine runs it. With one worker (or
// one chunk) everything runs on the calling goroutine.
func ParallelFor(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	chunks := (n + grain - 1) / grain
	workers := runtime.GOMAXPROCS(0)
	if workers > chunks {
		workers = chunks
	}
	if workers <= 1 {
		for lo := 0; lo < n; lo += grain {
			fn(lo, min(lo+grain, n))
		}
		return
	}
	// Chunks are claimed dynamically (an atomic counter) for load balance;
	// which goroutine runs a chunk never affects what the chunk computes.
	var next atomic.Int64
	work := func() {
		for {
			ci := int(next.Add(1) - 1)
			if ci >= chunks {
				return
			}
			lo := ci * grain
			fn(lo, min(lo+grain, n))
		}
	}
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Go(work)
	}
	work() // the caller is the last worker
	wg.Wait()
}
