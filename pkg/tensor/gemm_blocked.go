package tensor

import (
	"runtime"
	"sync"
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

// gemmWorkspace holds the packed panels of one Gemm call. Workspaces are
// pooled so steady-state calls do not allocate them.
// The job lives inside the pooled workspace so that a serial call allocates
// nothing at all.
type gemmWorkspace struct {
	job gemmJob
}

var workspacePool = sync.Pool{New: func() any { return new(gemmWorkspace) }}

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
	ws := workspacePool.Get().(*gemmWorkspace)
	j := &ws.job
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
	ms := j.mc * max(1, msRowsMax/j.mc)
	j.pa = grow(j.pa, min(ms, (m+mr-1)/mr*mr)*j.kc)
	j.pb = grow(j.pb, j.nc*j.kc)

	parallel := runtime.GOMAXPROCS(0) > 1 && float64(m)*float64(n)*float64(k) >= parallelMinMACs
	for j.jc = 0; j.jc < n; j.jc += j.nc {
		j.ncCur = min(j.nc, n-j.jc)
		tasksN := (j.ncCur + ncTask - 1) / ncTask
		for j.pc = 0; j.pc < k; j.pc += j.kc {
			j.kcCur = min(j.kc, k-j.pc)
			j.betaCur = 1
			if j.pc == 0 {
				j.betaCur = beta
			}
			// B is packed once per (jc, pc) block, with the first A
			// super-block. A is repacked for every (jc, pc) block; that
			// costs 1/nc of the block's multiply-adds.
			bPanels := (j.ncCur + nr - 1) / nr
			for j.ms = 0; j.ms < m; j.ms += ms {
				j.msCur = min(ms, m-j.ms)
				aPanels := (j.msCur + mr - 1) / mr
				mBlocks := (j.msCur + j.mc - 1) / j.mc
				units := aPanels + bPanels
				if parallel {
					ParallelFor((units+packGrain-1)/packGrain, 1, func(lo, hi int) {
						j.packRange(lo*packGrain, min(hi*packGrain, units), aPanels)
					})
					ParallelFor(mBlocks*tasksN, 1, func(lo, hi int) {
						for t := lo; t < hi; t++ {
							j.compute(t/tasksN, t%tasksN)
						}
					})
				} else {
					j.packRange(0, units, aPanels)
					for t := 0; t < mBlocks*tasksN; t++ {
						j.compute(t/tasksN, t%tasksN)
					}
				}
				bPanels = 0
			}
		}
	}
	// Drop the caller's matrices so the pool does not keep them alive.
	j.a, j.b, j.c = nil, nil, nil
	workspacePool.Put(ws)
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

// packA copies rows [6p, 6p+6) of op(A), depth block [pc, pc+kcCur), into
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
