package compress

import (
	"fmt"
	"math"
	"sync"

	"github.com/ternml/tern/pkg/tensor"
)

// Basis returns the n×n orthonormal DCT-II matrix D, row-major, row k being
// frequency k (Ahmed, Natarajan & Rao 1974; the "ortho" normalisation of
// scipy.fft.dct and of DeMo's _dct):
//
//	D[k][i] = s_k · cos(π·(2i+1)·k / 2n),  s_0 = √(1/n),  s_k = √(2/n) for k > 0
//
// so X = D·x is the transform of a vector x and x = Dᵀ·X its inverse. The
// entries are computed in float64 (the angle reduced exactly modulo 2π
// first) and rounded once to float32; math.Cos is the same Go code on
// amd64 and arm64, so every rank builds the same bits. n must be ≥ 1.
func Basis(n int) []float32 {
	d := make([]float32, n*n)
	s0, s := math.Sqrt(1/float64(n)), math.Sqrt(2/float64(n))
	for k := 0; k < n; k++ {
		sk := s
		if k == 0 {
			sk = s0
		}
		for i := 0; i < n; i++ {
			// cos(π·m/2n) has period 4n in m: reduce the integer first.
			m := ((2*i + 1) * k) % (4 * n)
			d[k*n+i] = float32(sk * math.Cos(math.Pi*float64(m)/float64(2*n)))
		}
	}
	return d
}

// Transform applies the chunked separable 2-D DCT-II of a Grid: each
// ChunkRows×ChunkCols block B of the zero-padded tensor becomes
// Y = D_r·B·D_cᵀ, and the inverse is B = D_rᵀ·Y·D_c cropped to the tensor.
// It caches one basis per chunk side and is safe for concurrent use.
//
// Arithmetic. Each of the two passes multiplies float32 numbers, adds the
// products in float64 in a fixed order (increasing index) and rounds the
// pass's result to float32. A product of two float32 values is exact in
// float64, so a fused multiply-add gives the same result as a separate
// multiply and add: the output is bitwise the same on every architecture,
// for every GOMAXPROCS (chunks are independent), which DeMo needs because
// every rank inverts the same combined coefficients and must get the same
// bits (research/demo-and-decentralized.md §1.4, the reference's line-295
// TODO). Exact zeros are skipped where that saves work (the zero padding,
// the coefficients a sparse inverse leaves out); adding a zero product
// changes nothing but possibly the sign of a zero result.
type Transform struct {
	mu    sync.Mutex
	bases map[int]basisPair
}

// basisPair is D and its transpose (which lets the forward pass run as
// row updates instead of dot products: the same sums in the same order,
// without a loop-carried dependency).
type basisPair struct{ d, dt []float32 }

// NewTransform returns an empty Transform.
func NewTransform() *Transform { return &Transform{bases: map[int]basisPair{}} }

func (t *Transform) basis(n int) basisPair {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.bases[n]
	if !ok {
		b.d = Basis(n)
		b.dt = make([]float32, n*n)
		for k := 0; k < n; k++ {
			for i := 0; i < n; i++ {
				b.dt[i*n+k] = b.d[k*n+i]
			}
		}
		t.bases[n] = b
	}
	return b
}

// transformGrainElems is about how many coefficients one parallel task
// transforms: enough to amortise the task, few enough to balance two cores
// on a tensor of a few chunks.
const transformGrainElems = 1 << 14

// Forward writes the coefficients of the tensor x (g.Elems() values,
// row-major) into coeffs (g.Coeffs() values, chunk-major; see Grid).
func (t *Transform) Forward(g Grid, x, coeffs []float32) error {
	if err := t.checkLens(g, x, coeffs); err != nil {
		return fmt.Errorf("dct forward: %w", err)
	}
	dr, dc := t.basis(g.ChunkRows), t.basis(g.ChunkCols)
	t.eachChunk(g, func(s *chunkScratch, r0, c0, nr, nc int, y []float32) {
		forwardChunk(g, dr.d, dc.dt, x, r0, c0, nr, nc, y, s)
	}, coeffs)
	return nil
}

// Inverse writes the tensor whose coefficients are coeffs into x, dropping
// the padded rows and columns.
func (t *Transform) Inverse(g Grid, coeffs, x []float32) error {
	if err := t.checkLens(g, x, coeffs); err != nil {
		return fmt.Errorf("dct inverse: %w", err)
	}
	dr, dc := t.basis(g.ChunkRows), t.basis(g.ChunkCols)
	t.eachChunk(g, func(s *chunkScratch, r0, c0, nr, nc int, y []float32) {
		inverseChunk(g, dr.d, dc.d, y, r0, c0, nr, nc, x, s)
	}, coeffs)
	return nil
}

func (t *Transform) checkLens(g Grid, x, coeffs []float32) error {
	if err := g.check(); err != nil {
		return err
	}
	if len(x) != g.Elems() {
		return fmt.Errorf("tensor has %d values, want %d for shape %dx%d", len(x), g.Elems(), g.Rows, g.Cols)
	}
	if len(coeffs) != g.Coeffs() {
		return fmt.Errorf("coefficients have %d values, want %d", len(coeffs), g.Coeffs())
	}
	return nil
}

// chunkScratch is one task's working memory: the float32 result of the
// first pass, the float64 accumulators and the list of live rows.
type chunkScratch struct {
	mid  []float32
	acc  []float64
	live []bool
}

// eachChunk runs fn on every chunk: its first tensor row and column, the
// number of tensor rows and columns it covers, and its coefficients.
func (t *Transform) eachChunk(g Grid, fn func(s *chunkScratch, r0, c0, nr, nc int, y []float32), coeffs []float32) {
	ce, across := g.ChunkElems(), g.ChunksAcross()
	tensor.ParallelFor(g.Chunks(), max(1, transformGrainElems/ce), func(lo, hi int) {
		s := &chunkScratch{
			mid:  make([]float32, ce),
			acc:  make([]float64, max(g.ChunkRows, g.ChunkCols)),
			live: make([]bool, g.ChunkRows),
		}
		for c := lo; c < hi; c++ {
			r0, c0 := (c/across)*g.ChunkRows, (c%across)*g.ChunkCols
			nr, nc := min(g.ChunkRows, g.Rows-r0), min(g.ChunkCols, g.Cols-c0)
			fn(s, r0, c0, nr, nc, coeffs[c*ce:(c+1)*ce])
		}
	})
}

// forwardChunk computes y = D_r·B·D_cᵀ for the block of x at (r0, c0), of
// which nr×nc values lie inside the tensor (the rest are the zero padding);
// dct is D_c transposed:
//
//	pass 1: T[i][b] = Σ_j B[i][j]·D_c[b][j]   (i < nr; j increasing)
//	pass 2: Y[a][b] = Σ_i D_r[a][i]·T[i][b]   (i increasing)
func forwardChunk(g Grid, dr, dct, x []float32, r0, c0, nr, nc int, y []float32, s *chunkScratch) {
	n1, n2 := g.ChunkRows, g.ChunkCols
	mid := s.mid
	acc := s.acc[:n2]
	for i := 0; i < nr; i++ {
		clear(acc)
		for j, v := range x[(r0+i)*g.Cols+c0 : (r0+i)*g.Cols+c0+nc] {
			f := float64(v)
			for b, d := range dct[j*n2 : (j+1)*n2] {
				acc[b] += f * float64(d)
			}
		}
		out := mid[i*n2 : (i+1)*n2]
		for b, v := range acc {
			out[b] = float32(v)
		}
	}
	for a := 0; a < n1; a++ {
		clear(acc)
		d := dr[a*n1 : a*n1+nr]
		for i, da := range d {
			f := float64(da)
			for b, v := range mid[i*n2 : (i+1)*n2] {
				acc[b] += f * float64(v)
			}
		}
		out := y[a*n2 : (a+1)*n2]
		for b, v := range acc {
			out[b] = float32(v)
		}
	}
}

// inverseChunk computes the nr×nc tensor part of D_rᵀ·Y·D_c into x:
//
//	pass 1: U[a][j] = Σ_b Y[a][b]·D_c[b][j]   (j < nc; rows of Y that are all zero are skipped)
//	pass 2: X[i][j] = Σ_a D_r[a][i]·U[a][j]   (i < nr, over the live rows a)
func inverseChunk(g Grid, dr, dc, y []float32, r0, c0, nr, nc int, x []float32, s *chunkScratch) {
	n1, n2 := g.ChunkRows, g.ChunkCols
	mid, live := s.mid, s.live
	acc := s.acc[:nc]
	for a := 0; a < n1; a++ {
		clear(acc)
		live[a] = false
		for b, v := range y[a*n2 : (a+1)*n2] {
			if v == 0 {
				continue
			}
			live[a] = true
			f := float64(v)
			for j, d := range dc[b*n2 : b*n2+nc] {
				acc[j] += f * float64(d)
			}
		}
		if live[a] {
			out := mid[a*n2 : a*n2+nc]
			for j, v := range acc {
				out[j] = float32(v)
			}
		}
	}
	for i := 0; i < nr; i++ {
		clear(acc)
		for a := 0; a < n1; a++ {
			if !live[a] {
				continue
			}
			f := float64(dr[a*n1+i])
			for j, v := range mid[a*n2 : a*n2+nc] {
				acc[j] += f * float64(v)
			}
		}
		out := x[(r0+i)*g.Cols+c0 : (r0+i)*g.Cols+c0+nc]
		for j, v := range acc {
			out[j] = float32(v)
		}
	}
}
