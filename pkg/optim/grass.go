package optim

import (
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// GRASS row-selection methods (Muhamed et al. 2024, "Grass: Compute
// Efficient Low-Memory LLM Training with Structured Sparse Gradients", §3).
const (
	// GrassTopR keeps the r rows of largest gradient norm (Top-r), ρ = 1.
	GrassTopR = "topr"
	// GrassNorm samples rows with probability q_i ∝ ‖G_i‖^p (Multi-Norm-R
	// with replacement, Multi-Norm-NR without).
	GrassNorm = "norm"
	// GrassUniform samples rows uniformly (Unif-R / Unif-NR). It needs no
	// gradient to select, so the full gradient is never formed.
	GrassUniform = "uniform"
)

// GrassConfig holds GRASS's hyperparameters. Field names follow the job
// spec's optimizer section (optimizer.grass.<field>).
type GrassConfig struct {
	Rank          int    // r: rows selected per weight, capped at its row count m
	UpdateProjGap int    // K: steps between selections
	Selection     string // GrassTopR, GrassNorm or GrassUniform
	// Replacement draws the sampled methods' r rows with replacement (the
	// "-R" variants, exactly unbiased with ρ below) or without ("-NR").
	// Top-r ignores it.
	Replacement bool
	// NormPower is p in q_i ∝ ‖G_i‖₂^p for GrassNorm.
	NormPower   float64
	Scale       float64 // α: multiplier of the scattered-back update
	Seed        uint64  // job seed; samples derive from it, the parameter name and the selection index
	Beta1       float64
	Beta2       float64
	Eps         float64
	WeightDecay float64
}

// DefaultGrassConfig returns tern's defaults. No GRASS reference code is
// public and the paper's hyperparameter tables could not be read
// (research/optimizers.md §6, items marked [U]), so they follow the notes'
// advice to start from GaLore's: r = 128, K = 200, α = 0.25, the Hugging
// Face AdamW core (β = (0.9, 0.999), ε = 1e-6, no weight decay). Top-r is
// the default selection: it is one of the two variants the paper analyses
// (its Top-r and Multi-Norm-NR heatmaps), needs no random draws, and so is
// identical on every data-parallel rank by construction. NormPower 2 is
// length-squared sampling, the classical choice for sampled matrix
// products; p = 1 minimises the estimator's variance (§6.1). Which the paper
// uses is unsettled.
func DefaultGrassConfig() GrassConfig {
	return GrassConfig{Rank: 128, UpdateProjGap: 200, Selection: GrassTopR, NormPower: 2, Scale: 0.25,
		Beta1: 0.9, Beta2: 0.999, Eps: 1e-6}
}

// maxGrassRows is the largest row count whose indices are exact in the
// float32 state tensors.
const maxGrassRows = 1 << 24

// Grass is GRASS, structured sparse gradient projection (Muhamed et al.
// 2024, §3; research/optimizers.md §6). For each m×n weight W ([out, in])
// with gradient G, the projection Pᵀ = ρ·B selects r rows σ of G and scales
// them by ρ, so the compressed gradient is C = ρ ⊙ G[σ, :] (r×n):
//
//	if t mod K = 0: (σ, ρ) ← select(‖G_i‖, method); M, V ← 0
//	C ← ρ ⊙ G[σ, :]
//	t ← t+1;  τ ← (t−1) mod K + 1          (steps since the selection)
//	M ← β1·M + (1−β1)·C;  V ← β2·V + (1−β2)·C²
//	N ← M/(√V + ε)
//	W[σ_j, :] ← W[σ_j, :] − lr·√(1−β2^τ)/(1−β1^τ) · α·ρ_j·N[j, :]   for each j
//	W ← W − lr·λ·W
//
// The update P·N scatters rows back (repeated rows of a with-replacement
// draw add up); rows outside σ move only by weight decay. The Adam core is
// the Hugging Face convention GaLore uses (ε before bias correction, decay
// after the update).
//
// Choices the available sources leave open ([U] in §6), made here:
//   - moments are reset at every selection (the secondary source says so)
//     and so is the bias-correction counter τ: keeping the global count
//     after zeroing M and V over-steps by up to ×6.5 after each selection
//     (§6.2);
//   - rows (output features) are selected, whatever the shape;
//   - ρ: 1 for Top-r; 1/√(r·q_σj) for with-replacement sampling and √(m/r)
//     for uniform without replacement, which make E[P·Pᵀ] = I; 1 for norm
//     sampling without replacement, whose inclusion probabilities have no
//     closed form (so that variant is not unbiased);
//   - the weight decay applies to the whole W.
//
// Memory. The point of GRASS is that G is never formed: between selections
// each weight's Param.RowSel is σ, the backward pass computes only
// GSel = G[σ, :] (r×n, model.Param) and Param.G is nil. Top-r and norm
// selection need the norms of the gradient rows at a selection step, so for
// the backward pass of that step (one in K) Param.G is allocated in full
// and dropped again after the update; with data parallelism that is the
// all-reduced gradient every rank selects from identically. Uniform
// selection needs no gradient, so it never forms G. Weights given to Grass
// must be block attention or MLP weights (the ones whose backward honours
// RowSel) and must not be stepped by another optimizer.
type Grass struct {
	cfg    GrassConfig
	params []*model.Param
	r      []int       // rows selected per weight
	sel    [][]int32   // σ, sorted ascending; also the weight's RowSel
	rho    [][]float32 // ρ
	m, v   [][]float32 // moments, r×n each
	t      int64       // steps taken
	seed   uint64
	x      []float32 // scratch: C, then N, of the largest weight
	norms  [][]float64
}

// NewGrass allocates GRASS state for params, which must be distinct 2-D
// attention or MLP weights of a model's blocks (use SplitProjected, or
// NewGrassRouted to pair the rest with AdamW). It takes over their gradient
// buffers: from now on Param.G is nil except when a selection needs it, and
// Param.RowSel and Param.GSel are set.
func NewGrass(params []*model.Param, cfg GrassConfig) (*Grass, error) {
	if err := checkProjHyper("grass", cfg.Rank, cfg.UpdateProjGap, cfg.Scale); err != nil {
		return nil, err
	}
	switch cfg.Selection {
	case GrassTopR, GrassNorm, GrassUniform:
	default:
		return nil, fmt.Errorf("optimizer.grass.selection must be %q, %q or %q, got %q", GrassTopR, GrassNorm, GrassUniform, cfg.Selection)
	}
	if cfg.Selection == GrassNorm && !(cfg.NormPower > 0 && cfg.NormPower <= 8) {
		return nil, fmt.Errorf("optimizer.grass.normPower must be in (0, 8], got %g", cfg.NormPower)
	}
	if err := checkAdamHyper("grass", cfg.Beta1, cfg.Beta2, cfg.Eps, cfg.WeightDecay); err != nil {
		return nil, err
	}
	o := &Grass{cfg: cfg, params: params, seed: cfg.Seed}
	seen := make(map[string]bool, len(params))
	scratch := 0
	for i, p := range params {
		if p == nil {
			return nil, fmt.Errorf("optimizer.grass: parameter %d is nil", i)
		}
		switch p.Role {
		case model.RoleAttnQK, model.RoleAttnV, model.RoleAttnO, model.RoleMLP:
		default:
			return nil, fmt.Errorf("optimizer.grass: parameter %q has role %s; only attention and MLP weights compute row-selected gradients (route the rest to AdamW, e.g. with SplitProjected)", p.Name, p.Role)
		}
		if len(p.Shape) != 2 || p.Shape[0] < 1 || p.Shape[1] < 1 || p.Shape[0] >= maxGrassRows {
			return nil, fmt.Errorf("optimizer.grass: parameter %q has shape %v; only 2-D weights with 1 to %d rows are projected", p.Name, p.Shape, maxGrassRows-1)
		}
		m, n := p.Shape[0], p.Shape[1]
		if len(p.W) != m*n || (p.G != nil && len(p.G) != m*n) {
			return nil, fmt.Errorf("optimizer.grass: parameter %q of shape %v has %d weights and %d gradients, want %d each", p.Name, p.Shape, len(p.W), len(p.G), m*n)
		}
		if p.RowSel != nil {
			return nil, fmt.Errorf("optimizer.grass: parameter %q already has selected gradient rows; another optimizer owns it", p.Name)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("optimizer.grass: parameter name %q given twice; state names would collide", p.Name)
		}
		seen[p.Name] = true
		r := min(cfg.Rank, m)
		o.r = append(o.r, r)
		o.sel = append(o.sel, make([]int32, r))
		o.rho = append(o.rho, make([]float32, r))
		o.m = append(o.m, make([]float32, r*n))
		o.v = append(o.v, make([]float32, r*n))
		o.norms = append(o.norms, make([]float64, m))
		scratch = max(scratch, r*n)
	}
	o.x = make([]float32, scratch)
	for i, p := range params {
		p.GSel = make([]float32, o.r[i]*p.Shape[1])
	}
	o.prepare()
	return o, nil
}

// Name implements Optimizer.
func (o *Grass) Name() string { return "grass" }

// Steps returns how many updates have been applied.
func (o *Grass) Steps() int64 { return o.t }

// GrassParamStateBytes is the GRASS state of one m×n weight: two r×n
// moments, r row indices and r scales, each 4 bytes (r = min(Rank, m)).
// At r = m/8 the moments alone are 1 byte per weight.
func GrassParamStateBytes(m, n int, cfg GrassConfig) int64 {
	r := int64(min(cfg.Rank, m))
	return 4 * (2*r*int64(n) + 2*r)
}

// StateBytes implements Optimizer: per weight the moments, indices and
// scales, plus the step counter (two float32) and the seed (four float32),
// as exported. The row-selected gradient GSel (r×n) and the full gradient
// allocated at selection steps are gradient memory, not state.
func (o *Grass) StateBytes() int64 {
	n := int64(8 + 16)
	for _, p := range o.params {
		n += GrassParamStateBytes(p.Shape[0], p.Shape[1], o.cfg)
	}
	return n
}

// gradSelects reports whether the selection reads the gradient (every
// method but uniform).
func (o *Grass) gradSelects() bool { return o.cfg.Selection != GrassUniform }

// prepare sets up what the next backward pass (of step o.t) computes for
// every weight: at a selection step of a gradient-based method the full G
// (allocated here, zeroed), otherwise only the rows σ into GSel, with G
// dropped. Uniform selection draws σ here, before the backward pass that
// first uses it; the draw depends only on (seed, name, selection index), so
// doing it again after SetState gives the same σ.
func (o *Grass) prepare() {
	selecting := o.t%int64(o.cfg.UpdateProjGap) == 0
	if selecting && !o.gradSelects() {
		idx := o.t / int64(o.cfg.UpdateProjGap)
		tensor.ParallelFor(len(o.params), 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				p := o.params[i]
				grassSelect(o.sel[i], o.rho[i], nil, p.Shape[0], o.cfg, projectionSeed(o.seed, p.Name, idx))
			}
		})
	}
	for i, p := range o.params {
		if selecting && o.gradSelects() {
			p.RowSel = nil
			if p.G == nil {
				p.G = make([]float32, len(p.W))
			}
			continue
		}
		p.RowSel = o.sel[i]
		p.G = nil
	}
}

// Step implements Optimizer.
func (o *Grass) Step(lr float64) {
	gap := int64(o.cfg.UpdateProjGap)
	selecting := o.t%gap == 0
	full := selecting && o.gradSelects()
	if full {
		o.selectFromGrads(o.t / gap)
	}
	if selecting {
		for i := range o.params {
			clear(o.m[i])
			clear(o.v[i])
		}
	}
	o.t++
	tau := float64((o.t-1)%gap + 1)
	b1, b2 := o.cfg.Beta1, o.cfg.Beta2
	bc1 := 1 - math.Pow(b1, tau)
	bc2 := 1 - math.Pow(b2, tau)
	stepSize := float32(lr * math.Sqrt(bc2) / bc1 * o.cfg.Scale)
	for i, p := range o.params {
		n := p.Shape[1]
		r := o.r[i]
		x := o.x[:r*n]
		sel, rho := o.sel[i], o.rho[i]
		// C = ρ ⊙ G[σ, :]: from the full gradient at a selection step,
		// from the rows the backward pass computed otherwise.
		tensor.ParallelFor(r, rowGrainFor(n), func(lo, hi int) {
			for j := lo; j < hi; j++ {
				src := p.GSel[j*n : (j+1)*n]
				if full {
					src = p.G[int(sel[j])*n : int(sel[j]+1)*n]
				}
				dst, s := x[j*n:(j+1)*n], rho[j]
				for k, g := range src {
					dst[k] = s * g
				}
			}
		})
		hfMoments(x, o.m[i], o.v[i], float32(b1), float32(b2), float32(o.cfg.Eps))
		// Scatter P·N back in σ order, one row at a time, so repeated rows
		// accumulate in a fixed order.
		for j, row := range sel {
			s := stepSize * rho[j]
			w := p.W[int(row)*n : int(row+1)*n]
			nj := x[j*n : (j+1)*n]
			for k := range w {
				w[k] = w[k] - s*nj[k]
			}
		}
		decayAfter(p.W, float32(lr*o.cfg.WeightDecay))
	}
	o.prepare()
}

// rowGrainFor is the number of rows of length n per parallel chunk
// (about adamGrain values).
func rowGrainFor(n int) int { return max(1, adamGrain/max(1, n)) }

// selectFromGrads computes every weight's row norms from its full gradient
// and selects σ, ρ from them. Weights are independent; each is handled by
// one goroutine sequentially, so the result does not depend on the core
// count.
func (o *Grass) selectFromGrads(idx int64) {
	tensor.ParallelFor(len(o.params), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			p := o.params[i]
			n := p.Shape[1]
			norms := o.norms[i]
			for row := range norms {
				norms[row] = math.Sqrt(tensor.SumSquares(p.G[row*n : (row+1)*n]))
			}
			grassSelect(o.sel[i], o.rho[i], norms, p.Shape[0], o.cfg, projectionSeed(o.seed, p.Name, idx))
		}
	})
}

// State implements Optimizer. The row indices are exported as float32
// (exact below 2^24 rows); State allocates that one small tensor per weight.
func (o *Grass) State() []NamedTensor {
	ts := make([]NamedTensor, 0, 4*len(o.params)+2)
	for i, p := range o.params {
		r, n := o.r[i], p.Shape[1]
		rows := make([]float32, r)
		for j, s := range o.sel[i] {
			rows[j] = float32(s)
		}
		ts = append(ts,
			NamedTensor{Name: stateName(p, "exp_avg"), Shape: []int{r, n}, Data: o.m[i]},
			NamedTensor{Name: stateName(p, "exp_avg_sq"), Shape: []int{r, n}, Data: o.v[i]},
			NamedTensor{Name: stateName(p, "grass_rows"), Shape: []int{r}, Data: rows},
			NamedTensor{Name: stateName(p, "grass_scale"), Shape: []int{r}, Data: o.rho[i]})
	}
	return append(ts,
		NamedTensor{Name: "optim.grass.step", Shape: []int{2}, Data: splitCount(o.t)},
		NamedTensor{Name: "optim.grass.seed", Shape: []int{4}, Data: splitSeed(o.seed)})
}

// SetState implements Optimizer. Row indices must be integers in [0, m) and
// scales finite and > 0; nothing is changed unless everything checks out.
// It then sets up the weights' gradient buffers for the next step as Step
// would have.
func (o *Grass) SetState(ts []NamedTensor) error {
	dst := make(map[string][]float32, 4*len(o.params)+2)
	ms, vs := make([][]float32, len(o.params)), make([][]float32, len(o.params))
	rows, rhos := make([][]float32, len(o.params)), make([][]float32, len(o.params))
	for i, p := range o.params {
		r, n := o.r[i], p.Shape[1]
		ms[i], vs[i] = make([]float32, r*n), make([]float32, r*n)
		rows[i], rhos[i] = make([]float32, r), make([]float32, r)
		dst[stateName(p, "exp_avg")] = ms[i]
		dst[stateName(p, "exp_avg_sq")] = vs[i]
		dst[stateName(p, "grass_rows")] = rows[i]
		dst[stateName(p, "grass_scale")] = rhos[i]
	}
	step, seed := make([]float32, 2), make([]float32, 4)
	dst["optim.grass.step"] = step
	dst["optim.grass.seed"] = seed
	if err := restore(ts, dst); err != nil {
		return fmt.Errorf("grass: %w", err)
	}
	t, err := joinCount(step)
	if err != nil {
		return fmt.Errorf("grass: optim.grass.step: %w", err)
	}
	s, err := joinSeed(seed)
	if err != nil {
		return fmt.Errorf("grass: optim.grass.seed: %w", err)
	}
	for i, p := range o.params {
		m := p.Shape[0]
		for j, x := range rows[i] {
			if !(x >= 0 && x < float32(m)) || x != float32(int32(x)) {
				return fmt.Errorf("grass: %s: row %d is %v, want an integer in [0, %d)", stateName(p, "grass_rows"), j, x, m)
			}
		}
		for j, x := range rhos[i] {
			if !(x > 0) || math.IsInf(float64(x), 1) {
				return fmt.Errorf("grass: %s: scale %d is %v, want a finite number > 0", stateName(p, "grass_scale"), j, x)
			}
		}
	}
	for i := range o.params {
		copy(o.m[i], ms[i])
		copy(o.v[i], vs[i])
		copy(o.rho[i], rhos[i])
		for j, x := range rows[i] {
			o.sel[i][j] = int32(x)
		}
	}
	o.t, o.seed = t, s
	o.prepare()
	return nil
}

// NewGrassRouted builds GRASS on the 2-D attention and MLP weights and AdamW
// with adam on the rest (embedding, head, norms), at the same learning rate,
// as the GaLore-style reference scripts route parameters (§1.2; for GRASS
// this routing is presumed, not confirmed).
func NewGrassRouted(params []*model.Param, cfg GrassConfig, adam AdamWConfig) (*Composite, error) {
	proj, rest := SplitProjected(params)
	// AdamW first: it leaves the parameters alone, while NewGrass takes over
	// their gradient buffers, which should not happen if the pair fails.
	a, err := NewAdamW(rest, adam)
	if err != nil {
		return nil, err
	}
	g, err := NewGrass(proj, cfg)
	if err != nil {
		return nil, err
	}
	return NewComposite(g, a)
}
