package tensor

// SwiGLU gating (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6):
// the MLP is down(silu(gate(x)) ∘ up(x)); these kernels are the elementwise
// middle. With σ the logistic function and silu(g) = g·σ(g):
//
//	h  = silu(g) ∘ u
//	du = dh ∘ silu(g)
//	dg = dh ∘ u ∘ σ(g)·(1 + g·(1 − σ(g)))

// swigluGrain is the ParallelFor chunk of the SwiGLU kernels.
const swigluGrain = 8192

func sigmoid32(x float32) float32 { return 1 / (1 + exp32(-x)) }

// SwiGLUForward implements Device.
func (CPU) SwiGLUForward(h, g, u []float32) {
	checkLen("SwiGLUForward", len(h), "h, g, u", len(g), len(u))
	ParallelFor(len(h), swigluGrain, func(a, b int) {
		for i := a; i < b; i++ {
			x := g[i]
			h[i] = x * sigmoid32(x) * u[i]
		}
	})
}

// SwiGLUBackward implements Device. dg may alias dh: each element of dh is
// read before dg overwrites it.
func (CPU) SwiGLUBackward(dg, du, dh, g, u []float32) {
	checkLen("SwiGLUBackward", len(dh), "dh, dg, du, g, u", len(dg), len(du), len(g), len(u))
	ParallelFor(len(dh), swigluGrain, func(a, b int) {
		for i := a; i < b; i++ {
			x, d := g[i], dh[i]
			s := sigmoid32(x)
			du[i] = d * x * s
			dg[i] = d * u[i] * s * (1 + x*(1-s))
		}
	})
}
