package model

import (
	"math"

	"github.com/ternml/tern/pkg/tensor"
)

// Rotary position embedding (Su et al. 2021, "RoFormer", eq. 34) in the
// Hugging Face LLaMA "rotate_half" layout: within a head of width hd, element
// i pairs with element i+hd/2, and pair i at position t turns by the angle
// t·θ^(−2i/hd):
//
//	y[i]      = x[i]·cos − x[i+h]·sin
//	y[i+h]    = x[i+h]·cos + x[i]·sin          (h = hd/2)
//
// The backward pass applies the inverse (transposed) rotation to dy.

// ropeTables returns cos and sin, each [t, hd/2], computed in float64.
func ropeTables(t, hd int, theta float64) (cos, sin []float32) {
	half := hd / 2
	cos, sin = make([]float32, t*half), make([]float32, t*half)
	for i := 0; i < half; i++ {
		invFreq := math.Pow(theta, -2*float64(i)/float64(hd))
		for p := 0; p < t; p++ {
			s, c := math.Sincos(float64(p) * invFreq)
			cos[p*half+i], sin[p*half+i] = float32(c), float32(s)
		}
	}
	return cos, sin
}

// ropeApply rotates x [n, heads·hd] in place; the position of row r is r mod
// t. inverse applies the transposed rotation (the backward pass).
func ropeApply(x []float32, n, t, heads, hd int, cos, sin []float32, inverse bool) {
	half := hd / 2
	w := heads * hd
	tensor.ParallelFor(n, rowGrain(w), func(a, b int) {
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
