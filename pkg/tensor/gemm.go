package tensor

import "fmt"

// Gemm computes C = alpha*op(A)*op(B) + beta*C for row-major matrices, where
// op(A) is M×K and op(B) is K×N. If transA, A is stored K×M (op(A) = Aᵀ) with
// leading dimension lda; otherwise M×K. Likewise for B (stored N×K if transB).
// When beta == 0, C is overwritten (NaNs in C are not propagated).
//
// It runs on the backend chosen with SetGemmBackend (or TERN_GEMM). With the
// "asm" and "go" backends the result is bitwise identical for any GOMAXPROCS
// and across calls. Dimensions or slices that do not fit the stated shapes are
// programming errors and panic with a message naming the argument, as an
// out-of-range slice index would.
func Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkGemmArgs(transA, transB, m, n, k, a, lda, b, ldb, c, ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		scaleC(m, n, beta, c, ldc)
		return
	}
	switch currentGemm() {
	case gemmOpenBLAS:
		openblasGemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	case gemmGo:
		gemmBlocked(false, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	default:
		gemmBlocked(true, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	}
}

// scaleC sets C = beta*C, the whole product when alpha or K is zero. As in
// BLAS, beta == 0 clears C rather than multiplying (0*NaN would stay NaN).
func scaleC(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		if beta != 1 {
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// checkGemmArgs panics unless every matrix fits its slice. The assembly kernel
// writes C through a raw pointer, so this check is what keeps it in bounds.
func checkGemmArgs(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("tensor.Gemm: negative dimension m=%d n=%d k=%d", m, n, k))
	}
	checkMatrix("A", transA, m, k, a, lda)
	checkMatrix("B", transB, k, n, b, ldb)
	checkMatrix("C", false, m, n, c, ldc)
}

// checkMatrix checks an op(X) of rows×cols stored row-major (transposed when
// trans) in x with leading dimension ld.
func checkMatrix(name string, trans bool, rows, cols int, x []float32, ld int) {
	sr, sc := rows, cols // stored shape
	if trans {
		sr, sc = cols, rows
	}
	if ld < max(1, sc) {
		panic(fmt.Sprintf("tensor.Gemm: leading dimension of %s is %d, need at least %d (stored %d×%d)", name, ld, max(1, sc), sr, sc))
	}
	if sr == 0 || sc == 0 {
		return
	}
	if need := (sr-1)*ld + sc; len(x) < need {
		panic(fmt.Sprintf("tensor.Gemm: %s has %d elements, need at least %d (stored %d×%d, leading dimension %d)", name, len(x), need, sr, sc, ld))
	}
}
