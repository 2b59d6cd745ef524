package tensor

import (
	"runtime"
	"sync"
)

// ParallelFor splits [0,n) into fixed chunks of grain items (the last may be
// shorter) and runs fn(lo, hi) on each, spread over up to GOMAXPROCS
// goroutines. The chunk boundaries depend only on n and grain, so any kernel
// whose chunks write disjoint outputs is bitwise deterministic on any core
// count. fn must not depend on which goroutine runs it.
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
	var next int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				ci := next
				next++
				mu.Unlock()
				if int(ci) >= chunks {
					return
				}
				lo := int(ci) * grain
				fn(lo, min(lo+grain, n))
			}
		}()
	}
	wg.Wait()
}
