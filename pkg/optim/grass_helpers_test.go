package optim

import (
	"math"
	"math/rand/v2"

	"github.com/ternml/tern/pkg/model"
)

// grassFullGrads returns, for every weight, a deterministic m×n gradient
// for step (the "true" gradient a backward pass would produce); row scales
// vary so row norms differ clearly.
func grassFullGrads(ps []*model.Param, step int) [][]float32 {
	out := make([][]float32, len(ps))
	for i, p := range ps {
		rng := rand.New(rand.NewPCG(uint64(step)+100, uint64(i)))
		m, n := p.Shape[0], p.Shape[1]
		g := make([]float32, m*n)
		for row := 0; row < m; row++ {
			s := 0.2 + 2*rng.Float64()
			for k := 0; k < n; k++ {
				g[row*n+k] = float32(s * rng.NormFloat64())
			}
		}
		out[i] = g
	}
	return out
}

// grassBackward stands in for the model's backward pass: it writes the full
// gradient into G where the optimizer asked for it (RowSel nil) and only
// the selected rows into GSel otherwise, as model.linearBackwardParam does.
func grassBackward(ps []*model.Param, full [][]float32) {
	for i, p := range ps {
		n := p.Shape[1]
		if p.RowSel == nil {
			copy(p.G, full[i])
			continue
		}
		for j, row := range p.RowSel {
			copy(p.GSel[j*n:(j+1)*n], full[i][int(row)*n:int(row+1)*n])
		}
	}
}

// grassCloneParams deep-copies weights into fresh params with full G
// buffers, as a model hands them to an optimizer.
func grassCloneParams(ps []*model.Param) []*model.Param {
	out := make([]*model.Param, len(ps))
	for i, p := range ps {
		c := &model.Param{Name: p.Name, Role: p.Role, Shape: append([]int(nil), p.Shape...),
			GlobalShape: append([]int(nil), p.GlobalShape...),
			W:           append([]float32(nil), p.W...), G: make([]float32, len(p.W))}
		out[i] = c
	}
	return out
}

// grassRefSelectTopR is an independent Top-r: row i is kept iff fewer than
// r rows beat it (a larger norm, or an equal norm and a lower index).
func grassRefSelectTopR(norms []float64, r int) []int {
	var sel []int
	for i := range norms {
		beat := 0
		for k := range norms {
			if norms[k] > norms[i] || (norms[k] == norms[i] && k < i) {
				beat++
			}
		}
		if beat < r {
			sel = append(sel, i)
		}
	}
	return sel
}

// grassRef is a float64 transcription of the GRASS step in
// research/optimizers.md §6.2 with tern's choices (moments and bias counter
// reset at each selection, HF Adam core, decay of the whole W).
type grassRef struct {
	cfg  GrassConfig
	w    [][]float64
	sel  [][]int
	rho  [][]float64
	m, v [][]float64
	t    int
}

func newGrassRef(ps []*model.Param, cfg GrassConfig) *grassRef {
	r := &grassRef{cfg: cfg}
	for _, p := range ps {
		r.w = append(r.w, projTo64(p.W))
	}
	r.sel, r.rho = make([][]int, len(ps)), make([][]float64, len(ps))
	r.m, r.v = make([][]float64, len(ps)), make([][]float64, len(ps))
	return r
}

// step applies one update with full gradients g; inject, when non-nil, gives
// the selection (σ, ρ) of each weight at a selection step instead of Top-r
// (for the sampled methods, whose draws the reference does not replicate).
func (r *grassRef) step(ps []*model.Param, g [][]float32, lr float64, inject func(i int) ([]int, []float64)) {
	K := r.cfg.UpdateProjGap
	for i, p := range ps {
		m, n := p.Shape[0], p.Shape[1]
		if r.t%K == 0 {
			if inject != nil {
				r.sel[i], r.rho[i] = inject(i)
			} else {
				norms := make([]float64, m)
				for row := 0; row < m; row++ {
					s := 0.0
					for k := 0; k < n; k++ {
						x := float64(g[i][row*n+k])
						s += x * x
					}
					norms[row] = math.Sqrt(s)
				}
				r.sel[i] = grassRefSelectTopR(norms, min(r.cfg.Rank, m))
				r.rho[i] = make([]float64, len(r.sel[i]))
				for j := range r.rho[i] {
					r.rho[i][j] = 1
				}
			}
			r.m[i] = make([]float64, len(r.sel[i])*n)
			r.v[i] = make([]float64, len(r.sel[i])*n)
		}
		tau := float64(r.t%K + 1)
		b1, b2 := r.cfg.Beta1, r.cfg.Beta2
		size := lr * math.Sqrt(1-math.Pow(b2, tau)) / (1 - math.Pow(b1, tau)) * r.cfg.Scale
		for j, row := range r.sel[i] {
			for k := 0; k < n; k++ {
				c := r.rho[i][j] * float64(g[i][row*n+k])
				mm := b1*r.m[i][j*n+k] + (1-b1)*c
				vv := b2*r.v[i][j*n+k] + (1-b2)*c*c
				r.m[i][j*n+k], r.v[i][j*n+k] = mm, vv
				r.w[i][row*n+k] -= size * r.rho[i][j] * mm / (math.Sqrt(vv) + r.cfg.Eps)
			}
		}
		for k := range r.w[i] {
			r.w[i][k] -= lr * r.cfg.WeightDecay * r.w[i][k]
		}
	}
	r.t++
}
