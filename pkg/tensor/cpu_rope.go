package tensor

import "math"

// Rotary position embedding (Su et al. 2021, "RoFormer", eq. 34) in the
// Hugging Face LLaMA "rotate_half" layout: within a head of width hd, element
// i pairs with element i+hd/2, and pair i at position t turns by the angle
// t·θ^(−2i/hd):
//
//	y[i]      = x[i]·cos − x[i+h]·sin
//	y[i+h]    = x[i+h]·cos + x[i]·sin          (h = hd/2)
//
// The backward pass applies the inverse (transposed) rotation to dy.

// RoPETables fills cos and sin, each [t, hd/2], with the rotation of every
// position and pair, computed in float64. It runs on the host: call it on
// fresh buffers (or after Sync), before a kernel reads them.
func RoPETables(cos, sin []float32, t, hd int, theta float64) {
	half := hd / 2
	need("RoPETables", "cos", cos, t*half)
	need("RoPETables", "sin", sin, t*half)
	for i := 0; i < half; i++ {
		invFreq := math.Pow(theta, -2*float64(i)/float64(hd))
		for p := 0; p < t; p++ {
			s, c := math.Sincos(float64(p) * invFreq)
			cos[p*half+i], sin[p*half+i] = float32(c), float32(s)
		}
	}
}

// RoPEForward implements Device.
func (CPU) RoPEForward(x, cos, sin []float32, n, t, heads, hd int) {
	ropeApply("RoPEForward", x, cos, sin, n, t, heads, hd, false)
}

// RoPEBackward implements Device.
func (CPU) RoPEBackward(dx, cos, sin []float32, n, t, heads, hd int) {
	ropeApply("RoPEBackward", dx, cos, sin, n, t, heads, hd, true)
}

// ropeApply rotates x [n, heads·hd] in place; the position of row r is r mod
// t. inverse applies the transposed rotation (the backward pass).
func ropeApply(op string, x, cos, sin []float32, n, t, heads, hd int, inverse bool) {
	half := hd / 2
	w := heads * hd
	need(op, "x", x, n*w)
	if n > 0 {
		need(op, "cos", cos, min(n, t)*half)
		need(op, "sin", sin, min(n, t)*half)
	}
	ParallelFor(n, rowGrain(w), func(a, b int) {
		for r := a; r < b; r++ {
			p := r % t
			cr, sr := cos[p*half:(p+1)*half], sin[p*half:(p+1)*half]
			for h := 0; h < heads; h++ {
				v := x[r*w+h*hd : r*w+(h+1)*hd]
				lo, hi := v[:half], v[half:]
				for i := 0; i < half; i++ {
					c, s := cr[i], sr[i]
					if inverse {
						s = -s
					}
					x0, x1 := lo[i], hi[i]
					lo[i] = x0*c - x1*s
					hi[i] = x1*c + x0*s
				}
			}
		}
	})
}
