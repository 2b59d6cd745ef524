package optim

import (
	"math"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// refAdafactor is a naive float64 transcription of Shazeer & Stern 2018,
// Algorithms 3 and 4, with the choices of HF transformers' Adafactor.step:
// means instead of sums (V̂ = R·Cᵀ/mean(R)), ε1 added to g², clipping before
// the lr, β1 momentum on the scaled update, weight decay λ·α_t on θ_{t−1}.
type refAdafactor struct {
	cfg        AdafactorConfig
	t          int
	r, c, v, m [][]float64
}

func (r *refAdafactor) step(ps []*model.Param, w, g [][]float64, lr float64) {
	r.t++
	if r.r == nil {
		for _, p := range ps {
			r.r = append(r.r, make([]float64, len(p.W)))
			r.c = append(r.c, make([]float64, len(p.W)))
			r.v = append(r.v, make([]float64, len(p.W)))
			r.m = append(r.m, make([]float64, len(p.W)))
		}
	}
	rho := lr
	if r.cfg.RelativeStep {
		minStep := 1e-2
		if r.cfg.WarmupInit {
			minStep = 1e-6 * float64(r.t)
		}
		rho = math.Min(minStep, 1/math.Sqrt(float64(r.t)))
	}
	beta := 1 - math.Pow(float64(r.t), r.cfg.DecayRate)
	for i, p := range ps {
		n := len(w[i])
		alpha := rho
		if r.cfg.ScaleParameter {
			var ss float64
			for _, x := range w[i] {
				ss += x * x
			}
			alpha *= math.Max(r.cfg.Eps2, math.Sqrt(ss/float64(n)))
		}
		u := make([]float64, n)
		if len(p.Shape) >= 2 {
			rows, cols := p.Shape[len(p.Shape)-2], p.Shape[len(p.Shape)-1]
			for b := 0; b < n/(rows*cols); b++ {
				at := func(i, j int) int { return b*rows*cols + i*cols + j }
				R, C := r.r[i][b*rows:], r.c[i][b*cols:]
				for a := 0; a < rows; a++ {
					var s float64
					for j := 0; j < cols; j++ {
						s += g[i][at(a, j)]*g[i][at(a, j)] + r.cfg.Eps1
					}
					R[a] = beta*R[a] + (1-beta)*s/float64(cols)
				}
				for j := 0; j < cols; j++ {
					var s float64
					for a := 0; a < rows; a++ {
						s += g[i][at(a, j)]*g[i][at(a, j)] + r.cfg.Eps1
					}
					C[j] = beta*C[j] + (1-beta)*s/float64(rows)
				}
				var meanR float64
				for a := 0; a < rows; a++ {
					meanR += R[a] / float64(rows)
				}
				for a := 0; a < rows; a++ {
					for j := 0; j < cols; j++ {
						u[at(a, j)] = g[i][at(a, j)] / math.Sqrt(R[a]*C[j]/meanR)
					}
				}
			}
		} else {
			for j := range u {
				r.v[i][j] = beta*r.v[i][j] + (1-beta)*(g[i][j]*g[i][j]+r.cfg.Eps1)
				u[j] = g[i][j] / math.Sqrt(r.v[i][j])
			}
		}
		var ss float64
		for _, x := range u {
			ss += x * x
		}
		div := math.Max(1, math.Sqrt(ss/float64(n))/r.cfg.ClipThreshold)
		for j := range u {
			u[j] = alpha * u[j] / div
			if r.cfg.Beta1 > 0 {
				r.m[i][j] = r.cfg.Beta1*r.m[i][j] + (1-r.cfg.Beta1)*u[j]
				u[j] = r.m[i][j]
			}
			if len(p.Shape) >= 2 {
				w[i][j] -= r.cfg.WeightDecay * alpha * w[i][j]
			}
			w[i][j] -= u[j]
		}
	}
}

func newAdafactorT(t *testing.T, cfg AdafactorConfig) func([]*model.Param) Optimizer {
	return func(ps []*model.Param) Optimizer {
		o, err := NewAdafactor(ps, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
}

// adaRank1Param is a matrix whose gradient g = a·bᵀ has rank-1 g², so the
// factored estimate is exact at step 1 (β̂2,1 = 0 replaces the state).
func adaRank1Param() *model.Param {
	a, b := []float32{0.5, -2, 1}, []float32{1, -0.25, 3, 0.125}
	p := &model.Param{Name: "w", Role: model.RoleMLP, Shape: []int{3, 4}, W: make([]float32, 12), G: make([]float32, 12)}
	for i := range a {
		for j := range b {
			p.W[i*4+j] = 0.1 * float32(i-j)
			p.G[i*4+j] = a[i] * b[j]
		}
	}
	return p
}

func TestAdafactorFirstStepClosedForm(t *testing.T) {
	// optimizers.md §13.3: rank-1 g² makes V̂ = g² exactly, so u = sign(g)
	// with RMS 1: Δθ = −lr·sign(g) unclipped, −lr·d·sign(g) for d < 1; with
	// the relative step and parameter scaling, lr becomes
	// min(1e-2, 1/√1)·max(ε2, RMS(θ0)).
	rmsW := func(w []float32) float64 {
		var s float64
		for _, x := range w {
			s += float64(x) * float64(x)
		}
		return math.Sqrt(s / float64(len(w)))
	}
	rel := DefaultAdafactorConfig()
	rel.RelativeStep, rel.ScaleParameter = true, true
	clip := DefaultAdafactorConfig()
	clip.ClipThreshold = 0.5
	for _, c := range []struct {
		name string
		cfg  AdafactorConfig
		size func(w0 []float32) float64
	}{
		{"external lr", DefaultAdafactorConfig(), func([]float32) float64 { return 0.03 }},
		{"clipped", clip, func([]float32) float64 { return 0.015 }},
		{"relative step", rel, func(w0 []float32) float64 { return 1e-2 * math.Max(1e-3, rmsW(w0)) }},
	} {
		p := adaRank1Param()
		w0 := append([]float32(nil), p.W...)
		vec := &model.Param{Name: "v", Role: model.RoleNorm, Shape: []int{3}, W: []float32{1, 2, 3}, G: []float32{0.3, -4, 1e-3}}
		v0 := append([]float32(nil), vec.W...)
		o, err := NewAdafactor([]*model.Param{p, vec}, c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		o.Step(0.03)
		for _, tc := range []struct {
			p  *model.Param
			w0 []float32
		}{{p, w0}, {vec, v0}} {
			size := c.size(tc.w0)
			for j, g := range tc.p.G {
				want := float64(tc.w0[j]) - size*math.Copysign(1, float64(g))
				if d := math.Abs(float64(tc.p.W[j]) - want); d > 1e-7+1e-6*size {
					t.Errorf("%s: %s[%d] = %v, want %v", c.name, tc.p.Name, j, tc.p.W[j], want)
				}
			}
		}
	}
}

func TestAdafactorGolden(t *testing.T) {
	// optimizers.md §13.5: float64 transcription of the HF code, two steps,
	// lr 1e-2, relative_step=False, scale_parameter=False, β1 None.
	p := &model.Param{Name: "w", Role: model.RoleMLP, Shape: []int{2, 2}, W: []float32{0.1, 0.2, 0.3, 0.4}, G: make([]float32, 4)}
	o, err := NewAdafactor([]*model.Param{p}, DefaultAdafactorConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range [][]float32{{1, -2, 0.5, 0.25}, {-0.5, 1, 2, -1}} {
		copy(p.G, g)
		o.Step(1e-2)
	}
	want := []float64{0.0962438684838934, 0.200413095186895, 0.268530198249708, 0.403704495974378}
	for j := range want {
		// Two float32 steps of size ~1e-2: a few ulps of 0.4 (3e-8 each).
		if d := math.Abs(float64(p.W[j]) - want[j]); d > 2e-7 {
			t.Errorf("W2[%d] = %v, want %v", j, p.W[j], want[j])
		}
	}
}

func TestAdafactorMatchesFloat64Reference(t *testing.T) {
	withMomentum := DefaultAdafactorConfig()
	withMomentum.Beta1, withMomentum.WeightDecay = 0.9, 0.1
	relative := DefaultAdafactorConfig()
	relative.RelativeStep, relative.ScaleParameter, relative.ClipThreshold = true, true, 0.7
	warmup := relative
	warmup.WarmupInit = true
	for name, cfg := range map[string]AdafactorConfig{"baseline": DefaultAdafactorConfig(), "momentum+decay": withMomentum, "relative": relative, "warmup": warmup} {
		ps := adaptiveParams(false)
		o := newAdafactorT(t, cfg)(ps)
		ref := &refAdafactor{cfg: cfg}
		w := adaWeights64(ps)
		for s := 0; s < 15; s++ {
			adaSetGrads(ps, s)
			lr := 1e-2 * (1 + 0.1*float64(s%4))
			o.Step(lr)
			ref.step(ps, w, adaGrads64(ps), lr)
		}
		// 15 float32 steps of at most ~2e-2 on weights ≤ 0.5: each step adds
		// ~1e-7 of rounding (relative 1e-6 of the step plus an ulp of θ).
		t.Logf("%s: max diff %g", name, adaMaxDiff(ps, w))
		if d := adaMaxDiff(ps, w); d > 1e-6 {
			t.Errorf("%s: max |float32 − float64| = %g", name, d)
		}
	}
}

func TestAdafactorGradientScaleInvariant(t *testing.T) {
	// u = g/√V̂ is homogeneous of degree 0 in g (ε1 = 1e-30 is negligible),
	// so scaling every gradient by 1000 must not change the trajectory
	// beyond float32 rounding.
	run := func(scale float32) []*model.Param {
		ps := adaptiveParams(false)
		o := newAdafactorT(t, DefaultAdafactorConfig())(ps)
		for s := 0; s < 5; s++ {
			adaSetGrads(ps, s)
			for _, p := range ps {
				for j := range p.G {
					p.G[j] *= scale
				}
			}
			o.Step(1e-2)
		}
		return ps
	}
	a, b := run(1), run(1000)
	if d := adaMaxDiff(a, adaWeights64(b)); d > 1e-6 {
		t.Errorf("scaling g by 1000 moved weights by %g", d)
	}
}

func TestAdafactorStateAndBytes(t *testing.T) {
	for _, b1 := range []float64{0, 0.9} {
		cfg := DefaultAdafactorConfig()
		cfg.Beta1 = b1
		adaCheckRoundTrip(t, newAdafactorT(t, cfg))
		adaCheckDeterministic(t, newAdafactorT(t, cfg))
		o := newAdafactorT(t, cfg)(adaptiveParams(false))
		// mlp 3×4: 3+4; stack 2×3×5: 2·3+2·5; norm: 4; step: 2 floats.
		want := int64(3 + 4 + 6 + 10 + 4 + 2)
		if b1 > 0 {
			want += 12 + 30 + 4
		}
		if got := o.StateBytes(); got != 4*want || adaStateFloats(o) != want {
			t.Errorf("β1=%g: StateBytes %d (exported %d floats), want %d bytes", b1, got, adaStateFloats(o), 4*want)
		}
	}
}

func TestAdafactorConfigErrors(t *testing.T) {
	for field, mut := range map[string]func(*AdafactorConfig){
		"eps1":          func(c *AdafactorConfig) { c.Eps1 = 0 },
		"eps2":          func(c *AdafactorConfig) { c.Eps2 = -1 },
		"clipThreshold": func(c *AdafactorConfig) { c.ClipThreshold = 0 },
		"decayRate":     func(c *AdafactorConfig) { c.DecayRate = 0.5 },
		"beta1":         func(c *AdafactorConfig) { c.Beta1 = 1 },
		"weightDecay":   func(c *AdafactorConfig) { c.WeightDecay = math.NaN() },
		"warmupInit":    func(c *AdafactorConfig) { c.WarmupInit = true },
	} {
		cfg := DefaultAdafactorConfig()
		mut(&cfg)
		if _, err := NewAdafactor(adaptiveParams(false), cfg); err == nil || !contains(err.Error(), "optimizer.adafactor."+field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
	bad := adaptiveParams(false)
	bad[0].G = bad[0].G[:2]
	if _, err := NewAdafactor(bad, DefaultAdafactorConfig()); err == nil || !contains(err.Error(), "gradients") {
		t.Errorf("short gradient: got %v", err)
	}
}

func TestAdafactorTrainsTiny(t *testing.T) {
	if raceEnabled {
		t.Skip("training run: covered by the plain (non-race) pass of make test")
	}
	// Same harness, schedule and budget as AdamW below; the GaLore/APOLLO
	// baselines run Adafactor at an external lr like Adam's. Both reach
	// ≈0.07 from ln 256 ≈ 5.5 on this memorisable text; 0.5 leaves a wide
	// margin while still requiring the text to be learnt.
	sched, _ := NewSchedule("cosine", 1e-2, 1e-3, 20, 200)
	adam := adaTrainTiny(t, 200, sched, func(ps []*model.Param) Optimizer {
		o, _ := NewAdamW(ps, AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1})
		return o
	})
	loss := adaTrainTiny(t, 200, sched, newAdafactorT(t, DefaultAdafactorConfig()))
	t.Logf("tiny, 200 steps, lr 1e-2 cosine: adamw %.3f, adafactor %.3f", adam, loss)
	if adam > 0.5 || loss > 0.5 {
		t.Errorf("train loss adamw %.3f, adafactor %.3f; want both < 0.5", adam, loss)
	}
}
