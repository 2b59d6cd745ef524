package model

import "github.com/ternml/tern/pkg/tensor"

// Linear layer without bias, Hugging Face layout: W is [out, in].
//
//	forward:  y = x·Wᵀ                 (x [n,in], y [n,out])
//	backward: dx = dy·W,  dW += dyᵀ·x
//
// All three products go through tensor.Gemm.

// linearForward computes y = x·Wᵀ + beta·y.
func linearForward(y, x, w []float32, n, in, out int, beta float32) {
	if n == 0 || out == 0 {
		return
	}
	tensor.Gemm(false, true, n, out, in, 1, x, in, w, in, beta, y, out)
}

// linearBackward computes dx = dy·W + dxBeta·dx and dW += dyᵀ·x.
func linearBackward(dx, dw, dy, x, w []float32, n, in, out int, dxBeta float32) {
	if n == 0 || out == 0 {
		return
	}
	tensor.Gemm(false, false, n, in, out, 1, dy, out, w, in, dxBeta, dx, in)
	tensor.Gemm(true, false, out, in, n, 1, dy, out, x, in, 1, dw, in)
}

// rowGrain picks a ParallelFor grain for row-wise elementwise kernels: about
// elemsPerChunk elements per chunk so scheduling overhead stays small.
func rowGrain(rowLen int) int {
	const elemsPerChunk = 16384
	if rowLen <= 0 {
		return 1
	}
	return max(1, elemsPerChunk/rowLen)
}

// addInto computes dst += src elementwise, in parallel.
func addInto(dst, src []float32) {
	tensor.ParallelFor(len(dst), 16384, func(lo, hi int) {
		d, s := dst[lo:hi], src[lo:hi]
		for i := range d {
			d[i] += s[i]
		}
	})
}

// clear32 zeroes s in parallel.
func clear32(s []float32) {
	tensor.ParallelFor(len(s), 1<<16, func(lo, hi int) { clear(s[lo:hi]) })
}
