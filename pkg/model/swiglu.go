package model

import "github.com/ternml/tern/pkg/tensor"

// SwiGLU gating (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6):
// the MLP is down(silu(gate(x)) ∘ up(x)); this file holds the elementwise
// middle. With σ the logistic function and silu(g) = g·σ(g):
//
//	h  = silu(g) ∘ u
//	du = dh ∘ silu(g)
//	dg = dh ∘ u ∘ σ(g)·(1 + g·(1 − σ(g)))

func sigmoid32(x float32) float32 { return 1 / (1 + exp32(-x)) }

func swigluForward(h, g, u []float32) {
	tensor.ParallelFor(len(h), 8192, func(a, b int) {
		for i := a; i < b; i++ {
			x := g[i]
			h[i] = x * sigmoid32(x) * u[i]
		}
	})
}

// swigluBackward writes du and dg; dg may alias dh (each element of dh is read
// before dg overwrites it).
func swigluBackward(dg, du, dh, g, u []float32) {
	tensor.ParallelFor(len(dh), 8192, func(a, b int) {
		for i := a; i < b; i++ {
			x, d := g[i], dh[i]
			s := sigmoid32(x)
			du[i] = d * x * s
			dg[i] = d * u[i] * s * (1 + x*(1-s))
		}
	})
}
