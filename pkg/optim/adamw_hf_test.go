package optim

import (
	"math"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// refAdamWHF is a float64 transcription of transformers' AdamW.step
// (optimization.py, correct_bias=True), the form GaLore and APOLLO copy.
type refAdamWHF struct {
	m, v [][]float64
	t    int
}

func (r *refAdamWHF) step(w, g [][]float64, decayed []bool, lr float64, c AdamWConfig) {
	r.t++
	stepSize := lr * math.Sqrt(1-math.Pow(c.Beta2, float64(r.t))) / (1 - math.Pow(c.Beta1, float64(r.t)))
	for i := range w {
		for j := range w[i] {
			r.m[i][j] = c.Beta1*r.m[i][j] + (1-c.Beta1)*g[i][j]
			r.v[i][j] = c.Beta2*r.v[i][j] + (1-c.Beta2)*g[i][j]*g[i][j]
			w[i][j] -= stepSize * r.m[i][j] / (math.Sqrt(r.v[i][j]) + c.Eps)
			if decayed[i] {
				w[i][j] -= lr * c.WeightDecay * w[i][j]
			}
		}
	}
}

func TestAdamWHFFirstStepClosedForm(t *testing.T) {
	// Step 1 with zero moments: m = (1−β1)g, √v = √(1−β2)|g|, so
	// Δθ = −lr·g/(|g| + ε/√(1−β2)), then θ ← θ(1 − lr·λ) on matrices.
	cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-3, WeightDecay: 0.5, Convention: AdamWHF}
	ps := testParams()
	for _, p := range ps {
		for j := range p.G {
			p.G[j] = float32(j+1) * 0.1 * float32(1-2*(j%2))
		}
	}
	var before [][]float32
	for _, p := range ps {
		before = append(before, append([]float32(nil), p.W...))
	}
	o, err := NewAdamW(ps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const lr = 0.01
	o.Step(lr)
	epsEff := cfg.Eps / math.Sqrt(1-cfg.Beta2) // ≈ 0.0316: visible against |g| ≥ 0.1
	for i, p := range ps {
		for j, g := range p.G {
			g64 := float64(g)
			want := float64(before[i][j]) - lr*g64/(math.Abs(g64)+epsEff)
			if len(p.Shape) >= 2 {
				want *= 1 - lr*cfg.WeightDecay
			}
			if d := math.Abs(float64(p.W[j]) - want); d > 1e-6 {
				t.Errorf("%s[%d]: got %v want %v", p.Name, j, p.W[j], want)
			}
		}
	}
}

func TestAdamWHFGolden(t *testing.T) {
	// optimizers.md §13.5 golden vector (float64 transcription of the HF
	// code): θ0 = [1, −0.5], three gradients, lr 1e-3, ε 1e-6, λ 1e-2 after
	// the update. The parameter is a 1×2 matrix so it is decayed.
	p := &model.Param{Name: "w", Role: model.RoleMLP, Shape: []int{1, 2}, W: []float32{1, -0.5}, G: make([]float32, 2)}
	o, err := NewAdamW([]*model.Param{p}, AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-6, WeightDecay: 1e-2, Convention: AdamWHF})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range [][]float32{{0.5, -1}, {-0.25, 2}, {1, 0.1}} {
		copy(p.G, g)
		o.Step(1e-3)
	}
	want := []float64{0.998045690047259, -0.499662418647236}
	for j := range want {
		// float32 weights near 1 carry ~6e-8 rounding per step.
		if d := math.Abs(float64(p.W[j]) - want[j]); d > 3e-7 {
			t.Errorf("θ3[%d] = %v, want %v", j, p.W[j], want[j])
		}
	}
}

func TestAdamWHFMatchesFloat64Reference(t *testing.T) {
	cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-6, WeightDecay: 0.1, Convention: AdamWHF}
	ps := testParams()
	o, err := NewAdamW(ps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ref := &refAdamWHF{}
	var w64, g64 [][]float64
	var decayed []bool
	for _, p := range ps {
		w := make([]float64, len(p.W))
		for j := range w {
			w[j] = float64(p.W[j])
		}
		w64 = append(w64, w)
		g64 = append(g64, make([]float64, len(p.W)))
		ref.m = append(ref.m, make([]float64, len(p.W)))
		ref.v = append(ref.v, make([]float64, len(p.W)))
		decayed = append(decayed, len(p.Shape) >= 2)
	}
	for s := 0; s < 20; s++ {
		for i, p := range ps {
			for j := range p.G {
				p.G[j] = float32(math.Sin(float64(s*7+i*3+j)) * (0.1 + 0.05*float64(j)))
				g64[i][j] = float64(p.G[j])
			}
		}
		lr := 1e-2 * (1 + 0.1*float64(s%3))
		o.Step(lr)
		ref.step(w64, g64, decayed, lr, cfg)
	}
	// Same bound as the PyTorch-convention test: 20 float32 steps of size
	// ≤ 1.3e-2 on O(1) weights stay within 1e-5 of float64.
	for i, p := range ps {
		for j := range p.W {
			if d := math.Abs(float64(p.W[j]) - w64[i][j]); d > 1e-5 {
				t.Errorf("param %s[%d]: got %v want %v (diff %g)", p.Name, j, p.W[j], w64[i][j], d)
			}
		}
	}
}

func TestAdamWConventionsDiffer(t *testing.T) {
	// The two conventions must give different updates at step 1 when ε is
	// not negligible, and the empty convention must be the PyTorch one.
	run := func(conv string) []float32 {
		ps := testParams()
		for _, p := range ps {
			for j := range p.G {
				p.G[j] = 1e-3 * float32(j+1)
			}
		}
		o, err := NewAdamW(ps, AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-4, Convention: conv})
		if err != nil {
			t.Fatal(err)
		}
		o.Step(0.1)
		return ps[0].W
	}
	def, pt, hf := run(""), run(AdamWPyTorch), run(AdamWHF)
	for j := range def {
		if def[j] != pt[j] {
			t.Fatalf("empty convention differs from %q at %d", AdamWPyTorch, j)
		}
	}
	same := true
	for j := range pt {
		same = same && pt[j] == hf[j]
	}
	if same {
		t.Fatal("hf and pytorch conventions gave identical updates with ε/|g| ≈ 0.1")
	}
	if _, err := NewAdamW(testParams(), AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Convention: "galore2"}); err == nil ||
		!contains(err.Error(), "optimizer.adamw.convention") {
		t.Fatalf("bad convention: got %v", err)
	}
}
