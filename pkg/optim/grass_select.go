package optim

import (
	"cmp"
	"math"
	"slices"
)

// grassRNG is the counter-based stream of one GRASS selection: draw k is
// splitmix64's k-th output for the selection's seed (projectionSeed of the
// job seed, the parameter name and the selection index), so every
// data-parallel rank and a resumed run draw the same rows.
type grassRNG struct {
	seed, k uint64
}

// uniform returns the next draw in [0, 1).
func (g *grassRNG) uniform() float64 {
	g.k++
	return float64(projMix(g.seed+g.k*projGamma)>>11) / (1 << 53)
}

// grassSelect fills sel (r row indices, sorted ascending) and rho (their
// scales) for one m-row weight whose gradient row norms are norms (nil for
// uniform selection, which does not read them).
//
// Methods (GRASS §3; research/optimizers.md §6.1):
//   - Top-r: the r largest norms, ties to the lower index; ρ = 1.
//   - norm, with replacement (Multi-Norm-R): r i.i.d. draws from
//     q_i = ‖G_i‖^p / Σ_k ‖G_k‖^p, ρ_j = 1/√(r·q_σj), so that
//     E[P·Pᵀ] = Σ_i r·q_i·ρ_i²·e_i·e_iᵀ = I.
//   - norm, without replacement (Multi-Norm-NR): r distinct rows drawn
//     successively with probability ∝ ‖G_i‖^p among those left, done in one
//     pass with Efraimidis–Spirakis keys log(u_i)/w_i (Inf. Proc. Letters
//     97(5), 2006); ρ = 1.
//   - uniform, with replacement: r i.i.d. uniform rows; ρ = √(m/r).
//   - uniform, without replacement: a uniform r-subset (partial
//     Fisher–Yates); each row is kept with probability r/m, so ρ = √(m/r)
//     makes E[P·Pᵀ] = I exactly.
//
// Rows whose norm is not finite get weight 0 and rank last in Top-r. When
// every weight is 0 (a zero gradient) the norm methods fall back to uniform
// sampling.
func grassSelect(sel []int32, rho []float32, norms []float64, m int, cfg GrassConfig, seed uint64) {
	r := len(sel)
	rng := &grassRNG{seed: seed}
	switch {
	case cfg.Selection == GrassTopR:
		order := grassRowOrder(m)
		key := func(i int32) float64 { return finiteOr(norms[i], -1) }
		slices.SortFunc(order, func(a, b int32) int {
			if c := cmp.Compare(key(b), key(a)); c != 0 {
				return c
			}
			return cmp.Compare(a, b)
		})
		copy(sel, order[:r])
		slices.Sort(sel)
		for j := range rho {
			rho[j] = 1
		}
		return
	case cfg.Selection == GrassNorm:
		w := make([]float64, m)
		total := 0.0
		for i := range w {
			w[i] = math.Pow(finiteOr(norms[i], 0), cfg.NormPower)
			if math.IsInf(w[i], 0) {
				w[i] = 0
			}
			total += w[i]
		}
		if total > 0 && !math.IsInf(total, 0) {
			if cfg.Replacement {
				grassSampleR(sel, rho, w, total, rng)
			} else {
				grassSampleNR(sel, rho, w, rng)
			}
			return
		}
	}
	// Uniform selection, and the norm methods' fallback.
	if cfg.Replacement {
		for j := range sel {
			sel[j] = int32(min(m-1, int(rng.uniform()*float64(m))))
		}
	} else {
		order := grassRowOrder(m)
		for j := 0; j < r; j++ {
			k := j + min(m-j-1, int(rng.uniform()*float64(m-j)))
			order[j], order[k] = order[k], order[j]
		}
		copy(sel, order[:r])
	}
	slices.Sort(sel)
	s := float32(math.Sqrt(float64(m) / float64(r)))
	for j := range rho {
		rho[j] = s
	}
}

// grassSampleR draws r rows i.i.d. with q_i = w_i/total by inverting the
// cumulative sum; rows of weight 0 are never drawn, so ρ stays finite.
func grassSampleR(sel []int32, rho []float32, w []float64, total float64, rng *grassRNG) {
	cum := make([]float64, len(w))
	acc := 0.0
	for i, x := range w {
		acc += x
		cum[i] = acc
	}
	last := len(w) - 1
	for last > 0 && w[last] == 0 {
		last-- // rounding must not land on a trailing zero-weight row
	}
	for j := range sel {
		u := rng.uniform() * acc
		i, _ := slices.BinarySearchFunc(cum, u, func(c, u float64) int {
			if c > u {
				return 1
			}
			return -1
		})
		sel[j] = int32(min(i, last))
	}
	slices.Sort(sel)
	r := float64(len(sel))
	for j, i := range sel {
		rho[j] = float32(1 / math.Sqrt(r*w[i]/total))
	}
}

// grassSampleNR draws r distinct rows, successively with probability
// proportional to w among the rows left, as the r largest keys log(u)/w.
func grassSampleNR(sel []int32, rho []float32, w []float64, rng *grassRNG) {
	keys := make([]float64, len(w))
	for i, x := range w {
		u := rng.uniform()
		switch {
		case x == 0:
			keys[i] = math.Inf(-1)
		case u == 0:
			keys[i] = -math.MaxFloat64
		default:
			keys[i] = math.Log(u) / x
		}
	}
	order := grassRowOrder(len(w))
	slices.SortFunc(order, func(a, b int32) int {
		if c := cmp.Compare(keys[b], keys[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	copy(sel, order[:len(sel)])
	slices.Sort(sel)
	for j := range rho {
		rho[j] = 1
	}
}

func grassRowOrder(m int) []int32 {
	order := make([]int32, m)
	for i := range order {
		order[i] = int32(i)
	}
	return order
}

func finiteOr(x, alt float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return alt
	}
	return x
}
