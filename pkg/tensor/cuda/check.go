package cuda

import (
	"fmt"
	"sort"
	"unsafe"
)

// span is one managed-memory chunk: device addresses [base, base+size).
type span struct{ base, size uintptr }

// spans is the set of chunks the device allocated, sorted by base.
type spans []span

// owns reports whether [p, p+n) lies inside one chunk.
func (s spans) owns(p, n uintptr) bool {
	i := sort.Search(len(s), func(i int) bool { return s[i].base+s[i].size > p })
	return i < len(s) && p >= s[i].base && p+n <= s[i].base+s[i].size && p+n >= p
}

// insert returns a copy of s with c added in order (the caller publishes it).
func (s spans) insert(c span) spans {
	out := make(spans, 0, len(s)+1)
	out = append(out, s...)
	out = append(out, c)
	sort.Slice(out, func(i, j int) bool { return out[i].base < out[j].base })
	return out
}

// bufPtr checks that x holds at least n elements of this device's memory and
// returns its address; n == 0 needs no memory and gives 0.
func bufPtr(owned spans, op, name string, x []float32, n int) uintptr {
	if n < 0 {
		panic(fmt.Sprintf("cuda.%s: %s needs %d elements: negative size", op, name, n))
	}
	if len(x) < n {
		panic(fmt.Sprintf("cuda.%s: %s has %d elements, need at least %d", op, name, len(x), n))
	}
	if n == 0 {
		return 0
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(x)))
	if !owned.owns(p, uintptr(n)*4) {
		panic(fmt.Sprintf("cuda.%s: %s is not memory of this device: every buffer a kernel reads or writes must come from the device's Alloc", op, name))
	}
	return p
}

func sameLen(op, names string, want int, got ...int) {
	for _, g := range got {
		if g != want {
			panic(fmt.Sprintf("cuda.%s: lengths of %s differ (%d vs %d)", op, names, want, g))
		}
	}
}

// gemmNeed is the number of elements a row-major op(X) of rows×cols with
// leading dimension ld occupies; it panics if ld is too small.
func gemmNeed(name string, trans bool, rows, cols, ld int) int {
	sr, sc := rows, cols
	if trans {
		sr, sc = cols, rows
	}
	if ld < max(1, sc) {
		panic(fmt.Sprintf("cuda.Gemm: leading dimension of %s is %d, need at least %d (stored %d×%d)", name, ld, max(1, sc), sr, sc))
	}
	if sr == 0 || sc == 0 {
		return 0
	}
	return (sr-1)*ld + sc
}

// cublasGemmArgs maps row-major C[m,n] = op(A)·op(B) onto column-major
// cuBLAS: a row-major matrix is its transpose in column-major, so cuBLAS
// computes Cᵀ[n,m] = op(B)ᵀ·op(A)ᵀ, with B first. It returns the operation
// codes (0 = N, 1 = T) and dimensions in cublasGemmEx's order.
func cublasGemmArgs(transA, transB bool, m, n, k int) (opFirst, opSecond int32, cm, cn, ck int) {
	if transB {
		opFirst = 1
	}
	if transA {
		opSecond = 1
	}
	return opFirst, opSecond, n, m, k
}
