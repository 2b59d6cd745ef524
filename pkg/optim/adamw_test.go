package optim

import (
	"math"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

func testParams() []*model.Param {
	w := &model.Param{Name: "w", Role: model.RoleMLP, Shape: []int{2, 3},
		W: []float32{0.5, -1, 2, 0.25, -0.75, 1.5}, G: make([]float32, 6)}
	n := &model.Param{Name: "n", Role: model.RoleNorm, Shape: []int{3},
		W: []float32{1, 1, 1}, G: make([]float32, 3)}
	return []*model.Param{w, n}
}

// refAdamW is a float64 transcription of torch.optim.AdamW's single-tensor
// update, used as the reference.
type refAdamW struct {
	m, v [][]float64
	t    int
}

func (r *refAdamW) step(w, g [][]float64, decayed []bool, lr float64, c AdamWConfig) {
	r.t++
	bc1 := 1 - math.Pow(c.Beta1, float64(r.t))
	bc2 := 1 - math.Pow(c.Beta2, float64(r.t))
	for i := range w {
		for j := range w[i] {
			if decayed[i] {
				w[i][j] *= 1 - lr*c.WeightDecay
			}
			r.m[i][j] = c.Beta1*r.m[i][j] + (1-c.Beta1)*g[i][j]
			r.v[i][j] = c.Beta2*r.v[i][j] + (1-c.Beta2)*g[i][j]*g[i][j]
			w[i][j] -= lr / bc1 * r.m[i][j] / (math.Sqrt(r.v[i][j])/math.Sqrt(bc2) + c.Eps)
		}
	}
}

func TestAdamWFirstStepIsSignDescent(t *testing.T) {
	// With zero moments, step 1 gives m̂ = g and v̂ = g², so the update is
	// lr·g/(|g|+ε): lr·sign(g) up to ε/|g| (Kingma & Ba 2015, §2).
	ps := testParams()
	for _, p := range ps {
		for j := range p.G {
			p.G[j] = float32(j+1) * 0.1 * float32(1-2*(j%2))
		}
	}
	before := append([]float32(nil), ps[1].W...)
	o, err := NewAdamW(ps, AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	o.Step(0.01)
	for j, g := range ps[1].G { // norm: no weight decay
		want := float64(before[j]) - 0.01*math.Copysign(1, float64(g))
		if d := math.Abs(float64(ps[1].W[j]) - want); d > 1e-6 {
			t.Errorf("norm weight %d: got %v want %v", j, ps[1].W[j], want)
		}
	}
}

func TestAdamWMatchesFloat64Reference(t *testing.T) {
	cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	ps := testParams()
	o, err := NewAdamW(ps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ref := &refAdamW{}
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
				g := math.Sin(float64(s*7+i*3+j)) * (0.1 + 0.05*float64(j))
				p.G[j] = float32(g)
				g64[i][j] = float64(p.G[j])
			}
		}
		lr := 1e-2 * (1 + 0.1*float64(s%3))
		o.Step(lr)
		ref.step(w64, g64, decayed, lr, cfg)
	}
	// float32 state and arithmetic over 20 steps: relative error well under 1e-5
	// of the total movement; 1e-5 absolute on O(1) weights is a tight bound.
	for i, p := range ps {
		for j := range p.W {
			if d := math.Abs(float64(p.W[j]) - w64[i][j]); d > 1e-5 {
				t.Errorf("param %s[%d]: got %v want %v (diff %g)", p.Name, j, p.W[j], w64[i][j], d)
			}
		}
	}
}

func TestAdamWStateRoundTrip(t *testing.T) {
	cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	a, b := testParams(), testParams()
	oa, _ := NewAdamW(a, cfg)
	ob, _ := NewAdamW(b, cfg)
	for _, p := range a {
		for j := range p.G {
			p.G[j] = 0.3 * float32(j+1)
		}
	}
	oa.Step(0.1)
	oa.Step(0.1)
	// Move a's weights and state into b, then step both: bitwise equal.
	for i := range a {
		copy(b[i].W, a[i].W)
		copy(b[i].G, a[i].G)
	}
	var st []NamedTensor
	for _, t := range oa.State() {
		st = append(st, NamedTensor{Name: t.Name, Shape: t.Shape, Data: append([]float32(nil), t.Data...)})
	}
	if err := ob.SetState(st); err != nil {
		t.Fatal(err)
	}
	if ob.Steps() != 2 {
		t.Fatalf("restored step count %d, want 2", ob.Steps())
	}
	oa.Step(0.05)
	ob.Step(0.05)
	for i := range a {
		for j := range a[i].W {
			if a[i].W[j] != b[i].W[j] {
				t.Fatalf("param %d[%d] differs after restore: %v vs %v", i, j, a[i].W[j], b[i].W[j])
			}
		}
	}
	if got, want := oa.StateBytes(), int64(8*9+8); got != want {
		t.Errorf("StateBytes = %d, want %d", got, want)
	}
}

func TestAdamWSetStateErrors(t *testing.T) {
	o, _ := NewAdamW(testParams(), AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8})
	good := o.State()
	cases := []struct {
		name string
		ts   []NamedTensor
		want string
	}{
		{"missing", good[1:], "missing"},
		{"unknown", append(append([]NamedTensor(nil), good...), NamedTensor{Name: "optim.x.exp_avg", Data: []float32{1}}), "not a tensor"},
		{"short", append([]NamedTensor{{Name: good[0].Name, Data: []float32{1}}}, good[1:]...), "values, want"},
		{"bad step", append(append([]NamedTensor(nil), good[:len(good)-1]...), NamedTensor{Name: "optim.adamw.step", Data: []float32{0, -1}}), "not a step count"},
	}
	for _, c := range cases {
		err := o.SetState(c.ts)
		if err == nil || !contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want error containing %q", c.name, err, c.want)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestStepCountSplit(t *testing.T) {
	for _, n := range []int64{0, 1, countHalf - 1, countHalf, 5*countHalf + 17} {
		got, err := joinCount(splitCount(n))
		if err != nil || got != n {
			t.Errorf("%d: got %d, %v", n, got, err)
		}
	}
}
