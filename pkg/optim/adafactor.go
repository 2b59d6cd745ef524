package optim

import (
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// AdafactorConfig holds Adafactor's hyperparameters, named after the
// arguments of Hugging Face transformers' Adafactor (optimization.py).
type AdafactorConfig struct {
	// Eps1 is added to g² before any averaging (HF eps[0]); it keeps an
	// all-zero gradient row from producing rsqrt(0).
	Eps1 float64
	// Eps2 floors the parameter RMS that scales the step when ScaleParameter
	// is on (HF eps[1]).
	Eps2 float64
	// ClipThreshold is d of the update clipping u/max(1, RMS(u)/d).
	ClipThreshold float64
	// DecayRate is the exponent of the second-moment decay schedule
	// β̂2,t = 1 − t^DecayRate (−0.8 in the paper and HF).
	DecayRate float64
	// Beta1 enables a first moment over the lr-scaled update; 0 means none
	// (HF beta1=None; β1 = 0 would give the same numbers with a wasted
	// buffer, so 0 stands for both).
	Beta1 float64
	// WeightDecay λ: θ ← θ − λ·α_t·θ before the update, matrices only.
	WeightDecay float64
	// RelativeStep replaces the learning rate passed to Step by
	// ρ_t = min(1e-2, 1/√t) (or min(1e-6·t, 1/√t) with WarmupInit).
	RelativeStep bool
	// ScaleParameter multiplies the step by max(Eps2, RMS(θ)).
	ScaleParameter bool
	// WarmupInit makes the relative step grow linearly from 1e-6.
	WarmupInit bool
}

// DefaultAdafactorConfig is the configuration of the Adafactor baselines in
// the GaLore and APOLLO papers (GaLore torchrun_main.py: transformers
// Adafactor(lr=args.lr, relative_step=False, scale_parameter=False,
// warmup_init=False), the rest at the class defaults): ε = (1e-30, 1e-3),
// d = 1, decay rate −0.8, no β1, no weight decay, and an external learning
// rate schedule. The HF class itself defaults to RelativeStep and
// ScaleParameter on; set both to get that behaviour.
func DefaultAdafactorConfig() AdafactorConfig {
	return AdafactorConfig{Eps1: 1e-30, Eps2: 1e-3, ClipThreshold: 1, DecayRate: -0.8}
}

// Adafactor is the optimizer of Shazeer & Stern 2018 ("Adafactor: Adaptive
// Learning Rates with Sublinear Memory Cost") with the exact step of Hugging
// Face transformers' Adafactor, which the GaLore, APOLLO and CAME papers use
// as their baseline. Per step t (counted from 1), for each parameter:
//
//	α_t = ρ_t · (ScaleParameter ? max(ε2, RMS(θ)) : 1),  ρ_t = lr or the relative step
//	β̂  = 1 − t^DecayRate                                      (Alg. 4, §7.2)
//	U   = g² + ε1
//	≥2-D: R ← β̂R + (1−β̂)·mean_cols(U),  C ← β̂C + (1−β̂)·mean_rows(U)
//	      u = g ⊙ rsqrt(R/mean(R)) ⊗ rsqrt(C)               (Alg. 4; V̂ = R Cᵀ/ΣR)
//	1-D:  V ← β̂V + (1−β̂)·U,  u = g ⊙ rsqrt(V)               (Alg. 3)
//	u ← α_t · u / max(1, RMS(u)/d)                            (§6, eq. 12)
//	β1 > 0: m ← β1·m + (1−β1)·u,  u ← m
//	θ ← θ − λ·α_t·θ − u
//
// Weight decay applies to matrices only, as tern's AdamW. The factored
// statistics of a row-sharded tensor (a vocabulary shard) cover the local rows
// only, so such a tensor is updated as if it were the whole matrix.
type Adafactor struct {
	cfg    AdafactorConfig
	params []*model.Param
	row    [][]float32 // factored: R per parameter (nil otherwise)
	col    [][]float32 // factored: C
	sq     [][]float32 // unfactored: V
	m      [][]float32 // β1 > 0: first moment
	t      int64
	s      factorScratch
}

// NewAdafactor allocates zeroed state for params.
func NewAdafactor(params []*model.Param, cfg AdafactorConfig) (*Adafactor, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := checkParams("adafactor", params); err != nil {
		return nil, err
	}
	o := &Adafactor{cfg: cfg, params: params}
	for _, p := range params {
		f, ok := factorOf(p.Shape)
		var r, c, v, m []float32
		if ok {
			r, c = make([]float32, f.batch*f.rows), make([]float32, f.batch*f.cols)
		} else {
			v = make([]float32, len(p.W))
		}
		if cfg.Beta1 > 0 {
			m = make([]float32, len(p.W))
		}
		o.row, o.col, o.sq, o.m = append(o.row, r), append(o.col, c), append(o.sq, v), append(o.m, m)
		o.s.fit(p.Shape, len(p.W))
	}
	return o, nil
}

func (c AdafactorConfig) validate() error {
	bad := func(field, allowed string, v float64) error {
		return fmt.Errorf("optimizer.adafactor.%s must be %s, got %g", field, allowed, v)
	}
	switch {
	case !(c.Eps1 > 0) || math.IsInf(c.Eps1, 0):
		return bad("eps1", "finite and > 0", c.Eps1)
	case !(c.Eps2 >= 0) || math.IsInf(c.Eps2, 0):
		return bad("eps2", "finite and >= 0", c.Eps2)
	case !(c.ClipThreshold > 0) || math.IsInf(c.ClipThreshold, 0):
		return bad("clipThreshold", "finite and > 0", c.ClipThreshold)
	case !(c.DecayRate >= -1 && c.DecayRate <= 0):
		return bad("decayRate", "in [-1, 0]", c.DecayRate)
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return bad("beta1", "in [0, 1) (0: no first moment)", c.Beta1)
	case !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 0):
		return bad("weightDecay", "finite and >= 0", c.WeightDecay)
	case c.WarmupInit && !c.RelativeStep:
		return fmt.Errorf("optimizer.adafactor.warmupInit needs optimizer.adafactor.relativeStep: true")
	}
	return nil
}

// Name implements Optimizer.
func (o *Adafactor) Name() string { return "adafactor" }

// Steps returns how many updates have been applied.
func (o *Adafactor) Steps() int64 { return o.t }

// StateBytes implements Optimizer: R and C (rows+cols floats) per factored
// tensor, V per unfactored one, the first moment if β1 > 0, and the step
// counter.
func (o *Adafactor) StateBytes() int64 {
	var n int64
	for i := range o.params {
		n += int64(len(o.row[i]) + len(o.col[i]) + len(o.sq[i]) + len(o.m[i]))
	}
	return 4*n + 8
}

// relStep is ρ_t of HF's _get_lr: the lr passed to Step, or the relative
// step size when RelativeStep is set.
func (o *Adafactor) relStep(lr float64) float64 {
	if !o.cfg.RelativeStep {
		return lr
	}
	minStep := 1e-2
	if o.cfg.WarmupInit {
		minStep = 1e-6 * float64(o.t)
	}
	return min(minStep, 1/math.Sqrt(float64(o.t)))
}

// Step implements Optimizer. lr is the external learning rate; it is ignored
// when RelativeStep is set.
func (o *Adafactor) Step(lr float64) {
	o.t++
	rho := o.relStep(lr)
	beta := 1 - math.Pow(float64(o.t), o.cfg.DecayRate)
	eps1 := float32(o.cfg.Eps1)
	for i, p := range o.params {
		alpha := rho
		if o.cfg.ScaleParameter {
			rms := math.Sqrt(tensor.SumSquares(p.W) / float64(len(p.W)))
			alpha *= max(o.cfg.Eps2, rms)
		}
		var wd float32
		if decayed(p) {
			wd = float32(o.cfg.WeightDecay * alpha)
		}
		g := p.G
		if f, ok := factorOf(p.Shape); ok {
			o.s.rowColMeans(f, func(row int, out []float32) {
				for j, gj := range g[row*f.cols:][:f.cols] {
					out[j] = gj*gj + eps1
				}
			})
			o.s.emaFactors(f, o.row[i], o.col[i], beta)
			scale := float32(alpha / clipDivisor(o.s.factoredRMS(f, g), o.cfg.ClipThreshold))
			o.applyFactored(f, p, o.m[i], scale, wd)
			continue
		}
		o.stepFlat(p, o.sq[i], o.m[i], beta, alpha, wd)
	}
}

// applyFactored applies θ ← θ − wd·θ − u with u = scale·rf_i·cf_j·g_ij
// (through the first moment when there is one).
func (o *Adafactor) applyFactored(f factored, p *model.Param, m []float32, scale, wd float32) {
	b1 := float32(o.cfg.Beta1)
	w, g, s := p.W, p.G, &o.s
	tensor.ParallelFor(f.batch*f.rows, rowGrain(f.cols), func(lo, hi int) {
		for row := lo; row < hi; row++ {
			rf := s.rf[row]
			cf := s.cf[(row/f.rows)*f.cols:][:f.cols]
			off := row * f.cols
			wr, gr := w[off:off+f.cols], g[off:off+f.cols]
			if m == nil {
				for j, gj := range gr {
					u := rf * cf[j] * gj * scale
					wj := wr[j]
					wr[j] = wj - wd*wj - u
				}
				continue
			}
			mr := m[off : off+f.cols]
			for j, gj := range gr {
				u := rf * cf[j] * gj * scale
				mj := b1*mr[j] + (1-b1)*u
				mr[j] = mj
				wj := wr[j]
				wr[j] = wj - wd*wj - mj
			}
		}
	})
}

// stepFlat is the unfactored update (Shazeer & Stern 2018, Alg. 3) of a 1-D
// parameter.
func (o *Adafactor) stepFlat(p *model.Param, v, m []float32, beta, alpha float64, wd float32) {
	w, g := p.W, p.G
	b, nb, eps1 := float32(beta), float32(1-beta), float32(o.cfg.Eps1)
	sq := o.s.flatSq
	tensor.ParallelFor(len(w), adamGrain, func(lo, hi int) {
		var s float64
		for j := lo; j < hi; j++ {
			gj := g[j]
			vj := b*v[j] + nb*(gj*gj+eps1)
			v[j] = vj
			u := gj / float32(math.Sqrt(float64(vj)))
			s += float64(u) * float64(u)
		}
		sq[lo/adamGrain] = s
	})
	var sum float64
	for _, x := range sq[:(len(w)+adamGrain-1)/adamGrain] {
		sum += x
	}
	scale := float32(alpha / clipDivisor(math.Sqrt(sum/float64(len(w))), o.cfg.ClipThreshold))
	b1 := float32(o.cfg.Beta1)
	tensor.ParallelFor(len(w), adamGrain, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			u := g[j] / float32(math.Sqrt(float64(v[j]))) * scale
			if m != nil {
				u = b1*m[j] + (1-b1)*u
				m[j] = u
			}
			wj := w[j]
			w[j] = wj - wd*wj - u
		}
	})
}

// State implements Optimizer. Slot names follow HF's state dict:
// exp_avg_sq_row/exp_avg_sq_col (factored), exp_avg_sq, exp_avg.
func (o *Adafactor) State() []NamedTensor {
	var ts []NamedTensor
	for i, p := range o.params {
		if o.row[i] != nil {
			ts = append(ts,
				NamedTensor{Name: stateName(p, "exp_avg_sq_row"), Shape: rowShape(p.Shape), Data: o.row[i]},
				NamedTensor{Name: stateName(p, "exp_avg_sq_col"), Shape: colShape(p.Shape), Data: o.col[i]})
		} else {
			ts = append(ts, NamedTensor{Name: stateName(p, "exp_avg_sq"), Shape: p.Shape, Data: o.sq[i]})
		}
		if o.m[i] != nil {
			ts = append(ts, NamedTensor{Name: stateName(p, "exp_avg"), Shape: p.Shape, Data: o.m[i]})
		}
	}
	return append(ts, NamedTensor{Name: "optim.adafactor.step", Shape: []int{2}, Data: splitCount(o.t)})
}

// SetState implements Optimizer.
func (o *Adafactor) SetState(ts []NamedTensor) error {
	t, err := restoreStepped("adafactor", ts, liveState("adafactor", o.State()))
	if err != nil {
		return err
	}
	o.t = t
	return nil
}
