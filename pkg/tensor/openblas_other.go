//go:build !(linux || darwin || freebsd || netbsd)

package tensor

import (
	"errors"
	"runtime"
)

// loadOpenBLAS fails: purego cannot open shared libraries on this platform.
func loadOpenBLAS() error {
	return errors.New("loading libopenblas at run time is not supported on " + runtime.GOOS)
}

// openblasGemm is unreachable: SetGemmBackend refuses "openblas" here.
func openblasGemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	panic("tensor: openblas backend selected on " + runtime.GOOS)
}
