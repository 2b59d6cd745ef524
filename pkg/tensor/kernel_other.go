//go:build !amd64 || purego

package tensor

// hasAsmKernel is false where no assembly micro-kernel exists (or the purego
// build tag asks for none), so the "asm" backend is not offered.
const hasAsmKernel = false

// kernel6x16AVX2 exists so the driver compiles on every platform; with
// hasAsmKernel false it is never selected, and it would still be correct.
func kernel6x16AVX2(kc int, a, b, c *float32, ldc int, alpha, beta float32) {
	kernel6x16Go(kc, a, b, c, ldc, alpha, beta)
}

// transpose8AVX2 is never selected without the assembly (hasAsmKernel is
// false); it forwards to the Go version so the code still compiles and is
// correct.
func transpose8AVX2(dst *float32, ldd int, src *float32, lds int, blocks int) {
	transpose8Go(dst, ldd, src, lds, blocks)
}
