package tensor

import (
	"fmt"
	"math"
)

// AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization",
// Algorithm 2) in the two forms pkg/optim offers, elementwise:
//
//	m ← β1·m + (1−β1)·g,   v ← β2·v + (1−β2)·g²
//	torch: w ← w·Decay − StepSize·m / (√v/BC2Sqrt + ε)
//	hf:    w' ← w − StepSize·(m / (√v + ε)),  w ← w' − Decay·w'
//
// The constants come precomputed in AdamWUpdate, so the kernel is the same
// per element on every step.

// adamGrain is the chunk size of the parallel update: large enough to
// amortise scheduling, small enough to balance two cores on small tensors.
const adamGrain = 1 << 15

// AdamW implements Device.
func (CPU) AdamW(w, g, m, v []float32, u AdamWUpdate) {
	checkLen("AdamW", len(w), "w, g, m, v", len(g), len(m), len(v))
	switch u.Form {
	case AdamWTorch:
		adamWTorch(w, g, m, v, u)
	case AdamWHF:
		adamWHF(w, g, m, v, u)
	default:
		panic(fmt.Sprintf("tensor.AdamW: form %d unknown: allowed are AdamWTorch (%d) and AdamWHF (%d)", u.Form, AdamWTorch, AdamWHF))
	}
}

func adamWTorch(w, g, m, v []float32, u AdamWUpdate) {
	stepSize, bc2Sqrt, eps, fb1, fb2, decay := u.StepSize, u.BC2Sqrt, u.Eps, u.Beta1, u.Beta2, u.Decay
	ParallelFor(len(w), adamGrain, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			gj := g[j]
			mj := fb1*m[j] + (1-fb1)*gj
			vj := fb2*v[j] + (1-fb2)*gj*gj
			m[j], v[j] = mj, vj
			denom := float32(math.Sqrt(float64(vj)))/bc2Sqrt + eps
			w[j] = w[j]*decay - stepSize*mj/denom
		}
	})
}

func adamWHF(w, g, m, v []float32, u AdamWUpdate) {
	stepSize, eps, fb1, fb2, decay := u.StepSize, u.Eps, u.Beta1, u.Beta2, u.Decay
	ParallelFor(len(w), adamGrain, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			gj := g[j]
			mj := fb1*m[j] + (1-fb1)*gj
			vj := fb2*v[j] + (1-fb2)*gj*gj
			m[j], v[j] = mj, vj
			wj := w[j] - stepSize*(mj/(float32(math.Sqrt(float64(vj)))+eps))
			w[j] = wj - decay*wj
		}
	})
}
