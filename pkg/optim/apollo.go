package optim

import (
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// APOLLO scale types (apollo.py scale_type).
const (
	// ApolloChannel scales each channel (row or column of the kept side) by
	// its own ratio: APOLLO.
	ApolloChannel = "channel"
	// ApolloTensor scales the whole weight by one ratio: APOLLO-Mini.
	ApolloTensor = "tensor"
)

// apolloNLGamma is the norm-growth limiter's bound on the growth of the
// update norm between steps, hard-coded in the reference (from Fira, Chen et
// al. 2024, arXiv 2410.01623, §4.2).
const apolloNLGamma = 1.01

// apolloNormEps is the 1e-8 the reference adds to norms in denominators.
const apolloNormEps = 1e-8

// ApolloConfig holds APOLLO's hyperparameters (optimizer.apollo.<field>).
type ApolloConfig struct {
	Rank          int     // r: rank of the random projection, capped at min(m, n)
	UpdateProjGap int     // T: steps between new random projections
	Scale         float64 // the reference's scale argument; the update is multiplied by √Scale
	ScaleType     string  // ApolloChannel or ApolloTensor
	ScaleFront    bool    // apply √Scale before the norm-growth limiter rather than after
	DisableNL     bool    // turn the norm-growth limiter off
	Seed          uint64  // job seed; projections derive from it, the parameter name and the refresh index
	Beta1, Beta2  float64
	Eps           float64
	WeightDecay   float64
}

// DefaultApolloConfig returns the reference defaults for APOLLO
// (zhuhanqing/APOLLO README and scripts/pretrain_c4): rank 256 (the README's
// setting for 1B and 7B; the 60M and 130M scripts use d/4), channel-wise
// scaling, scale 1, T = 200, the limiter on, and the Hugging Face AdamW
// defaults β = (0.9, 0.999), ε = 1e-6, no weight decay.
func DefaultApolloConfig() ApolloConfig {
	return ApolloConfig{Rank: 256, UpdateProjGap: 200, Scale: 1, ScaleType: ApolloChannel,
		Beta1: 0.9, Beta2: 0.999, Eps: 1e-6}
}

// DefaultApolloMiniConfig returns the reference defaults for APOLLO-Mini:
// rank 1, tensor-wise scaling, scale 128 (a multiplier of √128 ≈ 11.3) applied
// in front of the limiter, as in the 60M C4 script.
func DefaultApolloMiniConfig() ApolloConfig {
	c := DefaultApolloConfig()
	c.Rank, c.Scale, c.ScaleType, c.ScaleFront = 1, 128, ApolloTensor, true
	return c
}

// Apollo is APOLLO and APOLLO-Mini (Zhu et al. 2024, "APOLLO: SGD-like
// Memory, AdamW-level Performance", Algorithm 1), as implemented in
// zhuhanqing/APOLLO apollo_torch/apollo.py and random_projector.py. For each
// 2-D weight W (m×n) with gradient G, P a Gaussian N(0, 1/r) projection of
// the smaller side drawn anew every T steps:
//
//	R ← G·Pᵀ (m ≥ n, channels are rows) or Pᵀ·G (m < n, channels are columns)
//	t ← t+1
//	M ← β1·M + (1−β1)·R;  V ← β2·V + (1−β2)·R²       (never reset)
//	N ← M/(√V + ε)
//	s_c ← ‖N_c‖/(‖R_c‖ + 1e-8) per channel c        (channel)
//	s   ← ‖N‖_F/(‖R‖_F + 1e-8)                       (tensor, APOLLO-Mini)
//	G̃ ← G ⊙ s                                        (the full-rank raw gradient, rescaled)
//	norm-growth limiter: L ← max(‖G̃‖/(‖G̃_prev‖+1e-8), γ)/γ, G̃ ← G̃/L
//	W ← W − lr·√(1−β2ᵗ)/(1−β1ᵗ)·√scale·G̃
//	W ← W − lr·λ·W
//
// The update is full rank; only the optimizer state is low rank. The
// projection is never stored: it is a function of (Seed, parameter name,
// refresh index ⌊t/T⌋) and is regenerated on each step into scratch, so
// data-parallel ranks agree without communicating and a checkpoint need not
// carry it. (The reference keeps it in memory between refreshes; tern trades
// r·d Gaussian draws per step for that memory.) The generator is tern's own
// (splitmix64 + Box–Muller), so projections are not torch's.
type Apollo struct {
	cfg    ApolloConfig
	params []*model.Param
	lay    []projLayout
	m, v   [][]float32 // moments, r·D each
	prev   []float32   // limiter: ‖G̃‖ of the previous step, per weight
	t      int64       // steps taken
	seed   uint64

	// scratch, sized for the largest weight
	q      []float32 // projection r×d
	x      []float32 // R
	rn, nn []float64 // per channel ‖R_c‖², ‖N_c‖²
	gn     []float64 // per channel ‖G_c‖²
	fac    []float32 // per channel update factor

	// gen fills q (r×d) with the projection of parameter i for a refresh
	// index; tests replace it to inject a known projection.
	gen func(q []float32, i int, refresh int64)
}

// NewApollo allocates APOLLO state for params, which must be 2-D weights
// (use SplitProjected, or NewApolloRouted to pair the rest with AdamW).
func NewApollo(params []*model.Param, cfg ApolloConfig) (*Apollo, error) {
	if err := checkProjHyper("apollo", cfg.Rank, cfg.UpdateProjGap, cfg.Scale); err != nil {
		return nil, err
	}
	if cfg.ScaleType != ApolloChannel && cfg.ScaleType != ApolloTensor {
		return nil, fmt.Errorf("optimizer.apollo.scaleType must be %q or %q, got %q", ApolloChannel, ApolloTensor, cfg.ScaleType)
	}
	if err := checkAdamHyper("apollo", cfg.Beta1, cfg.Beta2, cfg.Eps, cfg.WeightDecay); err != nil {
		return nil, err
	}
	lays, err := projectedParams("apollo", params, cfg.Rank, false)
	if err != nil {
		return nil, err
	}
	o := &Apollo{cfg: cfg, params: params, lay: lays, prev: make([]float32, len(params)), seed: cfg.Seed}
	var qs, xs, ds int
	for _, l := range lays {
		o.m = append(o.m, make([]float32, l.rSize()))
		o.v = append(o.v, make([]float32, l.rSize()))
		qs, xs, ds = max(qs, l.qSize()), max(xs, l.rSize()), max(ds, l.dd)
	}
	o.q, o.x = make([]float32, qs), make([]float32, xs)
	o.rn, o.nn, o.gn = make([]float64, ds), make([]float64, ds), make([]float64, ds)
	o.fac = make([]float32, ds)
	o.gen = o.randomProjection
	return o, nil
}

// randomProjection is the reference's projection, N(0, 1/r) entries
// (random_projector.py get_orthogonal_matrix divides by √r), from tern's
// seeded generator.
func (o *Apollo) randomProjection(q []float32, i int, refresh int64) {
	l := o.lay[i]
	fillGaussian(q, projectionSeed(o.seed, o.params[i].Name, refresh), 1/math.Sqrt(float64(l.r)))
}

// Name implements Optimizer: "apollo-mini" for the rank-1 tensor-wise
// configuration, "apollo" otherwise.
func (o *Apollo) Name() string {
	if o.cfg.Rank == 1 && o.cfg.ScaleType == ApolloTensor {
		return "apollo-mini"
	}
	return "apollo"
}

// Steps returns how many updates have been applied.
func (o *Apollo) Steps() int64 { return o.t }

// apolloParamStateBytes is the state of one weight: two moments of
// r·max(m,n) floats and the limiter's previous norm. The projection is
// regenerated, not stored.
func apolloParamStateBytes(l projLayout) int64 { return 4 * int64(2*l.rSize()+1) }

// StateBytes implements Optimizer: per weight the moments and the limiter
// norm, plus the step counter (two float32) and the seed (four float32 of 16
// bits each), as exported.
func (o *Apollo) StateBytes() int64 {
	n := int64(8 + 16)
	for _, l := range o.lay {
		n += apolloParamStateBytes(l)
	}
	return n
}

// apolloRowGrain is the number of kept-side channels per parallel chunk of
// the moment pass; it targets about 32k values per chunk.
func apolloRowGrain(perChannel int) int { return max(1, adamGrain/max(1, perChannel)) }

// Step implements Optimizer.
func (o *Apollo) Step(lr float64) {
	refresh := o.t / int64(o.cfg.UpdateProjGap)
	o.t++
	b1, b2 := o.cfg.Beta1, o.cfg.Beta2
	bc1 := 1 - math.Pow(b1, float64(o.t))
	bc2 := 1 - math.Pow(b2, float64(o.t))
	step := lr * math.Sqrt(bc2) / bc1
	sqrtScale := math.Sqrt(o.cfg.Scale)
	front, back := 1.0, sqrtScale
	if o.cfg.ScaleFront {
		front, back = sqrtScale, 1
	}
	for i, p := range o.params {
		l := o.lay[i]
		q, x := o.q[:l.qSize()], o.x[:l.rSize()]
		o.gen(q, i, refresh)
		l.project(x, q, p.G)
		rn, nn, gn, fac := o.rn[:l.dd], o.nn[:l.dd], o.gn[:l.dd], o.fac[:l.dd]
		o.moments(l, x, o.m[i], o.v[i], p.G, rn, nn, gn)

		// Scaling factors s_c (apollo.py: norm over the projected dimension
		// for channel, the whole matrix for tensor) and ‖G ⊙ s‖², summed in
		// channel order in float64.
		var sumR, sumN float64
		for c := range rn {
			sumR += rn[c]
			sumN += nn[c]
		}
		tensorS := math.Sqrt(sumN) / (math.Sqrt(sumR) + apolloNormEps)
		var norm2 float64
		for c := range rn {
			s := tensorS
			if o.cfg.ScaleType == ApolloChannel {
				s = math.Sqrt(nn[c]) / (math.Sqrt(rn[c]) + apolloNormEps)
			}
			rn[c] = s * front // reuse rn for the pre-limiter factor
			norm2 += rn[c] * rn[c] * gn[c]
		}
		limit := 1.0
		if !o.cfg.DisableNL {
			norm := math.Sqrt(norm2)
			if o.t > 1 {
				limit = max(norm/(float64(o.prev[i])+apolloNormEps), apolloNLGamma) / apolloNLGamma
				o.prev[i] = float32(norm / limit)
			} else {
				o.prev[i] = float32(norm)
			}
		}
		for c := range fac {
			fac[c] = float32(step * rn[c] / limit * back)
		}
		o.apply(l, p.W, p.G, fac, float32(lr*o.cfg.WeightDecay))
	}
}

// moments updates M and V from R (in x), and accumulates per channel of the
// kept side ‖R_c‖², ‖N_c‖² and ‖G_c‖². Chunks own whole channels, so every
// sum is taken in a fixed order.
func (o *Apollo) moments(l projLayout, x, m, v, g []float32, rn, nn, gn []float64) {
	b1, b2, eps := float32(o.cfg.Beta1), float32(o.cfg.Beta2), float32(o.cfg.Eps)
	upd := func(j int) (float64, float64) {
		r := x[j]
		mj := b1*m[j] + (1-b1)*r
		vj := b2*v[j] + (1-b2)*r*r
		m[j], v[j] = mj, vj
		nj := mj / (float32(math.Sqrt(float64(vj))) + eps)
		return float64(r) * float64(r), float64(nj) * float64(nj)
	}
	if !l.left { // channels are rows of R (m×r) and of G (m×n)
		tensor.ParallelFor(l.m, apolloRowGrain(l.r+l.n), func(lo, hi int) {
			for c := lo; c < hi; c++ {
				var sr, sn, sg float64
				for k := 0; k < l.r; k++ {
					a, b := upd(c*l.r + k)
					sr += a
					sn += b
				}
				for _, gj := range g[c*l.n : (c+1)*l.n] {
					sg += float64(gj) * float64(gj)
				}
				rn[c], nn[c], gn[c] = sr, sn, sg
			}
		})
		return
	}
	// Channels are columns of R (r×n) and of G (m×n): walk rows, accumulate
	// into the chunk's columns.
	tensor.ParallelFor(l.n, apolloRowGrain(l.r+l.m), func(lo, hi int) {
		clear(rn[lo:hi])
		clear(nn[lo:hi])
		clear(gn[lo:hi])
		for k := 0; k < l.r; k++ {
			for c := lo; c < hi; c++ {
				a, b := upd(k*l.n + c)
				rn[c] += a
				nn[c] += b
			}
		}
		for i := 0; i < l.m; i++ {
			row := g[i*l.n : (i+1)*l.n]
			for c := lo; c < hi; c++ {
				gn[c] += float64(row[c]) * float64(row[c])
			}
		}
	})
}

// apply is W ← W − fac_c·G (fac per row on the right, per column on the
// left), then the reference's post-update decay W ← W − lr·λ·W.
func (o *Apollo) apply(l projLayout, w, g, fac []float32, lrDecay float32) {
	tensor.ParallelFor(l.m, apolloRowGrain(l.n), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			wr, gr := w[i*l.n:(i+1)*l.n], g[i*l.n:(i+1)*l.n]
			if l.left {
				for j := range wr {
					wj := wr[j] - fac[j]*gr[j]
					wr[j] = wj - lrDecay*wj
				}
				continue
			}
			f := fac[i]
			for j := range wr {
				wj := wr[j] - f*gr[j]
				wr[j] = wj - lrDecay*wj
			}
		}
	})
}

// State implements Optimizer. The projection is not part of it: it is
// regenerated from the seed, the parameter name and the step count.
func (o *Apollo) State() []NamedTensor {
	ts := make([]NamedTensor, 0, 3*len(o.params)+2)
	for i, p := range o.params {
		l := o.lay[i]
		ts = append(ts,
			NamedTensor{Name: stateName(p, "exp_avg"), Shape: l.rShape(), Data: o.m[i]},
			NamedTensor{Name: stateName(p, "exp_avg_sq"), Shape: l.rShape(), Data: o.v[i]},
			NamedTensor{Name: stateName(p, "nl_norm"), Shape: []int{1}, Data: o.prev[i : i+1]})
	}
	return append(ts,
		NamedTensor{Name: "optim.apollo.step", Shape: []int{2}, Data: splitCount(o.t)},
		NamedTensor{Name: "optim.apollo.seed", Shape: []int{4}, Data: splitSeed(o.seed)})
}

// SetState implements Optimizer. The seed comes from the state, so a resumed
// run draws the projections the interrupted one would have drawn.
func (o *Apollo) SetState(ts []NamedTensor) error {
	dst := make(map[string][]float32, 3*len(o.params)+2)
	prev := make([]float32, len(o.params))
	for i, p := range o.params {
		dst[stateName(p, "exp_avg")] = o.m[i]
		dst[stateName(p, "exp_avg_sq")] = o.v[i]
		dst[stateName(p, "nl_norm")] = prev[i : i+1]
	}
	seed := make([]float32, 4)
	dst["optim.apollo.seed"] = seed
	t, err := restoreStepped("apollo", ts, dst)
	if err != nil {
		return err
	}
	s, err := joinSeed(seed)
	if err != nil {
		return fmt.Errorf("apollo: optim.apollo.seed: %w", err)
	}
	o.t, o.seed = t, s
	copy(o.prev, prev)
	return nil
}

// NewApolloRouted builds the optimizer the APOLLO reference training script
// uses: APOLLO (or APOLLO-Mini) on the 2-D attention and MLP weights and
// AdamW with adam on the rest (embedding, head, norms), at the same learning
// rate. The reference steps the rest with the Hugging Face AdamW convention;
// set adam accordingly to reproduce it.
func NewApolloRouted(params []*model.Param, cfg ApolloConfig, adam AdamWConfig) (*Composite, error) {
	proj, rest := SplitProjected(params)
	a, err := NewApollo(proj, cfg)
	if err != nil {
		return nil, err
	}
	w, err := NewAdamW(rest, adam)
	if err != nil {
		return nil, err
	}
	return NewComposite(a, w)
}
