package optim

import (
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// AdamWConfig holds AdamW's hyperparameters.
type AdamWConfig struct {
	Beta1, Beta2 float64
	Eps          float64
	WeightDecay  float64
	// Convention picks where ε and weight decay enter the update:
	// AdamWPyTorch (the default, also when empty) or AdamWHF.
	Convention string
}

// AdamW conventions. Both appear in the reference code of the optimizers
// tern implements, and the GaLore/APOLLO paper numbers were produced with the
// second one, so the choice has to be explicit.
const (
	// AdamWPyTorch is torch.optim.AdamW: decay θ·(1−lr·λ) before the update,
	// ε added after bias-correcting √v.
	AdamWPyTorch = "pytorch"
	// AdamWHF is the AdamW of Hugging Face transformers (optimization.py,
	// correct_bias=True) that GaLore, APOLLO and Natural GaLore copy into
	// their repositories: ε added to √v before bias correction, the bias
	// corrections folded into the step size lr·√(1−β2ᵗ)/(1−β1ᵗ), and weight
	// decay θ ← θ − lr·λ·θ applied after the update, to the updated θ.
	// The reference defaults there are ε = 1e-6, λ = 0.
	AdamWHF = "hf"
)

// AdamW is Adam with decoupled weight decay (Loshchilov & Hutter 2019,
// "Decoupled Weight Decay Regularization", Algorithm 2). By default it has
// the exact semantics of PyTorch's torch.optim.AdamW (foreach=False,
// amsgrad=False); Convention AdamWHF selects the Hugging Face form instead:
//
//	p ← p·(1 − lr·λ)
//	m ← β1·m + (1−β1)·g
//	v ← β2·v + (1−β2)·g²
//	p ← p − (lr/(1−β1ᵗ)) · m / (√v/√(1−β2ᵗ) + ε)
//
// Weight decay is applied to matrices only (len(Shape) ≥ 2); norm weights are
// not decayed, as in the GPT-2/LLaMA reference training scripts. Both
// conventions keep the same state (m, v, step), so a checkpoint does not
// record which one wrote it.
type AdamW struct {
	cfg    AdamWConfig
	params []*model.Param
	m, v   [][]float32
	t      int64 // steps taken
}

// NewAdamW allocates zeroed moments for params.
func NewAdamW(params []*model.Param, cfg AdamWConfig) (*AdamW, error) {
	if cfg.Beta1 < 0 || cfg.Beta1 >= 1 || cfg.Beta2 < 0 || cfg.Beta2 >= 1 {
		return nil, fmt.Errorf("adamw: betas must be in [0,1), got %g, %g", cfg.Beta1, cfg.Beta2)
	}
	if cfg.Eps <= 0 {
		return nil, fmt.Errorf("adamw: eps must be > 0, got %g", cfg.Eps)
	}
	if cfg.WeightDecay < 0 {
		return nil, fmt.Errorf("adamw: weightDecay must be >= 0, got %g", cfg.WeightDecay)
	}
	switch cfg.Convention {
	case "":
		cfg.Convention = AdamWPyTorch
	case AdamWPyTorch, AdamWHF:
	default:
		return nil, fmt.Errorf("optimizer.adamw.convention must be %q or %q, got %q", AdamWPyTorch, AdamWHF, cfg.Convention)
	}
	o := &AdamW{cfg: cfg, params: params}
	for _, p := range params {
		dev := p.Device()
		o.m = append(o.m, dev.Alloc(len(p.W)))
		o.v = append(o.v, dev.Alloc(len(p.W)))
	}
	return o, nil
}

// Name implements Optimizer.
func (o *AdamW) Name() string { return "adamw" }

// Steps returns how many updates have been applied.
func (o *AdamW) Steps() int64 { return o.t }

// StateBytes implements Optimizer: two float32 moments per parameter plus the
// step counter.
func (o *AdamW) StateBytes() int64 {
	var n int64
	for _, m := range o.m {
		n += int64(len(m))
	}
	return 8*n + 8
}

// adamGrain is the chunk size of the other optimizers' parallel updates:
// large enough to amortise scheduling, small enough to balance two cores on
// small tensors.
const adamGrain = 1 << 15

// Step implements Optimizer. The update itself is the parameter's device's
// AdamW kernel, so it runs where the parameter lives.
func (o *AdamW) Step(lr float64) {
	if o.cfg.Convention == AdamWHF {
		o.stepHF(lr)
		return
	}
	o.t++
	a := newAdamScalars(o.t, lr, o.cfg.Beta1, o.cfg.Beta2, o.cfg.Eps)
	u := tensor.AdamWUpdate{Form: tensor.AdamWTorch, Beta1: a.b1, Beta2: a.b2, Eps: a.eps, StepSize: a.stepSize, BC2Sqrt: a.bc2Sqrt}
	for i, p := range o.params {
		u.Decay = 1
		if decayed(p) {
			u.Decay = float32(1 - lr*o.cfg.WeightDecay)
		}
		p.Device().AdamW(p.W, p.G, o.m[i], o.v[i], u)
	}
}

// stepHF is one update in the AdamWHF convention (transformers
// optimization.py AdamW.step, as copied into GaLore's galore_torch/adamw.py):
//
//	m ← β1·m + (1−β1)·g
//	v ← β2·v + (1−β2)·g²
//	p ← p − lr·√(1−β2ᵗ)/(1−β1ᵗ) · m/(√v + ε)
//	p ← p − lr·λ·p
//
// It equals the PyTorch form with ε replaced by ε/√(1−β2ᵗ) and the decay
// moved after the update (a difference of order lr²·λ).
func (o *AdamW) stepHF(lr float64) {
	o.t++
	b1, b2 := o.cfg.Beta1, o.cfg.Beta2
	bc1 := 1 - math.Pow(b1, float64(o.t))
	bc2 := 1 - math.Pow(b2, float64(o.t))
	u := tensor.AdamWUpdate{
		Form:  tensor.AdamWHF,
		Beta1: float32(b1), Beta2: float32(b2), Eps: float32(o.cfg.Eps),
		StepSize: float32(lr * math.Sqrt(bc2) / bc1),
	}
	for i, p := range o.params {
		u.Decay = 0
		if decayed(p) {
			u.Decay = float32(lr * o.cfg.WeightDecay)
		}
		p.Device().AdamW(p.W, p.G, o.m[i], o.v[i], u)
	}
}

// State implements Optimizer.
func (o *AdamW) State() []NamedTensor {
	ts := make([]NamedTensor, 0, 2*len(o.params)+1)
	for i, p := range o.params {
		ts = append(ts,
			NamedTensor{Name: stateName(p, "exp_avg"), Shape: p.Shape, Data: o.m[i]},
			NamedTensor{Name: stateName(p, "exp_avg_sq"), Shape: p.Shape, Data: o.v[i]})
	}
	// The step count is exact in float32 up to 2^24 steps; stored as two
	// 24-bit halves so no realistic run loses it.
	ts = append(ts, NamedTensor{Name: "optim.adamw.step", Shape: []int{2}, Data: splitCount(o.t)})
	return ts
}

// SetState implements Optimizer.
func (o *AdamW) SetState(ts []NamedTensor) error {
	t, err := restoreStepped("adamw", ts, liveState("adamw", o.State()))
	if err != nil {
		return err
	}
	o.t = t
	return nil
}

const countHalf = 1 << 24

func splitCount(n int64) []float32 {
	return []float32{float32(n / countHalf), float32(n % countHalf)}
}

func joinCount(v []float32) (int64, error) {
	hi, lo := v[0], v[1]
	if hi < 0 || lo < 0 || lo >= countHalf || hi != float32(int64(hi)) || lo != float32(int64(lo)) {
		return 0, fmt.Errorf("not a step count: %v", v)
	}
	return int64(hi)*countHalf + int64(lo), nil
}
