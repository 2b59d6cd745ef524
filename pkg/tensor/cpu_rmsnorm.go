package tensor

import "math"

// RMSNorm (Zhang & Sennrich 2019, eq. 4), per row x of width d:
//
//	r = 1/sqrt(mean(x²) + eps),  x̂ = x·r,  y = x̂ ∘ w
//
// Backward, with g = dy ∘ w:
//
//	dx = r·(g − x̂·mean(g ∘ x̂)),   dw += Σ_rows dy ∘ x̂
//
// The mean of squares is accumulated in float64; r is kept per row for the
// backward pass.

// RMSNormForward implements Device.
func (CPU) RMSNormForward(y, rstd, x, w []float32, n, d int, eps float64) {
	need("RMSNormForward", "x", x, n*d)
	need("RMSNormForward", "y", y, n*d)
	need("RMSNormForward", "rstd", rstd, n)
	need("RMSNormForward", "w", w, d)
	ParallelFor(n, rowGrain(d), func(a, b int) {
		for i := a; i < b; i++ {
			xr := x[i*d : (i+1)*d]
			var ss float64
			for _, v := range xr {
				ss += float64(v) * float64(v)
			}
			r := float32(1 / math.Sqrt(ss/float64(d)+eps))
			rstd[i] = r
			yr := y[i*d : (i+1)*d]
			for j, v := range xr {
				yr[j] = v * r * w[j]
			}
		}
	})
}

// RMSNormBackward implements Device: it accumulates dx += ∂/∂x and
// dw += ∂/∂w of <dy, y>.
func (CPU) RMSNormBackward(dx, dw, dy, x, w, rstd []float32, n, d int) {
	need("RMSNormBackward", "dx", dx, n*d)
	need("RMSNormBackward", "dy", dy, n*d)
	need("RMSNormBackward", "x", x, n*d)
	need("RMSNormBackward", "dw", dw, d)
	need("RMSNormBackward", "w", w, d)
	need("RMSNormBackward", "rstd", rstd, n)
	ParallelFor(n, rowGrain(d), func(a, b int) {
		for i := a; i < b; i++ {
			xr, dyr, dxr := x[i*d:(i+1)*d], dy[i*d:(i+1)*d], dx[i*d:(i+1)*d]
			r := rstd[i]
			var dot float64 // Σ_j g_j·x̂_j
			for j := range xr {
				dot += float64(dyr[j] * w[j] * xr[j] * r)
			}
			m := float32(dot / float64(d))
			for j := range xr {
				xh := xr[j] * r
				dxr[j] += r * (dyr[j]*w[j] - xh*m)
			}
		}
	})
	// dw sums over rows; each chunk owns a column range and walks rows in
	// order, so the result does not depend on the number of goroutines.
	ParallelFor(d, 64, func(c0, c1 int) {
		for i := 0; i < n; i++ {
			r := rstd[i]
			xr, dyr := x[i*d:(i+1)*d], dy[i*d:(i+1)*d]
			for j := c0; j < c1; j++ {
				dw[j] += dyr[j] * xr[j] * r
			}
		}
	})
}
