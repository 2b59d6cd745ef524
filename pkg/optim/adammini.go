package optim

import (
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

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
}

// DefaultAdamMiniConfig returns the reference code's defaults (v1.1.1:
// betas (0.9, 0.999), ε 1e-8, no weight decay). HeadDim is left 0: call
// ForModel with the model's configuration.
func DefaultAdamMiniConfig() AdamMiniConfig {
	return AdamMiniConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

// ForModel returns c with HeadDim taken from the model configuration. The
// reference code gets the same number from its dim and n_heads arguments;
// grouped-query key projections have KVHeads blocks of the same size.
func (c AdamMiniConfig) ForModel(mc model.Config) AdamMiniConfig {
	c.HeadDim = mc.HeadDim()
	return c
}

// AdamMini is Adam-mini (Zhang et al. 2024, "Adam-mini: Use Fewer Learning
// Rates To Gain More", arXiv 2406.16793, Algorithm 1 with the partition of
// the reference code v1.1.1): Adam with one second-moment scalar per block
// of parameters, the mean of g² over the block, and a full first moment.
// Blocks follow the Hessian's block structure, chosen by role:
//
//	attn-qk                                  one block per head (HeadDim rows)
//	embedding, head, attn-v, attn-o, mlp     one block per row (output neuron / token)
//	norm                                     the whole tensor
//
// The step is torch AdamW's with v replaced by the block's scalar:
//
//	θ ← θ·(1 − lr·λ)                       (matrices only)
//	m ← β1·m + (1−β1)·g
//	v_b ← β2·v_b + (1−β2)·mean_{i∈b} g_i²
//	θ_i ← θ_i − (lr/(1−β1ᵗ)) · m_i / (√v_b/√(1−β2ᵗ) + ε)
//
// Per-row and per-head blocks never straddle a row-shard boundary, so
// vocabulary-sharded embeddings and heads keep the unsharded result.
type AdamMini struct {
	cfg    AdamMiniConfig
	params []*model.Param
	block  []int       // elements per block of each parameter
	m      [][]float32 // first moment, one per element
	v      [][]float32 // second moment, one per block
	t      int64
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
	if err := checkParams("adam-mini", params); err != nil {
		return nil, err
	}
	o := &AdamMini{cfg: cfg, params: params}
	for _, p := range params {
		b, err := miniBlock(p, cfg.HeadDim)
		if err != nil {
			return nil, err
		}
		o.block = append(o.block, b)
		o.m = append(o.m, make([]float32, len(p.W)))
		o.v = append(o.v, make([]float32, len(p.W)/b))
	}
	return o, nil
}

// miniBlock is the block size of p (Adam-mini v1.1.1 partition, by role).
func miniBlock(p *model.Param, headDim int) (int, error) {
	rowLen := len(p.W) / p.Shape[0]
	switch p.Role {
	case model.RoleAttnQK:
		if headDim <= 0 {
			return 0, fmt.Errorf("adam-mini: parameter %s has role attn-qk: optimizer.adam-mini.headDim must be > 0 (set it with ForModel)", p.Name)
		}
		if p.Shape[0]%headDim != 0 {
			return 0, fmt.Errorf("adam-mini: parameter %s has %d rows, not a multiple of optimizer.adam-mini.headDim %d", p.Name, p.Shape[0], headDim)
		}
		return headDim * rowLen, nil
	case model.RoleEmbedding, model.RoleHead, model.RoleAttnV, model.RoleAttnO, model.RoleMLP:
		return rowLen, nil
	case model.RoleNorm:
		return len(p.W), nil
	}
	return 0, fmt.Errorf("adam-mini: parameter %s has role %s, which has no block rule", p.Name, p.Role)
}

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
