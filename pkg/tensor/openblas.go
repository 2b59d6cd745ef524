//go:build linux || darwin || freebsd || netbsd

package tensor

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/ebitengine/purego"
)

// openblasLibs are the sonames tried, most specific first.
var openblasLibs = []string{"libopenblas.so.0", "libopenblas.so", "libopenblas.dylib"}

// CBLAS enum values (cblas.h).
const (
	cblasRowMajor = 101
	cblasNoTrans  = 111
	cblasTrans    = 112
)

var (
	openblasOnce    sync.Once
	openblasErr     error
	cblasSgemm      func(order, transA, transB, m, n, k int32, alpha float32, a *float32, lda int32, b *float32, ldb int32, beta float32, c *float32, ldc int32)
	openblasThreads func(n int32)
	// openblasNT is the thread count last given to OpenBLAS.
	openblasNT atomic.Int32
)

// loadOpenBLAS opens the library once and reports whether it is usable.
func loadOpenBLAS() error {
	openblasOnce.Do(func() {
		var lib uintptr
		var errs []error
		for _, name := range openblasLibs {
			h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
			if err == nil {
				lib = h
				break
			}
			errs = append(errs, err)
		}
		if lib == 0 {
			openblasErr = fmt.Errorf("libopenblas not found (tried %v: %v); install it, e.g. apt-get install libopenblas0-pthread", openblasLibs, errs)
			return
		}
		for _, sym := range []string{"cblas_sgemm", "openblas_set_num_threads"} {
			if _, err := purego.Dlsym(lib, sym); err != nil {
				openblasErr = fmt.Errorf("libopenblas lacks %s: %w", sym, err)
				return
			}
		}
		purego.RegisterLibFunc(&cblasSgemm, lib, "cblas_sgemm")
		purego.RegisterLibFunc(&openblasThreads, lib, "openblas_set_num_threads")
	})
	return openblasErr
}

// openblasGemm runs cblas_sgemm with as many threads as GOMAXPROCS. CBLAS
// takes 32-bit dimensions; larger problems run on the blocked GEMM instead.
func openblasGemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if max(m, n, k, lda, ldb, ldc) > math.MaxInt32 {
		gemmBlocked(hasAsmKernel, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	if nt := int32(runtime.GOMAXPROCS(0)); openblasNT.Swap(nt) != nt {
		openblasThreads(nt)
	}
	ta, tb := int32(cblasNoTrans), int32(cblasNoTrans)
	if transA {
		ta = cblasTrans
	}
	if transB {
		tb = cblasTrans
	}
	cblasSgemm(cblasRowMajor, ta, tb, int32(m), int32(n), int32(k), alpha, &a[0], int32(lda), &b[0], int32(ldb), beta, &c[0], int32(ldc))
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	runtime.KeepAlive(c)
}
