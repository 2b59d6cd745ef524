package optim

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// Adam-mini partitions (AdamMiniConfig.Partition): which elements share one
// second moment. Both are releases of the reference code, zyushun/Adam-mini
// adam_mini/adam_mini.py; neither is strictly the paper's, which describes
// the partition in words (§2.3, Algorithm 3).
const (
	// AdamMiniV11 is the partition of releases 1.1.0 and 1.1.1 (the current
	// one): one block per head for query and key, one per row (token or
	// output neuron) for the embedding, the head, value, attention output
	// and MLP, one per tensor for norms.
	AdamMiniV11 = "v1.1"
	// AdamMiniV10 is the partition of releases 1.0.0 to 1.0.4: the embedding
	// and the head take AdamW (a second moment per element), query and key
	// one block per head, and every other tensor (value, attention output,
	// MLP, norms) is one block.
	AdamMiniV10 = "v1.0"
)

// AdamMiniPartitions lists the allowed values of AdamMiniConfig.Partition,
// the default first.
var AdamMiniPartitions = []string{AdamMiniV11, AdamMiniV10}

// AdamMiniConfig holds Adam-mini's hyperparameters. The README of the
// reference code (zyushun/Adam-mini) asks for the same lr, betas, ε and
// weight decay as AdamW.
type AdamMiniConfig struct {
	Beta1, Beta2 float64
	Eps          float64
	// WeightDecay λ: θ ← θ·(1 − lr·λ) before the update, matrices only.
	WeightDecay float64
	// HeadDim is the number of rows of one attention head in a query or key
	// projection ([heads·HeadDim, dim]); each head is one block. Required
	// (> 0) when any parameter has role attn-qk; ForModel sets it.
	HeadDim int
	// Partition chooses the blocks: AdamMiniV11 (the default; "" means the
	// same, so configurations written before the field keep their meaning)
	// or AdamMiniV10.
	Partition string
}

// DefaultAdamMiniConfig returns the reference code's defaults (v1.1.1:
// betas (0.9, 0.999), ε 1e-8, no weight decay, its partition). HeadDim is
// left 0: call ForModel with the model's configuration.
func DefaultAdamMiniConfig() AdamMiniConfig {
	return AdamMiniConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Partition: AdamMiniV11}
}

// ForModel returns c with HeadDim taken from the model configuration. The
// reference code gets the same number from its dim and n_heads arguments;
// grouped-query key projections have KVHeads blocks of the same size.
func (c AdamMiniConfig) ForModel(mc model.Config) AdamMiniConfig {
	c.HeadDim = mc.HeadDim()
	return c
}

// AdamMini is Adam-mini (Zhang et al. 2024, "Adam-mini: Use Fewer Learning
// Rates To Gain More", arXiv 2406.16793, Algorithm 1, as in the reference
// code zyushun/Adam-mini): Adam with one second-moment scalar per block of
// parameters, the mean of g² over the block, and a full first moment.
// Blocks follow the Hessian's block structure, chosen by role; the
// reference code has changed its partition between releases, and both are
// offered (Partition):
//
//	role                     v1.1 (default)            v1.0
//	attn-qk                  one block per head        one block per head
//	embedding, head          one block per row         one block per element (AdamW)
//	attn-v, attn-o, mlp      one block per row         the whole tensor
//	norm                     the whole tensor          the whole tensor
//
// The step is torch AdamW's with v replaced by the block's scalar:
//
//	θ ← θ·(1 − lr·λ)                       (matrices only)
//	m ← β1·m + (1−β1)·g
//	v_b ← β2·v_b + (1−β2)·mean_{i∈b} g_i²
//	θ_i ← θ_i − (lr/(1−β1ᵗ)) · m_i / (√v_b/√(1−β2ᵗ) + ε)
//
// Per-element, per-row and per-head blocks never straddle a row-shard
// boundary, so vocabulary-sharded embeddings and heads keep the unsharded
// result; a whole-tensor block needs the whole tensor (the reference
// all-reduces Σg² instead), so a sharded tensor with one is refused.
type AdamMini struct {
	cfg    AdamMiniConfig
	params []*model.Param
	block  []int       // elements per block of each parameter
	m      [][]float32 // first moment, one per element
	v      [][]float32 // second moment, one per block
	t      int64
	sums   []float64 // scratch: per-chunk Σg² of a split whole-tensor block
}

// adamMiniDevice is a device that runs the Adam-mini update itself, with
// the same arithmetic as Step (pkg/tensor/cuda's Device does); the state
// then lives in its memory, which the host reads only after a Sync.
type adamMiniDevice interface {
	AdamMini(w, g, m, v []float32, block int, u tensor.AdamWUpdate)
}

// NewAdamMini allocates zeroed state for params and partitions them by role.
func NewAdamMini(params []*model.Param, cfg AdamMiniConfig) (*AdamMini, error) {
	bad := func(field, allowed string, v float64) error {
		return fmt.Errorf("optimizer.adam-mini.%s must be %s, got %g", field, allowed, v)
	}
	switch {
	case !(cfg.Beta1 >= 0 && cfg.Beta1 < 1):
		return nil, bad("beta1", "in [0, 1)", cfg.Beta1)
	case !(cfg.Beta2 >= 0 && cfg.Beta2 < 1):
		return nil, bad("beta2", "in [0, 1)", cfg.Beta2)
	case !(cfg.Eps > 0) || math.IsInf(cfg.Eps, 0):
		return nil, bad("eps", "finite and > 0", cfg.Eps)
	case !(cfg.WeightDecay >= 0) || math.IsInf(cfg.WeightDecay, 0):
		return nil, bad("weightDecay", "finite and >= 0", cfg.WeightDecay)
	case cfg.HeadDim < 0:
		return nil, fmt.Errorf("optimizer.adam-mini.headDim must be >= 0, got %d", cfg.HeadDim)
	}
	if err := checkAdamMiniPartition(cfg.Partition); err != nil {
		return nil, err
	}
	if err := checkParams("adam-mini", params); err != nil {
		return nil, err
	}
	o := &AdamMini{cfg: cfg, params: params}
	chunks := 0
	for _, p := range params {
		b, err := adamMiniBlock(p.Name, p.Role, p.Shape, cfg)
		if err != nil {
			return nil, err
		}
		if adamMiniWhole(p.Role, cfg) && p.GlobalShape != nil && !slices.Equal(p.Shape, p.GlobalShape) {
			return nil, fmt.Errorf("adam-mini: parameter %s is a shard %v of %v, but partition %s makes the whole tensor one block, whose mean of g² would need the other shards", p.Name, p.Shape, p.GlobalShape, o.partition())
		}
		if miniSplit(len(p.W), b) {
			chunks = max(chunks, (b+adamGrain-1)/adamGrain)
		}
		o.block = append(o.block, b)
		if _, ok := p.Device().(adamMiniDevice); ok {
			o.m = append(o.m, p.Device().Alloc(len(p.W)))
			o.v = append(o.v, p.Device().Alloc(len(p.W)/b))
			continue
		}
		o.m = append(o.m, make([]float32, len(p.W)))
		o.v = append(o.v, make([]float32, len(p.W)/b))
	}
	o.sums = make([]float64, chunks)
	return o, nil
}

func checkAdamMiniPartition(p string) error {
	if p != "" && !slices.Contains(AdamMiniPartitions, p) {
		return fmt.Errorf("optimizer.adam-mini.partition must be one of %s, got %q", strings.Join(AdamMiniPartitions, ", "), p)
	}
	return nil
}

func (o *AdamMini) partition() string {
	if o.cfg.Partition == "" {
		return AdamMiniV11
	}
	return o.cfg.Partition
}

// adamMiniBlock is the number of elements sharing one second moment in a
// parameter of the given role and shape under cfg's partition.
func adamMiniBlock(name string, role model.Role, shape []int, cfg AdamMiniConfig) (int, error) {
	size := 1
	for _, d := range shape {
		size *= d
	}
	if len(shape) == 0 || size <= 0 {
		return 0, fmt.Errorf("adam-mini: parameter %s has shape %v, want at least one element", name, shape)
	}
	rowLen := size / shape[0]
	v10 := cfg.Partition == AdamMiniV10
	switch role {
	case model.RoleAttnQK:
		if cfg.HeadDim <= 0 {
			return 0, fmt.Errorf("adam-mini: parameter %s has role attn-qk: optimizer.adam-mini.headDim must be > 0 (set it with ForModel)", name)
		}
		if shape[0]%cfg.HeadDim != 0 {
			return 0, fmt.Errorf("adam-mini: parameter %s has %d rows, not a multiple of optimizer.adam-mini.headDim %d", name, shape[0], cfg.HeadDim)
		}
		return cfg.HeadDim * rowLen, nil
	case model.RoleEmbedding, model.RoleHead:
		if v10 {
			return 1, nil
		}
		return rowLen, nil
	case model.RoleAttnV, model.RoleAttnO, model.RoleMLP:
		if v10 {
			return size, nil
		}
		return rowLen, nil
	case model.RoleNorm:
		return size, nil
	}
	return 0, fmt.Errorf("adam-mini: parameter %s has role %s, which has no block rule", name, role)
}

// adamMiniWhole reports whether cfg's partition makes a tensor of this role
// one block.
func adamMiniWhole(role model.Role, cfg AdamMiniConfig) bool {
	switch role {
	case model.RoleNorm:
		return true
	case model.RoleAttnV, model.RoleAttnO, model.RoleMLP:
		return cfg.Partition == AdamMiniV10
	}
	return false
}

// miniSplit reports whether a parameter of n elements in blocks of bs is
// one block large enough to split its sum of g² over several goroutines
// (only whole-tensor blocks are: splitting every large block would change
// the summation order, and so the bits, of the per-head blocks).
func miniSplit(n, bs int) bool { return bs == n && bs > adamGrain }

// Name implements Optimizer.
func (o *AdamMini) Name() string { return "adam-mini" }

// Steps returns how many updates have been applied.
func (o *AdamMini) Steps() int64 { return o.t }

// Blocks returns the number of second-moment scalars of each parameter.
func (o *AdamMini) Blocks() []int {
	n := make([]int, len(o.v))
	for i, v := range o.v {
		n[i] = len(v)
	}
	return n
}

// StateBytes implements Optimizer: the full first moment, one float per
// block and the step counter.
func (o *AdamMini) StateBytes() int64 {
	var n int64
	for i := range o.params {
		n += int64(len(o.m[i]) + len(o.v[i]))
	}
	return 4*n + 8
}

// Step implements Optimizer.
func (o *AdamMini) Step(lr float64) {
	o.t++
	a := newAdamScalars(o.t, lr, o.cfg.Beta1, o.cfg.Beta2, o.cfg.Eps)
	stepSize, bc2Sqrt, eps, fb1, fb2 := a.stepSize, a.bc2Sqrt, a.eps, a.b1, a.b2
	for i, p := range o.params {
		decay := float32(1)
		if decayed(p) {
			decay = float32(1 - lr*o.cfg.WeightDecay)
		}
		w, g, m, v, bs := p.W, p.G, o.m[i], o.v[i], o.block[i]
		if dev, ok := p.Device().(adamMiniDevice); ok {
			dev.AdamMini(w, g, m, v, bs, tensor.AdamWUpdate{Form: tensor.AdamWTorch, Beta1: fb1, Beta2: fb2,
				Eps: eps, StepSize: stepSize, BC2Sqrt: bc2Sqrt, Decay: decay})
			continue
		}
		if miniSplit(len(w), bs) {
			o.stepWhole(w, g, m, v, a, decay)
			continue
		}
		// Whole blocks per chunk, so each v_b is owned by one chunk.
		tensor.ParallelFor(len(v), max(1, adamGrain/bs), func(lo, hi int) {
			for b := lo; b < hi; b++ {
				gb := g[b*bs : (b+1)*bs]
				var sq float64
				for _, gj := range gb {
					sq += float64(gj) * float64(gj)
				}
				vb := fb2*v[b] + (1-fb2)*float32(sq/float64(bs))
				v[b] = vb
				denom := float32(math.Sqrt(float64(vb)))/bc2Sqrt + eps
				wb, mb := w[b*bs:(b+1)*bs], m[b*bs:(b+1)*bs]
				for j, gj := range gb {
					mj := fb1*mb[j] + (1-fb1)*gj
					mb[j] = mj
					wb[j] = wb[j]*decay - stepSize*mj/denom
				}
			}
		})
	}
}

// stepWhole updates a parameter that is one large block: Σg² in fixed
// chunks of adamGrain elements summed in chunk order (so the result does
// not depend on the core count), then the element-wise update in parallel.
func (o *AdamMini) stepWhole(w, g, m, v []float32, a adamScalars, decay float32) {
	n := len(g)
	sums := o.sums[:(n+adamGrain-1)/adamGrain]
	tensor.ParallelFor(len(sums), 1, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			var sq float64
			for _, gj := range g[c*adamGrain : min((c+1)*adamGrain, n)] {
				sq += float64(gj) * float64(gj)
			}
			sums[c] = sq
		}
	})
	var sq float64
	for _, s := range sums {
		sq += s
	}
	vb := a.b2*v[0] + (1-a.b2)*float32(sq/float64(n))
	v[0] = vb
	denom := float32(math.Sqrt(float64(vb)))/a.bc2Sqrt + a.eps
	tensor.ParallelFor(n, adamGrain, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			mj := a.b1*m[j] + (1-a.b1)*g[j]
			m[j] = mj
			w[j] = w[j]*decay - a.stepSize*mj/denom
		}
	})
}

// State implements Optimizer. exp_avg is the full first moment,
// exp_avg_sq_block the per-block second moments (shape [blocks]).
func (o *AdamMini) State() []NamedTensor {
	ts := make([]NamedTensor, 0, 2*len(o.params)+1)
	for i, p := range o.params {
		ts = append(ts,
			NamedTensor{Name: stateName(p, "exp_avg"), Shape: p.Shape, Data: o.m[i]},
			NamedTensor{Name: stateName(p, "exp_avg_sq_block"), Shape: []int{len(o.v[i])}, Data: o.v[i]})
	}
	return append(ts, NamedTensor{Name: "optim.adam-mini.step", Shape: []int{2}, Data: splitCount(o.t)})
}

// SetState implements Optimizer.
func (o *AdamMini) SetState(ts []NamedTensor) error {
	t, err := restoreStepped("adam-mini", ts, liveState("adam-mini", o.State()))
	if err != nil {
		return err
	}
	o.t = t
	return nil
}
