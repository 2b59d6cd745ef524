package optim

import (
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// CAMEConfig holds CAME's hyperparameters, named after the arguments of the
// reference implementation (yangluo7/CAME came_pytorch/CAME.py).
type CAMEConfig struct {
	// Beta1 is the first-moment decay, Beta2 the factored second moment's,
	// Beta3 the factored instability's (the paper's β1, β2, β3).
	Beta1, Beta2, Beta3 float64
	// Eps1 is added to g², Eps2 to the instability (u − m)² (eps[0], eps[1]).
	Eps1, Eps2 float64
	// ClipThreshold is d of the update clipping u/max(1, RMS(u)/d).
	ClipThreshold float64
	// WeightDecay λ: θ ← θ − lr·λ·θ before the update, matrices only.
	WeightDecay float64
}

// DefaultCAMEConfig returns the reference code's defaults: betas
// (0.9, 0.999, 0.9999), eps (1e-30, 1e-16), clip threshold 1, no weight
// decay. The README suggests an lr of 0.5–0.9× the AdamW one and, for
// β2 = 0.95, β3 = 0.995 (the LLaMA-1B C4 run).
func DefaultCAMEConfig() CAMEConfig {
	return CAMEConfig{Beta1: 0.9, Beta2: 0.999, Beta3: 0.9999, Eps1: 1e-30, Eps2: 1e-16, ClipThreshold: 1}
}

// CAME is the confidence-guided adaptive memory-efficient optimizer of Luo et
// al. 2023 ("CAME: Confidence-guided Adaptive Memory Efficient Optimization",
// ACL 2023, Algorithm 1), following the reference code step by step. It has no
// bias correction. Per parameter:
//
//	U = g² + ε1
//	≥2-D: R ← β2R + (1−β2)·mean_cols(U), C ← β2C + (1−β2)·mean_rows(U)
//	      u = g ⊙ rsqrt(R/mean(R)) ⊗ rsqrt(C)                    (Alg. 1, lines 5–8)
//	1-D:  V ← β2V + (1−β2)·U,  u = g ⊙ rsqrt(V)
//	u ← u / max(1, RMS(u)/d)                                       (line 9)
//	m ← β1·m + (1−β1)·u                                            (line 10)
//	≥2-D: I = (u − m)² + ε2                                         (line 11, instability)
//	      R' ← β3R' + (1−β3)·mean_cols(I), C' ← β3C' + (1−β3)·mean_rows(I)
//	      Δ = m ⊙ rsqrt(R'/mean(R')) ⊗ rsqrt(C')                  (lines 12–15)
//	1-D:  Δ = m (the reference has no confidence term for vectors)
//	θ ← θ − lr·λ·θ − lr·Δ
//
// At step 1 the clipped u has RMS ≤ d, m = (1−β1)·u and the instability is
// β1²·u², whose average starts at (1−β3)·β1²·u²: the first step is about
// (1−β1)/(β1·√(1−β3)) ≈ 11·lr per coordinate at the defaults, so run it with
// warmup, as the paper does. Weight
// decay applies to matrices only, and row-sharded tensors are factored over
// their local rows, as in Adafactor.
type CAME struct {
	cfg            CAMEConfig
	params         []*model.Param
	m              [][]float32
	row, col, sq   [][]float32 // second moment: factored R, C or full V
	resRow, resCol [][]float32 // factored instability R', C'
	t              int64
	s              factorScratch
}

// NewCAME allocates zeroed state for params.
func NewCAME(params []*model.Param, cfg CAMEConfig) (*CAME, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := checkParams("came", params); err != nil {
		return nil, err
	}
	o := &CAME{cfg: cfg, params: params}
	for _, p := range params {
		f, ok := factorOf(p.Shape)
		var r, c, v, rr, rc []float32
		if ok {
			r, c = make([]float32, f.batch*f.rows), make([]float32, f.batch*f.cols)
			rr, rc = make([]float32, f.batch*f.rows), make([]float32, f.batch*f.cols)
		} else {
			v = make([]float32, len(p.W))
		}
		o.m = append(o.m, make([]float32, len(p.W)))
		o.row, o.col, o.sq = append(o.row, r), append(o.col, c), append(o.sq, v)
		o.resRow, o.resCol = append(o.resRow, rr), append(o.resCol, rc)
		o.s.fit(p.Shape, len(p.W))
	}
	return o, nil
}

func (c CAMEConfig) validate() error {
	bad := func(field, allowed string, v float64) error {
		return fmt.Errorf("optimizer.came.%s must be %s, got %g", field, allowed, v)
	}
	for _, b := range []struct {
		name string
		v    float64
	}{{"beta1", c.Beta1}, {"beta2", c.Beta2}, {"beta3", c.Beta3}} {
		if !(b.v >= 0 && b.v < 1) {
			return bad(b.name, "in [0, 1)", b.v)
		}
	}
	switch {
	case !(c.Eps1 > 0) || math.IsInf(c.Eps1, 0):
		return bad("eps1", "finite and > 0", c.Eps1)
	case !(c.Eps2 > 0) || math.IsInf(c.Eps2, 0):
		return bad("eps2", "finite and > 0", c.Eps2)
	case !(c.ClipThreshold > 0) || math.IsInf(c.ClipThreshold, 0):
		return bad("clipThreshold", "finite and > 0", c.ClipThreshold)
	case !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 0):
		return bad("weightDecay", "finite and >= 0", c.WeightDecay)
	}
	return nil
}

// Name implements Optimizer.
func (o *CAME) Name() string { return "came" }

// Steps returns how many updates have been applied.
func (o *CAME) Steps() int64 { return o.t }

// StateBytes implements Optimizer: the first moment, R and C, and R' and C'
// per factored tensor (mn + 2(m+n) floats), the first moment and V per
// unfactored one, and the step counter.
func (o *CAME) StateBytes() int64 {
	var n int64
	for i := range o.params {
		n += int64(len(o.m[i]) + len(o.row[i]) + len(o.col[i]) + len(o.sq[i]) + len(o.resRow[i]) + len(o.resCol[i]))
	}
	return 4*n + 8
}

// Step implements Optimizer.
func (o *CAME) Step(lr float64) {
	o.t++
	eps1, eps2 := float32(o.cfg.Eps1), float32(o.cfg.Eps2)
	b1 := float32(o.cfg.Beta1)
	for i, p := range o.params {
		var wd float32
		if decayed(p) {
			wd = float32(lr * o.cfg.WeightDecay)
		}
		f, ok := factorOf(p.Shape)
		if !ok {
			o.stepFlat(p, o.sq[i], o.m[i], float32(lr), wd)
			continue
		}
		g, m, s := p.G, o.m[i], &o.s
		s.rowColMeans(f, func(row int, out []float32) {
			for j, gj := range g[row*f.cols:][:f.cols] {
				out[j] = gj*gj + eps1
			}
		})
		s.emaFactors(f, o.row[i], o.col[i], o.cfg.Beta2)
		inv := float32(1 / clipDivisor(s.factoredRMS(f, g), o.cfg.ClipThreshold))
		// One pass over the rows updates m and yields the instability's row
		// and column means; rowColMeans visits each row once.
		s.rowColMeans(f, func(row int, out []float32) {
			rf := s.rf[row]
			cf := s.cf[(row/f.rows)*f.cols:][:f.cols]
			off := row * f.cols
			mr := m[off : off+f.cols]
			for j, gj := range g[off : off+f.cols] {
				u := rf * cf[j] * gj * inv
				mj := b1*mr[j] + (1-b1)*u
				mr[j] = mj
				d := u - mj
				out[j] = d*d + eps2
			}
		})
		s.emaFactors(f, o.resRow[i], o.resCol[i], o.cfg.Beta3)
		w, flr := p.W, float32(lr)
		tensor.ParallelFor(f.batch*f.rows, rowGrain(f.cols), func(lo, hi int) {
			for row := lo; row < hi; row++ {
				rf := s.rf[row]
				cf := s.cf[(row/f.rows)*f.cols:][:f.cols]
				off := row * f.cols
				wr, mr := w[off:off+f.cols], m[off:off+f.cols]
				for j, mj := range mr {
					wj := wr[j]
					wr[j] = wj - wd*wj - flr*(rf*cf[j]*mj)
				}
			}
		})
	}
}

// stepFlat is the update of a 1-D parameter: Adafactor's unfactored second
// moment with clipping and momentum, no confidence term.
func (o *CAME) stepFlat(p *model.Param, v, m []float32, lr, wd float32) {
	w, g := p.W, p.G
	b2, nb2, eps1 := float32(o.cfg.Beta2), float32(1-o.cfg.Beta2), float32(o.cfg.Eps1)
	sq := o.s.flatSq
	tensor.ParallelFor(len(w), adamGrain, func(lo, hi int) {
		var s float64
		for j := lo; j < hi; j++ {
			gj := g[j]
			vj := b2*v[j] + nb2*(gj*gj+eps1)
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
	inv := float32(1 / clipDivisor(math.Sqrt(sum/float64(len(w))), o.cfg.ClipThreshold))
	b1 := float32(o.cfg.Beta1)
	tensor.ParallelFor(len(w), adamGrain, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			u := g[j] / float32(math.Sqrt(float64(v[j]))) * inv
			mj := b1*m[j] + (1-b1)*u
			m[j] = mj
			wj := w[j]
			w[j] = wj - wd*wj - lr*mj
		}
	})
}

// State implements Optimizer. Slot names follow the reference state dict.
func (o *CAME) State() []NamedTensor {
	var ts []NamedTensor
	for i, p := range o.params {
		ts = append(ts, NamedTensor{Name: stateName(p, "exp_avg"), Shape: p.Shape, Data: o.m[i]})
		if o.row[i] != nil {
			ts = append(ts,
				NamedTensor{Name: stateName(p, "exp_avg_sq_row"), Shape: rowShape(p.Shape), Data: o.row[i]},
				NamedTensor{Name: stateName(p, "exp_avg_sq_col"), Shape: colShape(p.Shape), Data: o.col[i]},
				NamedTensor{Name: stateName(p, "exp_avg_res_row"), Shape: rowShape(p.Shape), Data: o.resRow[i]},
				NamedTensor{Name: stateName(p, "exp_avg_res_col"), Shape: colShape(p.Shape), Data: o.resCol[i]})
		} else {
			ts = append(ts, NamedTensor{Name: stateName(p, "exp_avg_sq"), Shape: p.Shape, Data: o.sq[i]})
		}
	}
	return append(ts, NamedTensor{Name: "optim.came.step", Shape: []int{2}, Data: splitCount(o.t)})
}

// SetState implements Optimizer.
func (o *CAME) SetState(ts []NamedTensor) error {
	t, err := restoreStepped("came", ts, liveState("came", o.State()))
	if err != nil {
		return err
	}
	o.t = t
	return nil
}
