package optim

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// projParam builds an m×n MLP weight with N(0, 0.5²) weights from rng.
func projParam(name string, m, n int, rng *rand.Rand) *model.Param {
	p := &model.Param{Name: name, Role: model.RoleMLP, Shape: []int{m, n}, GlobalShape: []int{m, n},
		W: make([]float32, m*n), G: make([]float32, m*n)}
	for j := range p.W {
		p.W[j] = float32(0.5 * rng.NormFloat64())
	}
	return p
}

// projParams builds one weight per shape, named w0, w1, ...
func projParams(seed uint64, shapes ...[2]int) []*model.Param {
	rng := rand.New(rand.NewPCG(seed, 1))
	ps := make([]*model.Param, len(shapes))
	for i, s := range shapes {
		ps[i] = projParam("w"+string(rune('0'+i)), s[0], s[1], rng)
	}
	return ps
}

func projClone(ps []*model.Param) []*model.Param {
	out := make([]*model.Param, len(ps))
	for i, p := range ps {
		c := *p
		c.Shape = append([]int(nil), p.Shape...)
		c.W = append([]float32(nil), p.W...)
		c.G = append([]float32(nil), p.G...)
		out[i] = &c
	}
	return out
}

// projGrads fills every gradient with a deterministic function of (step,
// parameter, index), scaled by gain.
func projGrads(ps []*model.Param, step int, gain float64) {
	for i, p := range ps {
		rng := rand.New(rand.NewPCG(uint64(step), uint64(i)))
		for j := range p.G {
			p.G[j] = float32(gain * rng.NormFloat64())
		}
	}
}

func projTo64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// projCopyState deep-copies exported state so the source can keep stepping.
func projCopyState(ts []NamedTensor) []NamedTensor {
	out := make([]NamedTensor, len(ts))
	for i, t := range ts {
		out[i] = NamedTensor{Name: t.Name, Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Data...)}
	}
	return out
}

func projStateFloats(ts []NamedTensor) int64 {
	var n int64
	for _, t := range ts {
		n += int64(len(t.Data))
	}
	return n
}

// projMaxDiff returns the largest |a−b| over the weights of ps and ref.
func projMaxDiff(ps []*model.Param, ref [][]float64) (float64, string) {
	worst, where := 0.0, ""
	for i, p := range ps {
		for j, w := range p.W {
			if d := math.Abs(float64(w) - ref[i][j]); d > worst || math.IsNaN(d) {
				worst, where = d, p.Name
			}
		}
	}
	return worst, where
}

func projRequireBitwise(t *testing.T, a, b []*model.Param, what string) {
	t.Helper()
	for i := range a {
		for j := range a[i].W {
			if math.Float32bits(a[i].W[j]) != math.Float32bits(b[i].W[j]) {
				t.Fatalf("%s: %s[%d] differs: %v vs %v", what, a[i].Name, j, a[i].W[j], b[i].W[j])
			}
		}
	}
}

// hfAdamRef is a float64 transcription of the Hugging Face AdamW step that
// the GaLore and APOLLO reference code copy (correct_bias=True):
// m, v EMAs; p −= lr·√bc2/bc1 · m/(√v+ε); then p −= lr·λ·p.
type hfAdamRef struct {
	b1, b2, eps, wd float64
	m, v            []float64
	t               int
}

func (r *hfAdamRef) step(w, g []float64, lr float64) {
	if r.m == nil {
		r.m, r.v = make([]float64, len(w)), make([]float64, len(w))
	}
	r.t++
	bc1 := 1 - math.Pow(r.b1, float64(r.t))
	bc2 := 1 - math.Pow(r.b2, float64(r.t))
	for j := range w {
		r.m[j] = r.b1*r.m[j] + (1-r.b1)*g[j]
		r.v[j] = r.b2*r.v[j] + (1-r.b2)*g[j]*g[j]
		w[j] -= lr * math.Sqrt(bc2) / bc1 * r.m[j] / (math.Sqrt(r.v[j]) + r.eps)
		w[j] -= lr * r.wd * w[j]
	}
}

// withProcs runs fn with GOMAXPROCS set to n.
func withProcs(n int, fn func()) {
	old := runtime.GOMAXPROCS(n)
	defer runtime.GOMAXPROCS(old)
	fn()
}

// projText is the repeated text of the training smoke tests: long enough
// (≈ 450 bytes) that its windows cannot be memorised by the embedding and
// head alone, so the projected block weights have to learn.
const projText = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs. " +
	"how vexingly quick daft zebras jump! sphinx of black quartz, judge my vow. " +
	"a wizard's job is to vex chumps quickly in fog. the five boxing wizards jump quickly. " +
	"jackdaws love my big sphinx of quartz. we promptly judged antique ivory buckles for the next prize. " +
	"crazy fredrick bought many very exquisite opal jewels. "

// projTrainTiny trains the tiny preset (byte vocabulary, T = 32) with
// batches of B = 4 windows walking through the repeated text, steps updates
// at a constant lr, and returns the mean per-token loss over the last 10
// steps. The text's unigram entropy is about 2.9 nats.
func projTrainTiny(t *testing.T, build func([]*model.Param) (Optimizer, error), lr float64, steps int) float64 {
	t.Helper()
	cfg := mustPreset(t, "tiny")
	cfg.SeqLen = 32
	m, err := model.New(cfg, 7, false)
	if err != nil {
		t.Fatal(err)
	}
	o, err := build(m.Params())
	if err != nil {
		t.Fatal(err)
	}
	const b, tt = 4, 32
	text := []byte(projText + projText)
	tokens, targets := make([]int32, b*tt), make([]int32, b*tt)
	var tail float64
	for step := 0; step < steps; step++ {
		for s := 0; s < b; s++ {
			off := ((step*b + s) * 29) % len(projText)
			for j := 0; j < tt; j++ {
				tokens[s*tt+j] = int32(text[off+j])
				targets[s*tt+j] = int32(text[off+j+1])
			}
		}
		m.ZeroGrad()
		sum, n := m.ForwardBackward(tokens, targets, b, tt, float32(1)/float32(b*tt))
		if step >= steps-10 {
			tail += sum / float64(n) / 10
		}
		o.Step(lr)
	}
	return tail
}
