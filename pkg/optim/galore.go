package optim

import (
	"fmt"
	"math"
	"sync"

	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack"
	"gonum.org/v1/gonum/lapack/lapack64"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// GaLore projection types (galore_projector.py proj_type).
const (
	// GaLoreStd compresses the smaller side: the reference default.
	GaLoreStd = "std"
	// GaLoreReverseStd compresses the larger side.
	GaLoreReverseStd = "reverse_std"
)

// GaLoreConfig holds GaLore's hyperparameters. Field names follow the job
// spec's optimizer section (optimizer.galore.<field>).
type GaLoreConfig struct {
	Rank          int     // r: rank of the projection, capped at min(m, n) per weight
	UpdateProjGap int     // T: steps between SVD refreshes of the projection
	Scale         float64 // α: multiplier of the projected-back update
	ProjType      string  // GaLoreStd or GaLoreReverseStd
	Beta1, Beta2  float64
	Eps           float64
	WeightDecay   float64
}

// DefaultGaLoreConfig returns the reference defaults: rank 128, T = 200 and
// α = 0.25 as in the GaLore README and the 60M C4 script
// (jiaweizzhao/GaLore scripts/benchmark_c4), with the Hugging Face AdamW
// defaults the reference optimizer inherits (β = (0.9, 0.999), ε = 1e-6,
// no weight decay). The paper uses rank 256 at 130M–350M and 512–1024 at 1B.
func DefaultGaLoreConfig() GaLoreConfig {
	return GaLoreConfig{Rank: 128, UpdateProjGap: 200, Scale: 0.25, ProjType: GaLoreStd,
		Beta1: 0.9, Beta2: 0.999, Eps: 1e-6}
}

// GaLore is Gradient Low-Rank Projection (Zhao et al. 2024, "GaLore:
// Memory-Efficient LLM Training by Gradient Low-Rank Projection",
// Algorithm 2), as implemented in jiaweizzhao/GaLore galore_torch/adamw.py and
// galore_projector.py. For each 2-D weight W (m×n) with gradient G:
//
//	if t mod T = 0: P ← top-r singular vectors of G on the smaller side
//	R ← G·Pᵀ (m ≥ n) or Pᵀ·G (m < n)
//	t ← t+1
//	M ← β1·M + (1−β1)·R;  V ← β2·V + (1−β2)·R²
//	N ← M/(√V + ε)
//	W ← W − lr·√(1−β2ᵗ)/(1−β1ᵗ) · α·back(N)
//	W ← W − lr·λ·W
//
// with t counted before the increment at the refresh test, so the first step
// computes the first projection. The moments live in the r-dimensional space
// and are carried across refreshes unchanged, neither reset nor re-projected:
// that is what the reference does (jiaweizzhao/GaLore#54). The inner Adam is
// the Hugging Face convention of the reference (ε before bias correction,
// weight decay after the update).
//
// The SVD is taken in float64 (gonum) of the float32 gradient and rounded to
// float32. It is deterministic for a given binary and input, so data-parallel
// ranks holding the same all-reduced gradient compute the same projection.
type GaLore struct {
	cfg    GaLoreConfig
	params []*model.Param
	lay    []projLayout
	q      [][]float32 // projections, r×d each (see projLayout)
	m, v   [][]float32 // moments, r·D each
	t      int64       // steps taken
	x      []float32   // scratch: R, then N, of the largest weight
	svd    []svdSizes  // SVD buffer lengths of each weight
	svdMax svdSizes    // one buffer set that serves every weight
}

// NewGaLore allocates GaLore state for params, which must be 2-D weights
// (use SplitProjected, or NewGaLoreRouted to pair the rest with AdamW).
func NewGaLore(params []*model.Param, cfg GaLoreConfig) (*GaLore, error) {
	if err := checkProjHyper("galore", cfg.Rank, cfg.UpdateProjGap, cfg.Scale); err != nil {
		return nil, err
	}
	if cfg.ProjType != GaLoreStd && cfg.ProjType != GaLoreReverseStd {
		return nil, fmt.Errorf("optimizer.galore.projType must be %q or %q, got %q", GaLoreStd, GaLoreReverseStd, cfg.ProjType)
	}
	if err := checkAdamHyper("galore", cfg.Beta1, cfg.Beta2, cfg.Eps, cfg.WeightDecay); err != nil {
		return nil, err
	}
	lays, err := projectedParams("galore", params, cfg.Rank, cfg.ProjType == GaLoreReverseStd)
	if err != nil {
		return nil, err
	}
	o := &GaLore{cfg: cfg, params: params, lay: lays}
	scratch := 0
	for _, l := range lays {
		o.q = append(o.q, make([]float32, l.qSize()))
		o.m = append(o.m, make([]float32, l.rSize()))
		o.v = append(o.v, make([]float32, l.rSize()))
		scratch = max(scratch, l.rSize())
	}
	o.x = make([]float32, scratch)
	for _, l := range lays {
		o.svd = append(o.svd, svdSizesOf(l))
	}
	o.svdMax = maxSizes(o.svd)
	return o, nil
}

// Name implements Optimizer.
func (o *GaLore) Name() string { return "galore" }

// Steps returns how many updates have been applied.
func (o *GaLore) Steps() int64 { return o.t }

// galoreParamStateBytes is the state of one m×n weight: the projection
// (r·min(m,n) floats for std) and two moments of r·max(m,n) floats, the
// paper's "mr + 2nr" (§4.2) in float32.
func galoreParamStateBytes(l projLayout) int64 {
	return 4 * int64(l.qSize()+2*l.rSize())
}

// StateBytes implements Optimizer: per weight the projection and the two
// projected moments, plus the 8-byte step counter.
func (o *GaLore) StateBytes() int64 {
	n := int64(8)
	for _, l := range o.lay {
		n += galoreParamStateBytes(l)
	}
	return n
}

// Step implements Optimizer.
func (o *GaLore) Step(lr float64) {
	if o.t%int64(o.cfg.UpdateProjGap) == 0 {
		o.refresh()
	}
	o.t++
	b1, b2 := o.cfg.Beta1, o.cfg.Beta2
	bc1 := 1 - math.Pow(b1, float64(o.t))
	bc2 := 1 - math.Pow(b2, float64(o.t))
	alpha := float32(-lr * math.Sqrt(bc2) / bc1 * o.cfg.Scale)
	for i, p := range o.params {
		l := o.lay[i]
		x := o.x[:l.rSize()]
		l.project(x, o.q[i], p.G)
		hfMoments(x, o.m[i], o.v[i], float32(b1), float32(b2), float32(o.cfg.Eps))
		l.addBack(p.W, alpha, o.q[i], x)
		decayAfter(p.W, float32(lr*o.cfg.WeightDecay))
	}
}

// refresh recomputes every projection from the current gradients. The SVDs
// are independent, so they run one weight per goroutine; each is sequential
// and writes only its own projection, which keeps the result independent of
// the core count. Each goroutine takes one set of float64 buffers sized for
// the largest weight and reuses it for every weight it refreshes, so the
// refresh holds at most min(GOMAXPROCS, weights) sets at once
// (GaLoreTransientBytes) instead of leaving a copy of every gradient behind
// for the garbage collector.
func (o *GaLore) refresh() {
	var mu sync.Mutex
	var free []*svdWork
	tensor.ParallelFor(len(o.params), 1, func(lo, hi int) {
		mu.Lock()
		var w *svdWork
		if n := len(free); n > 0 {
			w, free = free[n-1], free[:n-1]
		}
		mu.Unlock()
		if w == nil {
			w = o.svdMax.alloc()
		}
		for i := lo; i < hi; i++ {
			svdProjection(o.q[i], o.lay[i], o.svd[i], o.params[i].G, o.t > 0, w)
		}
		mu.Lock()
		free = append(free, w)
		mu.Unlock()
	})
}

// svdWork holds the float64 buffers of one SVD (svdProjection): the copy
// of the gradient that LAPACK overwrites, the singular vectors of the
// projected side, the singular values and dgesvd's workspace.
type svdWork struct {
	a, vecs, s, work []float64
}

// svdSizes are the lengths of svdWork's buffers.
type svdSizes struct{ a, vecs, s, work int }

// svdSizesOf is what svdProjection needs for one m×n weight: m·n, d·min(m,n)
// (thin U or V), min(m,n), and the optimal dgesvd workspace, which is also
// what decides dgesvd's algorithm, so it must not change between calls.
func svdSizesOf(l projLayout) svdSizes {
	mn := min(l.m, l.n)
	jobU, jobVT, u, vt := svdJobs(l, nil)
	// A workspace query reads only the dimensions; gonum's checks want a
	// little more than one row of A.
	a := blas64.General{Rows: l.m, Cols: l.n, Stride: l.n, Data: make([]float64, l.n+1)}
	q := []float64{0}
	lapack64.Gesvd(jobU, jobVT, a, u, vt, nil, q, -1)
	return svdSizes{a: l.m * l.n, vecs: l.d * mn, s: mn, work: int(q[0])}
}

// svdJobs are the dgesvd jobs and output matrices for layout l: the thin U
// (m×min(m,n)) on the left, the thin Vᵀ (min(m,n)×n) on the right, as
// torch.linalg.svd(full_matrices=False) gives them; vecs backs the one
// computed.
func svdJobs(l projLayout, vecs []float64) (jobU, jobVT lapack.SVDJob, u, vt blas64.General) {
	mn := min(l.m, l.n)
	if l.left {
		return lapack.SVDStore, lapack.SVDNone, blas64.General{Rows: l.m, Cols: mn, Stride: mn, Data: vecs}, blas64.General{}
	}
	return lapack.SVDNone, lapack.SVDStore, blas64.General{}, blas64.General{Rows: mn, Cols: l.n, Stride: l.n, Data: vecs}
}

// maxSizes is the buffer set that serves every one of sizes: the largest of
// each buffer.
func maxSizes(sizes []svdSizes) svdSizes {
	var z svdSizes
	for _, s := range sizes {
		z = svdSizes{a: max(z.a, s.a), vecs: max(z.vecs, s.vecs), s: max(z.s, s.s), work: max(z.work, s.work)}
	}
	return z
}

func (z svdSizes) alloc() *svdWork {
	return &svdWork{a: make([]float64, z.a), vecs: make([]float64, z.vecs), s: make([]float64, z.s), work: make([]float64, z.work)}
}

func (z svdSizes) bytes() int64 { return 8 * int64(z.a+z.vecs+z.s+z.work) }

// svdProjection writes the top-r singular vectors of the m×n gradient g on
// the projected side into q (r×d): rows of Vᵀ on the right, columns of U
// (as rows) on the left, as get_orthogonal_matrix does with
// torch.linalg.svd(full_matrices=False). A gradient with a NaN or an
// infinity has no SVD (gonum's iteration does not terminate on one), and an
// SVD may fail to converge: then q keeps the previous projection when there
// is one (have) and otherwise becomes the first r coordinate axes. sz is
// svdSizesOf(l); w holds at least that much of each buffer, and its
// contents are overwritten.
func svdProjection(q []float32, l projLayout, sz svdSizes, g []float32, have bool, w *svdWork) {
	fallback := func() {
		if !have {
			clear(q)
			for k := 0; k < l.r; k++ {
				q[k*l.d+k] = 1
			}
		}
	}
	raw := w.a[:sz.a]
	for j, x := range g {
		v := float64(x)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			fallback()
			return
		}
		raw[j] = v
	}
	vecs := w.vecs[:sz.vecs]
	jobU, jobVT, u, vt := svdJobs(l, vecs)
	a := blas64.General{Rows: l.m, Cols: l.n, Stride: l.n, Data: raw}
	if !lapack64.Gesvd(jobU, jobVT, a, u, vt, w.s[:sz.s], w.work[:sz.work], sz.work) {
		fallback()
		return
	}
	mn := min(l.m, l.n)
	for k := 0; k < l.r; k++ {
		for j := 0; j < l.d; j++ {
			if l.left {
				q[k*l.d+j] = float32(vecs[j*mn+k]) // U[j][k]
			} else {
				q[k*l.d+j] = float32(vecs[k*l.n+j]) // Vᵀ[k][j]
			}
		}
	}
}

// GaLoreTransientBytes is the memory a GaLore projection refresh holds on
// top of the optimizer state, over projected 2-D weights refreshed by up to
// workers goroutines at once: one set of float64 SVD buffers (svdWork,
// sized for the largest weight) per concurrent goroutine. gonum's dgesvd
// also allocates small scratch of its own inside its parallel GEMM (about
// 1.3 MB per SVD of a 768×2048 weight), which is not counted: garbage that
// a collection during the refresh may or may not reclaim, it adds up to
// 0.1 GiB over gpt2-shape's 84 weights, and the measured peak there is 3%
// above the plan.
func GaLoreTransientBytes(projected []ParamShape, cfg GaLoreConfig, workers int) int64 {
	if len(projected) == 0 {
		return 0
	}
	sizes := make([]svdSizes, len(projected))
	for i, s := range projected {
		sizes[i] = svdSizesOf(newProjLayout(s.Shape[0], s.Shape[1], cfg.Rank, cfg.ProjType == GaLoreReverseStd))
	}
	return int64(min(max(workers, 1), len(sizes))) * maxSizes(sizes).bytes()
}

// State implements Optimizer.
func (o *GaLore) State() []NamedTensor {
	ts := make([]NamedTensor, 0, 3*len(o.params)+1)
	for i, p := range o.params {
		l := o.lay[i]
		ts = append(ts,
			NamedTensor{Name: stateName(p, "galore_proj"), Shape: l.qShape(), Data: o.q[i]},
			NamedTensor{Name: stateName(p, "exp_avg"), Shape: l.rShape(), Data: o.m[i]},
			NamedTensor{Name: stateName(p, "exp_avg_sq"), Shape: l.rShape(), Data: o.v[i]})
	}
	return append(ts, NamedTensor{Name: "optim.galore.step", Shape: []int{2}, Data: splitCount(o.t)})
}

// SetState implements Optimizer.
func (o *GaLore) SetState(ts []NamedTensor) error {
	t, err := restoreStepped("galore", ts, liveState("galore", o.State()))
	if err != nil {
		return err
	}
	o.t = t
	return nil
}

// NewGaLoreRouted builds the optimizer the GaLore reference training script
// uses: GaLore on the 2-D attention and MLP weights and AdamW with adam on the
// rest (embedding, head, norms), at the same learning rate. The reference
// steps the rest with the Hugging Face AdamW convention; set adam accordingly
// to reproduce it.
func NewGaLoreRouted(params []*model.Param, cfg GaLoreConfig, adam AdamWConfig) (*Composite, error) {
	proj, rest := SplitProjected(params)
	g, err := NewGaLore(proj, cfg)
	if err != nil {
		return nil, err
	}
	a, err := NewAdamW(rest, adam)
	if err != nil {
		return nil, err
	}
	return NewComposite(g, a)
}
