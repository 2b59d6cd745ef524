package tensor

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Cache blocking for the BLIS-style five-loop GEMM (Goto & van de Geijn,
// "Anatomy of High-Performance Matrix Multiplication", ACM TOMS 34(3), 2008;
// BLIS's loop order). Sizes are for Zen 3 (32 KiB L1d, 512 KiB L2 per core,
// 32 MiB shared L3):
//   - kcMax: a 16×kc B micro-panel (16 KiB) stays in L1 while the kernel walks
//     the A micro-panels of one block;
//   - mcMax: the mc×kc packed A block (144 KiB) stays in L2;
//   - ncMax: the kc×nc packed B panel (4 MiB) stays in L3.
//
// The actual block sizes are derived from the shape alone (blocks of equal
// size no larger than the maximum), never from GOMAXPROCS: the K blocking
// fixes the order in which each C element is accumulated, so results do not
// depend on the core count.
const (
	kcMax = 256
	mcMax = 144
	ncMax = 4080
	// ncTask is the width of one parallel work item: a task computes an
	// mc×ncTask block of C from the shared packed panels.
	ncTask = 192
	// parallelMinMACs is the smallest m*n*k worth spreading over goroutines;
	// below it (for example a 64×64×64 attention block) starting them costs
	// more than the work.
	parallelMinMACs = 1 << 20
	// msRowsMax bounds the rows of A packed at once (4032 rows × kc 256 =
	// 4 MiB).
	msRowsMax = 4096
	// packGrain is how many micro-panels one packing work item covers.
	packGrain = 8
)

// jobPool recycles gemmJobs together with their packing buffers, so a
// steady-state serial call allocates nothing and a parallel one only its
// goroutines' closures.
var jobPool = sync.Pool{New: func() any { return new(gemmJob) }}

func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

// gemmJob carries one call's arguments and the current (jc, pc) block through
// the packing and compute phases.
type gemmJob struct {
	asm            bool
	transA, transB bool
	m, n, k        int
	alpha          float32
	a              []float32
	lda            int
	b              []float32
	ldb            int
	c              []float32
	ldc            int

	mc, kc, nc int // block sizes for this shape
	// current block: columns [jc, jc+ncCur), depth [pc, pc+kcCur), and the
	// beta that applies to it (the caller's beta on the first depth block,
	// 1 afterwards so later blocks accumulate).
	jc, ncCur, pc, kcCur int
	betaCur              float32
	// current M super-block: rows [ms, ms+msCur).
	ms, msCur int
	msMax     int
	beta      float32

	// Work items of the current block: packing units (A super-block panels
	// first, then B panels, in groups of packGrain) and compute tasks (mc
	// rows × ncTask columns). Workers claim them through next.
	aPanels, bPanels, packItems int
	tasksN, tasks               int
	next                        atomic.Int64
	done                        bool
	bar                         barrier
	wg                          sync.WaitGroup

	pa, pb []float32
}

// blockSize splits total into the fewest blocks of at most maxSize, makes them
// as equal as possible, and rounds the size up to a multiple of unit.
func blockSize(total, maxSize, unit int) int {
	nb := (total + maxSize - 1) / maxSize
	s := (total + nb - 1) / nb
	return (s + unit - 1) / unit * unit
}

func gemmBlocked(asm, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	j := jobPool.Get().(*gemmJob)
	*j = gemmJob{
		asm: asm, transA: transA, transB: transB,
		m: m, n: n, k: k, alpha: alpha,
		a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
		mc: blockSize(m, mcMax, mr),
		kc: blockSize(k, kcMax, 1),
		nc: blockSize(n, ncMax, nr),
		pa: j.pa, pb: j.pb,
	}
	// M is walked in super-blocks of whole mc blocks so that the packed A
	// stays bounded (about 4 MiB) even for tall products such as the LM
	// head's weight gradient (50257 rows).
	j.msMax = j.mc * max(1, msRowsMax/j.mc)
	j.beta = beta
	j.pa = grow(j.pa, min(j.msMax, (m+mr-1)/mr*mr)*j.kc)
	j.pb = grow(j.pb, j.nc*j.kc)
	j.setBlock(0, 0, 0)

	workers := 1
	if float64(m)*float64(n)*float64(k) >= parallelMinMACs {
		// No more workers than compute tasks in a block: extra ones would
		// only wait at the barrier.
		maxTasks := (min(m, j.msMax) + j.mc - 1) / j.mc * ((min(n, j.nc) + ncTask - 1) / ncTask)
		workers = min(runtime.GOMAXPROCS(0), maxTasks)
	}
	j.bar.reset(workers)
	// One set of goroutines walks the whole loop nest; a barrier separates
	// packing from computing, so a call costs one goroutine start per
	// worker instead of two per block.
	for w := 1; w < workers; w++ {
		j.wg.Go(j.work)
	}
	j.work()
	j.wg.Wait()
	// Drop the caller's matrices so the pool does not keep them alive.
	j.a, j.b, j.c = nil, nil, nil
	jobPool.Put(j)
}

// setBlock makes (jc, pc, ms) the current block and derives its sizes and
// work items. B is packed once per (jc, pc), with the first A super-block;
// A is repacked for every (jc, pc) block, which costs 1/nc of the block's
// multiply-adds.
func (j *gemmJob) setBlock(jc, pc, ms int) {
	j.jc, j.pc, j.ms = jc, pc, ms
	j.ncCur = min(j.nc, j.n-jc)
	j.kcCur = min(j.kc, j.k-pc)
	j.msCur = min(j.msMax, j.m-ms)
	j.betaCur = 1
	if pc == 0 {
		j.betaCur = j.beta // later depth blocks accumulate onto the first
	}
	j.aPanels = (j.msCur + mr - 1) / mr
	j.bPanels = 0
	if ms == 0 {
		j.bPanels = (j.ncCur + nr - 1) / nr
	}
	j.packItems = (j.aPanels + j.bPanels + packGrain - 1) / packGrain
	j.tasksN = (j.ncCur + ncTask - 1) / ncTask
	j.tasks = (j.msCur + j.mc - 1) / j.mc * j.tasksN
}

// advance moves to the next block in loop order (ms fastest, then pc, then
// jc) and reports whether there was one.
func (j *gemmJob) advance() bool {
	jc, pc, ms := j.jc, j.pc, j.ms+j.msMax
	if ms >= j.m {
		ms, pc = 0, pc+j.kc
		if pc >= j.k {
			pc, jc = 0, jc+j.nc
			if jc >= j.n {
				return false
			}
		}
	}
	j.setBlock(jc, pc, ms)
	return true
}

// work is run by every worker: claim packing items until none are left,
// wait for all packing, claim compute tasks, wait, and let the last worker
// to arrive move everyone to the next block. Which worker runs an item
// never changes what the item computes.
func (j *gemmJob) work() {
	for {
		for {
			x := int(j.next.Add(1) - 1)
			if x >= j.packItems {
				break
			}
			j.packRange(x*packGrain, min((x+1)*packGrain, j.aPanels+j.bPanels), j.aPanels)
		}
		j.bar.wait(j.resetNext)
		for {
			t := int(j.next.Add(1) - 1)
			if t >= j.tasks {
				break
			}
			j.compute(t/j.tasksN, t%j.tasksN)
		}
		j.bar.wait(j.nextBlock)
		if j.done {
			return
		}
	}
}

func (j *gemmJob) resetNext() { j.next.Store(0) }

func (j *gemmJob) nextBlock() {
	j.next.Store(0)
	j.done = !j.advance()
}

// packRange packs micro-panels [lo, hi), numbering the current A
// super-block's panels first and then the current B block's.
func (j *gemmJob) packRange(lo, hi, aPanels int) {
	for u := lo; u < min(hi, aPanels); u++ {
		j.packA(u)
	}
	lo, hi = max(lo, aPanels)-aPanels, max(hi, aPanels)-aPanels
	if lo >= hi {
		return
	}
	if !j.transB {
		j.packBRows(lo, hi)
		return
	}
	for p := lo; p < hi; p++ {
		j.packB(p)
	}
}

// packBRows packs B panels [lo, hi) when B is stored K×N. It walks B row by
// row across all the panels, so each read is one contiguous run of
// 16·(hi-lo) floats; packing panel by panel would touch one cache line per
// row of B, far apart, which the prefetchers and TLB handle badly.
func (j *gemmJob) packBRows(lo, hi int) {
	kc := j.kcCur
	for p := lo; p < hi; p++ {
		if j.ncCur-p*nr < nr {
			// The ragged last panel: zero it, then fill its valid columns.
			j.packB(p)
			hi = p
			break
		}
	}
	for q := 0; q < kc; q++ {
		s := j.b[(j.pc+q)*j.ldb+j.jc+lo*nr : (j.pc+q)*j.ldb+j.jc+hi*nr]
		for p := lo; p < hi; p++ {
			// Four 16-byte moves inline; a 64-byte array copy would call
			// memmove for every row.
			src := s[(p-lo)*nr:]
			d := j.pb[p*nr*kc+q*nr:]
			*(*[4]float32)(d) = *(*[4]float32)(src)
			*(*[4]float32)(d[4:]) = *(*[4]float32)(src[4:])
			*(*[4]float32)(d[8:]) = *(*[4]float32)(src[8:])
			*(*[4]float32)(d[12:]) = *(*[4]float32)(src[12:])
		}
	}
}

// packA copies rows [ms+6p, ms+6p+6) of op(A), depth block [pc, pc+kcCur), into
// panel p of pa as kcCur columns of 6 (zero rows past m), whatever A's
// storage order. Packing costs about as much per element as 50–100
// multiply-adds, and each packed A element serves only nc of them, so the
// loops are written to keep bounds checks out and copy whole rows at once.
func (j *gemmJob) packA(p int) {
	i0 := j.ms + p*mr
	rows := min(mr, j.ms+j.msCur-i0)
	kc := j.kcCur
	dst := j.pa[p*mr*kc : (p+1)*mr*kc]
	if j.transA {
		// A stored K×M: the 6 values of one packed column are contiguous.
		if rows == mr {
			for q := 0; q < kc; q++ {
				o := (j.pc+q)*j.lda + i0
				s := (*[mr]float32)(j.a[o:])
				d := (*[mr]float32)(dst[q*mr:])
				d[0], d[1], d[2], d[3], d[4], d[5] = s[0], s[1], s[2], s[3], s[4], s[5]
			}
			return
		}
		clear(dst)
		for q := 0; q < kc; q++ {
			o := (j.pc+q)*j.lda + i0
			copy(dst[q*mr:q*mr+rows], j.a[o:o+rows])
		}
		return
	}
	// A stored M×K: read the six rows in step, write each packed column
	// contiguously.
	if rows == mr {
		lda, o := j.lda, i0*j.lda+j.pc
		r0 := j.a[o : o+kc]
		r1 := j.a[o+lda : o+lda+kc]
		r2 := j.a[o+2*lda : o+2*lda+kc]
		r3 := j.a[o+3*lda : o+3*lda+kc]
		r4 := j.a[o+4*lda : o+4*lda+kc]
		r5 := j.a[o+5*lda : o+5*lda+kc]
		for q := range r0 {
			d := (*[mr]float32)(dst[q*mr:])
			d[0], d[1], d[2], d[3], d[4], d[5] = r0[q], r1[q], r2[q], r3[q], r4[q], r5[q]
		}
		return
	}
	clear(dst)
	for r := 0; r < rows; r++ {
		src := j.a[(i0+r)*j.lda+j.pc : (i0+r)*j.lda+j.pc+kc]
		for q, v := range src {
			dst[q*mr+r] = v
		}
	}
}

// packB copies columns [jc+16p, jc+16p+16) of op(B), depth block
// [pc, pc+kcCur), into panel p of pb as kcCur rows of 16 (zero columns past
// the block's width).
func (j *gemmJob) packB(p int) {
	j0 := j.jc + p*nr
	cols := min(nr, j.jc+j.ncCur-j0)
	kc := j.kcCur
	dst := j.pb[p*nr*kc : (p+1)*nr*kc]
	if !j.transB {
		// B stored K×N: each packed row is a contiguous run of B.
		if cols == nr {
			for q := 0; q < kc; q++ {
				// Four 16-byte moves inline; a 64-byte array copy would
				// call memmove for every row.
				s := j.b[(j.pc+q)*j.ldb+j0:]
				d := dst[q*nr:]
				*(*[4]float32)(d) = *(*[4]float32)(s)
				*(*[4]float32)(d[4:]) = *(*[4]float32)(s[4:])
				*(*[4]float32)(d[8:]) = *(*[4]float32)(s[8:])
				*(*[4]float32)(d[12:]) = *(*[4]float32)(s[12:])
			}
			return
		}
		clear(dst)
		for q := 0; q < kc; q++ {
			o := (j.pc+q)*j.ldb + j0
			copy(dst[q*nr:q*nr+cols], j.b[o:o+cols])
		}
		return
	}
	// B stored N×K (the weight layout of x·Wᵀ): each group of eight weight
	// rows becomes eight columns of the panel, transposed in 8×8 blocks (with
	// AVX2 shuffles on the asm backend), the depth tail element by element.
	if cols < nr {
		clear(dst)
	}
	blocks := kc / 8
	for c0 := 0; c0 < cols; c0 += 8 {
		rowsN := min(8, cols-c0)
		src := j.b[(j0+c0)*j.ldb+j.pc:]
		q0 := 0
		if rowsN == 8 && blocks > 0 {
			if j.asm {
				transpose8AVX2(&dst[c0], nr, &src[0], j.ldb, blocks)
			} else {
				transpose8Go(&dst[c0], nr, &src[0], j.ldb, blocks)
			}
			q0 = 8 * blocks
		}
		for c := 0; c < rowsN; c++ {
			row := src[c*j.ldb+q0 : c*j.ldb+kc]
			for q, v := range row {
				dst[(q0+q)*nr+c0+c] = v
			}
		}
	}
}

// compute runs the micro-kernel over the C block of M-block mb and column
// task tn of the current (jc, pc) block: for each 16-wide B micro-panel (kept
// in L1), every 6-high A micro-panel of the block (streamed from L2).
func (j *gemmJob) compute(mb, tn int) {
	kc := j.kcCur
	i0 := j.ms + mb*j.mc
	i1 := min(i0+j.mc, j.ms+j.msCur)
	c0 := tn * ncTask
	c1 := min(c0+ncTask, j.ncCur)
	for jr := c0; jr < c1; jr += nr {
		bp := &j.pb[(jr/nr)*nr*kc]
		cols := min(nr, c1-jr)
		col := j.jc + jr
		for ir := i0; ir < i1; ir += mr {
			ap := &j.pa[((ir-j.ms)/mr)*mr*kc]
			rows := min(mr, i1-ir)
			if rows == mr && cols == nr {
				j.kernel(kc, ap, bp, &j.c[ir*j.ldc+col], j.ldc, j.alpha, j.betaCur)
				continue
			}
			j.edge(kc, ap, bp, ir, col, rows, cols)
		}
	}
}

// edge handles a partial tile at the bottom or right border: the kernel runs
// on a full 6×16 scratch tile holding the valid part of C, and only that part
// is copied back, so the arithmetic is the same as for an interior tile.
func (j *gemmJob) edge(kc int, ap, bp *float32, ir, col, rows, cols int) {
	var tile [mr * nr]float32
	beta := j.betaCur
	if beta != 0 {
		for r := 0; r < rows; r++ {
			copy(tile[r*nr:r*nr+cols], j.c[(ir+r)*j.ldc+col:])
		}
	}
	j.kernel(kc, ap, bp, &tile[0], nr, j.alpha, beta)
	for r := 0; r < rows; r++ {
		copy(j.c[(ir+r)*j.ldc+col:(ir+r)*j.ldc+col+cols], tile[r*nr:r*nr+cols])
	}
}

func (j *gemmJob) kernel(kc int, a, b, c *float32, ldc int, alpha, beta float32) {
	if j.asm {
		kernel6x16AVX2(kc, a, b, c, ldc, alpha, beta)
	} else {
		kernel6x16Go(kc, a, b, c, ldc, alpha, beta)
	}
}
