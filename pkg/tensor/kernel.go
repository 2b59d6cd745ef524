package tensor

import "unsafe"

// Micro-tile shape. 6×16 uses 12 of the 16 YMM registers for accumulators
// (two 8-wide vectors per row), leaving two for the B row and two for A
// broadcasts; this is the register blocking BLIS uses for single precision
// on Haswell and Zen (Van Zee & van de Geijn, "BLIS: A Framework for Rapidly
// Instantiating BLAS Functionality", ACM TOMS 41(3), 2015, §4).
const (
	mr = 6
	nr = 16
)

// kernel6x16Go is the portable micro-kernel. It computes
//
//	C[0:6, 0:16] = alpha * Σ_p A[:,p]·B[p,:] + beta * C
//
// where a is a packed A panel (column p at a[6p:6p+6]), b a packed B panel
// (row p at b[16p:16p+16]) and C rows are ldc floats apart. beta == 0
// overwrites C without reading it, so NaNs in C do not leak through. Each C
// element is accumulated in increasing p, like the assembly kernel (which
// fuses the multiply-add, so the two differ in the last bits).
func kernel6x16Go(kc int, a, b, c *float32, ldc int, alpha, beta float32) {
	ap := unsafe.Slice(a, kc*mr)
	bp := unsafe.Slice(b, kc*nr)
	var acc [mr * nr]float32
	// 2×4 register sub-tiles: 8 accumulators + 6 operands fit the 16
	// floating-point registers the Go compiler allocates from on amd64 and
	// arm64, so the inner loop keeps everything in registers.
	for i := 0; i < mr; i += 2 {
		for j := 0; j < nr; j += 4 {
			var c00, c01, c02, c03, c10, c11, c12, c13 float32
			for p := 0; p < kc; p++ {
				av := ap[p*mr+i : p*mr+i+2 : p*mr+i+2]
				bv := bp[p*nr+j : p*nr+j+4 : p*nr+j+4]
				a0, a1 := av[0], av[1]
				b0, b1, b2, b3 := bv[0], bv[1], bv[2], bv[3]
				c00 += a0 * b0
				c01 += a0 * b1
				c02 += a0 * b2
				c03 += a0 * b3
				c10 += a1 * b0
				c11 += a1 * b1
				c12 += a1 * b2
				c13 += a1 * b3
			}
			r0 := acc[i*nr+j : i*nr+j+4 : i*nr+j+4]
			r1 := acc[(i+1)*nr+j : (i+1)*nr+j+4 : (i+1)*nr+j+4]
			r0[0], r0[1], r0[2], r0[3] = c00, c01, c02, c03
			r1[0], r1[1], r1[2], r1[3] = c10, c11, c12, c13
		}
	}
	cs := unsafe.Slice(c, (mr-1)*ldc+nr)
	for i := 0; i < mr; i++ {
		row := cs[i*ldc : i*ldc+nr : i*ldc+nr]
		ar := acc[i*nr : i*nr+nr : i*nr+nr]
		if beta == 0 {
			for j := range row {
				row[j] = alpha * ar[j]
			}
		} else {
			for j := range row {
				row[j] = alpha*ar[j] + beta*row[j]
			}
		}
	}
}

// transpose8Go writes, for each b in [0, blocks), the transpose of the 8×8
// block of src at columns 8b..8b+7 (rows lds floats apart) to rows
// 8b..8b+7, columns 0..7 of dst (rows ldd floats apart).
func transpose8Go(dst *float32, ldd int, src *float32, lds int, blocks int) {
	if blocks == 0 {
		return
	}
	s := unsafe.Slice(src, 7*lds+8*blocks)
	d := unsafe.Slice(dst, (8*blocks-1)*ldd+8)
	for r := 0; r < 8; r++ {
		row := s[r*lds : r*lds+8*blocks]
		for q, v := range row {
			d[q*ldd+r] = v
		}
	}
}
