package tensor

import "fmt"

// Work sizes for the vector kernels. They are constants so that chunk
// boundaries, and therefore the reductions' summation order, depend only on
// the length of the input.
const (
	// elemGrain is the number of elements one goroutine handles per chunk in
	// the elementwise kernels (128 KiB of float32 per operand: large enough
	// to amortise scheduling, small enough to balance two to eight cores).
	elemGrain = 1 << 15
	// reduceChunk is the length of each partial sum in SumSquares and Dot.
	reduceChunk = 1 << 12
	// reduceParallelMin is the length from which reductions use goroutines.
	reduceParallelMin = 1 << 16
	// zeroGrain is the chunk of Zero: clearing is bound by memory bandwidth,
	// and 256 KiB chunks let several cores share a large buffer.
	zeroGrain = 1 << 16
)

func checkLen(op string, want int, names string, got ...int) {
	for _, g := range got {
		if g != want {
			panic(fmt.Sprintf("tensor.%s: lengths of %s differ (%d vs %d)", op, names, want, g))
		}
	}
}

// Axpy computes y += alpha*x elementwise. x and y must have equal lengths.
func Axpy(alpha float32, x, y []float32) {
	checkLen("Axpy", len(y), "x, y", len(x))
	if len(y) < 2*elemGrain {
		axpy(alpha, x, y)
		return
	}
	ParallelFor(len(y), elemGrain, func(lo, hi int) { axpy(alpha, x[lo:hi], y[lo:hi]) })
}

func axpy(alpha float32, x, y []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += alpha * x[i]
	}
}

// Scale computes x *= alpha elementwise.
func Scale(alpha float32, x []float32) {
	if len(x) < 2*elemGrain {
		scale(alpha, x)
		return
	}
	ParallelFor(len(x), elemGrain, func(lo, hi int) { scale(alpha, x[lo:hi]) })
}

func scale(alpha float32, x []float32) {
	for i := range x {
		x[i] *= alpha
	}
}

// Add computes dst = a + b elementwise. All three must have equal lengths;
// dst may alias a or b.
func Add(dst, a, b []float32) {
	checkLen("Add", len(dst), "dst, a, b", len(a), len(b))
	if len(dst) < 2*elemGrain {
		add(dst, a, b)
		return
	}
	ParallelFor(len(dst), elemGrain, func(lo, hi int) { add(dst[lo:hi], a[lo:hi], b[lo:hi]) })
}

func add(dst, a, b []float32) {
	a, b = a[:len(dst)], b[:len(dst)]
	for i := range dst {
		dst[i] = a[i] + b[i]
	}
}

// Zero sets every element of x to +0. Large slices are cleared in parallel
// chunks of zeroGrain elements.
func Zero(x []float32) {
	ParallelFor(len(x), zeroGrain, func(lo, hi int) { clear(x[lo:hi]) })
}

// Copy sets dst = src. Both must have equal lengths.
func Copy(dst, src []float32) {
	checkLen("Copy", len(dst), "dst, src", len(src))
	copy(dst, src)
}

// SumSquares returns Σ x[i]² accumulated in float64 (for gradient norms and
// RMS statistics). The sum is taken in fixed chunks of reduceChunk elements,
// each in index order, and the chunk sums are added in chunk order, so the
// result is bitwise identical for any GOMAXPROCS.
func SumSquares(x []float32) float64 {
	return reduce(len(x), func(lo, hi int) float64 {
		var s0, s1, s2, s3 float64
		v := x[lo:hi]
		i := 0
		for ; i+4 <= len(v); i += 4 {
			a, b, c, d := float64(v[i]), float64(v[i+1]), float64(v[i+2]), float64(v[i+3])
			s0 += a * a
			s1 += b * b
			s2 += c * c
			s3 += d * d
		}
		for ; i < len(v); i++ {
			a := float64(v[i])
			s0 += a * a
		}
		return (s0 + s1) + (s2 + s3)
	})
}

// Dot returns Σ x[i]·y[i] accumulated in float64, with the same fixed
// chunking as SumSquares (deterministic for any GOMAXPROCS). x and y must
// have equal lengths.
func Dot(x, y []float32) float64 {
	checkLen("Dot", len(x), "x, y", len(y))
	return reduce(len(x), func(lo, hi int) float64 {
		var s0, s1, s2, s3 float64
		a, b := x[lo:hi], y[lo:hi]
		b = b[:len(a)]
		i := 0
		for ; i+4 <= len(a); i += 4 {
			s0 += float64(a[i]) * float64(b[i])
			s1 += float64(a[i+1]) * float64(b[i+1])
			s2 += float64(a[i+2]) * float64(b[i+2])
			s3 += float64(a[i+3]) * float64(b[i+3])
		}
		for ; i < len(a); i++ {
			s0 += float64(a[i]) * float64(b[i])
		}
		return (s0 + s1) + (s2 + s3)
	})
}

// reduce sums chunk(lo, hi) over the fixed chunks of [0, n) in chunk order.
// Within a chunk each kernel uses four interleaved accumulators (element i
// goes to accumulator i mod 4), which is also fixed by the index alone.
func reduce(n int, chunk func(lo, hi int) float64) float64 {
	chunks := (n + reduceChunk - 1) / reduceChunk
	if n < reduceParallelMin {
		var s float64
		for c := 0; c < chunks; c++ {
			s += chunk(c*reduceChunk, min((c+1)*reduceChunk, n))
		}
		return s
	}
	partial := make([]float64, chunks)
	// Eight chunks per work item keeps scheduling cost small; the partial
	// sums themselves are per chunk, so the grain does not affect the result.
	ParallelFor(chunks, 8, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			partial[c] = chunk(c*reduceChunk, min((c+1)*reduceChunk, n))
		}
	})
	var s float64
	for _, p := range partial {
		s += p
	}
	return s
}
