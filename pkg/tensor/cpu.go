package tensor

import "fmt"

// CPU is the Device that runs on this machine's cores: pure Go kernels split
// into fixed chunks over GOMAXPROCS goroutines (ParallelFor), and the GEMM
// backend selected by SetGemmBackend. Its memory is the Go heap, so Sync has
// nothing to wait for. Each layer's kernels sit in a file of their own
// (cpu_rmsnorm.go, cpu_attention.go, ...), forward and backward side by side.
type CPU struct{}

var _ Device = CPU{}

// Name returns "cpu/" followed by the GEMM backend in use, e.g. "cpu/asm".
func (CPU) Name() string { return "cpu/" + GemmBackend() }

// Alloc returns a zeroed slice on the Go heap.
func (CPU) Alloc(n int) []float32 { return make([]float32, n) }

// Sync returns at once: every CPU kernel has finished when it returns.
func (CPU) Sync() {}

// Gemm calls the package-level Gemm.
func (CPU) Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// Copy calls the package-level Copy.
func (CPU) Copy(dst, src []float32) { Copy(dst, src) }

// Zero calls the package-level Zero.
func (CPU) Zero(x []float32) { Zero(x) }

// Scale calls the package-level Scale.
func (CPU) Scale(alpha float32, x []float32) { Scale(alpha, x) }

// SumSquares calls the package-level SumSquares.
func (CPU) SumSquares(x []float32) float64 { return SumSquares(x) }

// rowGrain picks a ParallelFor grain for row-wise kernels: about
// rowChunkElems elements per chunk, so scheduling overhead stays small.
func rowGrain(rowLen int) int {
	const rowChunkElems = 16384
	if rowLen <= 0 {
		return 1
	}
	return max(1, rowChunkElems/rowLen)
}

// need panics unless x holds at least n elements: the kernels index their
// arguments by the sizes they are given, so a short slice is a caller's bug.
func need(op, name string, x []float32, n int) {
	if len(x) < n {
		panic(fmt.Sprintf("tensor.%s: %s has %d elements, need at least %d", op, name, len(x), n))
	}
}

// GatherColumns implements Device; rows are gathered in parallel.
func (CPU) GatherColumns(dst, src []float32, rows, srcCols int, cols []int32) {
	r := len(cols)
	need("GatherColumns", "src", src, rows*srcCols)
	need("GatherColumns", "dst", dst, rows*r)
	ParallelFor(rows, rowGrain(r), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			s, d := src[t*srcCols:(t+1)*srcCols], dst[t*r:(t+1)*r]
			for j, i := range cols {
				d[j] = s[i]
			}
		}
	})
}
