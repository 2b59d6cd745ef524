package optim

// Test helpers shared by the Adafactor, CAME and Adam-mini tests.

import (
	"math"
	"runtime"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// adaptiveParams is a small parameter set covering every code path of the
// factored optimizers: a matrix that spans several row chunks, a small
// matrix, a 3-axis tensor (a batch of factored matrices) and a vector.
func adaptiveParams(big bool) []*model.Param {
	mk := func(name string, role model.Role, shape ...int) *model.Param {
		n := 1
		for _, d := range shape {
			n *= d
		}
		p := &model.Param{Name: name, Role: role, Shape: shape, GlobalShape: shape, W: make([]float32, n), G: make([]float32, n)}
		for j := range p.W {
			p.W[j] = float32(0.5 * math.Sin(float64(3*j+len(name))))
		}
		return p
	}
	ps := []*model.Param{
		mk("mlp", model.RoleMLP, 3, 4),
		mk("stack", model.RoleMLP, 2, 3, 5),
		mk("norm", model.RoleNorm, 4),
	}
	if big {
		// rowGrain(256) = 128 rows, so 300 rows make three chunks, and
		// 76 800 vector elements make three adamGrain chunks.
		ps = append(ps, mk("wide", model.RoleAttnV, 300, 256), mk("gain", model.RoleNorm, 76800))
	}
	return ps
}

// adaSetGrads fills every gradient with a deterministic, step-dependent pattern
// with a spread of magnitudes (so the factored estimate is not exact).
func adaSetGrads(ps []*model.Param, step int) {
	for i, p := range ps {
		for j := range p.G {
			x := float64(step*131 + i*17 + j)
			p.G[j] = float32(math.Sin(1.3*x) * (0.05 + 0.1*math.Abs(math.Cos(0.7*x))))
		}
	}
}

func adaClone(ps []*model.Param) []*model.Param {
	out := make([]*model.Param, len(ps))
	for i, p := range ps {
		q := *p
		q.W = append([]float32(nil), p.W...)
		q.G = append([]float32(nil), p.G...)
		out[i] = &q
	}
	return out
}

func adaCopyState(ts []NamedTensor) []NamedTensor {
	out := make([]NamedTensor, len(ts))
	for i, t := range ts {
		out[i] = NamedTensor{Name: t.Name, Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Data...)}
	}
	return out
}

func adaSameWeights(t *testing.T, what string, a, b []*model.Param) {
	t.Helper()
	for i := range a {
		for j := range a[i].W {
			if math.Float32bits(a[i].W[j]) != math.Float32bits(b[i].W[j]) {
				t.Fatalf("%s: %s[%d] = %v vs %v", what, a[i].Name, j, a[i].W[j], b[i].W[j])
			}
		}
	}
}

// adaCheckRoundTrip steps an optimizer, exports its state into a fresh one on a
// copy of the parameters, and requires both to continue bitwise identically.
func adaCheckRoundTrip(t *testing.T, build func([]*model.Param) Optimizer) {
	t.Helper()
	a := adaptiveParams(false)
	oa := build(a)
	for s := 0; s < 3; s++ {
		adaSetGrads(a, s)
		oa.Step(1e-2)
	}
	b := adaClone(a)
	ob := build(b)
	if err := ob.SetState(adaCopyState(oa.State())); err != nil {
		t.Fatal(err)
	}
	for s := 3; s < 6; s++ {
		adaSetGrads(a, s)
		adaSetGrads(b, s)
		oa.Step(5e-3)
		ob.Step(5e-3)
	}
	adaSameWeights(t, "after restore", a, b)
	// A missing tensor and a wrong length are refused.
	st := oa.State()
	if err := ob.SetState(adaCopyState(st[1:])); err == nil || !contains(err.Error(), "missing") {
		t.Errorf("state without %s: got %v", st[0].Name, err)
	}
	bad := adaCopyState(st)
	bad[0].Data = bad[0].Data[:1]
	if err := ob.SetState(bad); err == nil || !contains(err.Error(), "values, want") {
		t.Errorf("short %s: got %v", st[0].Name, err)
	}
}

// adaCheckDeterministic requires bitwise-identical results with 1 and 2 threads
// on tensors large enough to be split into several parallel chunks.
func adaCheckDeterministic(t *testing.T, build func([]*model.Param) Optimizer) {
	t.Helper()
	run := func(procs int) []*model.Param {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		ps := adaptiveParams(true)
		o := build(ps)
		for s := 0; s < 3; s++ {
			adaSetGrads(ps, s)
			o.Step(1e-2)
		}
		return ps
	}
	adaSameWeights(t, "GOMAXPROCS 1 vs 2", run(1), run(2))
}

// adaStateFloats counts the floats an optimizer exports (step counter included).
func adaStateFloats(o Optimizer) int64 {
	var n int64
	for _, t := range o.State() {
		n += int64(len(t.Data))
	}
	return n
}

// adaMaxDiff compares float32 weights with a float64 reference.
func adaMaxDiff(ps []*model.Param, ref [][]float64) float64 {
	var d float64
	for i, p := range ps {
		for j := range p.W {
			d = max(d, math.Abs(float64(p.W[j])-ref[i][j]))
		}
	}
	return d
}

func adaWeights64(ps []*model.Param) [][]float64 {
	out := make([][]float64, len(ps))
	for i, p := range ps {
		out[i] = make([]float64, len(p.W))
		for j, w := range p.W {
			out[i][j] = float64(w)
		}
	}
	return out
}

func adaGrads64(ps []*model.Param) [][]float64 {
	out := make([][]float64, len(ps))
	for i, p := range ps {
		out[i] = make([]float64, len(p.G))
		for j, g := range p.G {
			out[i][j] = float64(g)
		}
	}
	return out
}

// adaCorpus is the repeated text of the training smoke tests: short enough
// that a 0.13M-parameter model memorises it in a few hundred steps.
const adaCorpus = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. "

// adaTrainTiny trains the tiny preset (T = 32) for steps steps of B = 4
// sequences drawn at fixed offsets from adaCorpus repeated, with lr from
// sched, and returns the mean train loss of the last five steps.
func adaTrainTiny(t *testing.T, steps int, sched Schedule, build func([]*model.Param) Optimizer) float64 {
	t.Helper()
	cfg := mustPreset(t, "tiny")
	cfg.SeqLen = 32
	m, err := model.New(cfg, 7, false)
	if err != nil {
		t.Fatal(err)
	}
	o := build(m.Params())
	const B, T = 4, 32
	var text []int32
	for len(text) < 4*len(adaCorpus) {
		for _, c := range []byte(adaCorpus) {
			text = append(text, int32(c))
		}
	}
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	var tail float64
	for s := 0; s < steps; s++ {
		for b := 0; b < B; b++ {
			off := (s*37 + b*53) % (len(text) - T - 1)
			copy(tokens[b*T:], text[off:off+T])
			copy(targets[b*T:], text[off+1:off+T+1])
		}
		m.ZeroGrad()
		sum, n := m.ForwardBackward(tokens, targets, B, T, 1/float32(B*T))
		loss := sum / float64(n)
		if math.IsNaN(loss) {
			t.Fatalf("step %d: loss is NaN", s)
		}
		if s >= steps-5 {
			tail += loss / 5
		}
		o.Step(sched.LR(s))
	}
	return tail
}
