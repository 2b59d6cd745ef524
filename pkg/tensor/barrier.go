package tensor

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// barrierSpins is how many times a waiting worker polls before it sleeps.
// Phases of a GEMM last tens to hundreds of microseconds, and a futex sleep
// and wake-up costs several, so a short spin usually catches the release.
const barrierSpins = 200

// barrier is a reusable rendezvous for a fixed number of workers. The last
// worker to arrive runs an action (with every other worker parked) before
// releasing them, which is how the GEMM advances its shared block state.
type barrier struct {
	n       int32
	arrived atomic.Int32
	gen     atomic.Uint32
	mu      sync.Mutex
	cond    sync.Cond
}

func (b *barrier) reset(n int) {
	b.n = int32(n)
	b.arrived.Store(0)
	b.cond.L = &b.mu
}

// wait blocks until all n workers have called it, runs action on the last
// one to arrive, and returns once that action is complete.
func (b *barrier) wait(action func()) {
	g := b.gen.Load()
	if b.arrived.Add(1) == b.n {
		action()
		b.arrived.Store(0)
		b.mu.Lock()
		b.gen.Add(1)
		b.mu.Unlock()
		b.cond.Broadcast()
		return
	}
	for i := 0; i < barrierSpins; i++ {
		if b.gen.Load() != g {
			return
		}
		runtime.Gosched()
	}
	b.mu.Lock()
	for b.gen.Load() == g {
		b.cond.Wait()
	}
	b.mu.Unlock()
}
