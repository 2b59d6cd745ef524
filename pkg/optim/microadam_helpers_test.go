package optim

import (
	"math"
	"sort"
	"testing"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// refMicroAdam is a naive transcription of MicroAdam (Modoranu et al. 2024,
// Algorithm 1 with ADAM_STATS) used as the reference: dense arrays, a window
// kept as a list of past steps (newest last) rather than a ring, top-k by a
// full sort, moments and weights in float64. What the algorithm stores in
// narrow formats is mimicked exactly, because those roundings decide later
// selections: the accumulator a is float32 (the reference's gradient
// buffer), kept values are bf16, and the error feedback is 4-bit codes with
// bf16 bounds computed with float32 arithmetic.
type refMicroAdam struct {
	cfg    MicroAdamConfig
	t      int
	params []*refMicroParam
}

type refMicroEntry struct {
	idx int     // flat index
	val float64 // bf16 value
}

type refMicroParam struct {
	w      []float64
	matrix bool
	steps  [][]refMicroEntry // kept entries of each past step, oldest first
	codes  []uint8
	lo, hi []float32 // per quantisation block, bf16-representable
}

func newRefMicroAdam(ps []*model.Param, cfg MicroAdamConfig) *refMicroAdam {
	r := &refMicroAdam{cfg: cfg}
	for _, p := range ps {
		rp := &refMicroParam{matrix: len(p.Shape) >= 2, codes: make([]uint8, len(p.W))}
		for _, w := range p.W {
			rp.w = append(rp.w, float64(w))
		}
		nq := (len(p.W) + cfg.QuantBlockSize - 1) / cfg.QuantBlockSize
		rp.lo, rp.hi = make([]float32, nq), make([]float32, nq)
		r.params = append(r.params, rp)
	}
	return r
}

// refMicroBF16Down is the largest bf16 value ≤ x, found by stepping from the
// nearest bf16 value (written independently of microAdamBF16Down).
func refMicroBF16Down(x float32) float32 {
	n := tensor.ToBF16(x).Float32()
	if n <= x {
		return n
	}
	return refMicroBF16Step(n, -1)
}

func refMicroBF16Up(x float32) float32 {
	n := tensor.ToBF16(x).Float32()
	if n >= x {
		return n
	}
	return refMicroBF16Step(n, +1)
}

// refMicroBF16Step moves one bf16 ulp in direction dir.
func refMicroBF16Step(b float32, dir int) float32 {
	u := math.Float32bits(b) >> 16
	if b == 0 {
		if dir > 0 {
			return math.Float32frombits(1 << 16)
		}
		return math.Float32frombits((0x8000 | 1) << 16)
	}
	if (b > 0) == (dir > 0) {
		u++
	} else {
		u--
	}
	return math.Float32frombits(u << 16)
}

func (r *refMicroAdam) deq(rp *refMicroParam, i int) float32 {
	qb := i / r.cfg.QuantBlockSize
	u := (rp.hi[qb] - rp.lo[qb]) / 15
	return rp.lo[qb] + float32(float32(rp.codes[i])*u)
}

func (r *refMicroAdam) step(grads [][]float32, lr float64) {
	r.t++
	c := r.cfg
	for pi, rp := range r.params {
		g := grads[pi]
		d := len(g)
		a := make([]float32, d)
		for i := range a {
			a[i] = float32(float64(g[i]) + float64(r.deq(rp, i)))
		}
		// Top-k per block, largest |a| first, lower index on ties.
		blk := min(d, c.TopKBlockSize)
		var kept []refMicroEntry
		sel := make([]bool, d)
		for start := 0; start < d; start += blk {
			n := min(blk, d-start)
			k := int(math.Ceil(float64(n) * c.Density))
			idx := make([]int, n)
			for j := range idx {
				idx[j] = start + j
			}
			sort.SliceStable(idx, func(x, y int) bool {
				ax, ay := math.Abs(float64(a[idx[x]])), math.Abs(float64(a[idx[y]]))
				return ax > ay
			})
			for _, i := range idx[:k] {
				kept = append(kept, refMicroEntry{i, float64(tensor.ToBF16(a[i]).Float32())})
				sel[i] = true
			}
		}
		rp.steps = append(rp.steps, kept)
		if len(rp.steps) > c.Window {
			rp.steps = rp.steps[1:]
		}
		// 4-bit min-max quantisation of the residual.
		for qb := range rp.lo {
			lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
			q0, q1 := qb*c.QuantBlockSize, min((qb+1)*c.QuantBlockSize, d)
			res := func(i int) float32 {
				if sel[i] {
					return 0
				}
				return a[i]
			}
			for i := q0; i < q1; i++ {
				lo, hi = min(lo, res(i)), max(hi, res(i))
			}
			rp.lo[qb], rp.hi[qb] = refMicroBF16Down(lo), refMicroBF16Up(hi)
			u := (rp.hi[qb] - rp.lo[qb]) / 15
			for i := q0; i < q1; i++ {
				code := 0.0
				if u != 0 {
					code = math.Floor(float64((res(i)-rp.lo[qb])/u + 0.5))
				}
				rp.codes[i] = uint8(min(max(code, 0), 15))
			}
		}
		if rp.matrix {
			for i := range rp.w {
				rp.w[i] *= 1 - lr*c.WeightDecay
			}
		}
		mm, vv := make([]float64, d), make([]float64, d)
		for s, kept := range rp.steps {
			age := float64(len(rp.steps) - 1 - s)
			for _, e := range kept {
				mm[e.idx] += math.Pow(c.Beta1, age) * e.val
				vv[e.idx] += math.Pow(c.Beta2, age) * e.val * e.val
			}
		}
		c1 := (1 - c.Beta1) / (1 - math.Pow(c.Beta1, float64(r.t)))
		c2 := (1 - c.Beta2) / (1 - math.Pow(c.Beta2, float64(r.t)))
		for i := range rp.w {
			rp.w[i] -= lr * c1 * mm[i] / (math.Sqrt(c2*vv[i]) + c.Eps)
		}
	}
}

// microAdamTestParams builds a matrix whose length is not a multiple of the
// small block sizes the tests use, a second matrix and a norm vector.
func microAdamTestParams() []*model.Param {
	mk := func(name string, role model.Role, shape ...int) *model.Param {
		n := 1
		for _, s := range shape {
			n *= s
		}
		p := &model.Param{Name: name, Role: role, Shape: shape, GlobalShape: shape, W: make([]float32, n), G: make([]float32, n)}
		for i := range p.W {
			p.W[i] = float32(math.Sin(float64(i)*0.37+float64(len(name)))) * 0.5
		}
		return p
	}
	return []*model.Param{
		mk("a", model.RoleMLP, 3, 13),
		mk("b", model.RoleAttnO, 4, 8),
		mk("n", model.RoleNorm, 5),
	}
}

// microAdamFillGrads writes deterministic pseudo-random gradients of varied
// scale for step s (a sin hash: no RNG state to keep in sync).
func microAdamFillGrads(ps []*model.Param, s int) {
	for i, p := range ps {
		for j := range p.G {
			x := math.Sin(float64(s*131+i*17+j)*12.9898) * 43758.5453
			x -= math.Floor(x)
			p.G[j] = float32((x - 0.5) * (0.2 + 0.1*float64(j%5)))
		}
	}
}

func microAdamCopyState(ts []NamedTensor) []NamedTensor {
	out := make([]NamedTensor, len(ts))
	for i, t := range ts {
		out[i] = NamedTensor{Name: t.Name, Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Data...)}
	}
	return out
}

// microAdamTrainTiny trains the tiny preset with B=4, T=32 on a repeated
// sentence and returns the mean train loss of the last 10 steps.
func microAdamTrainTiny(t *testing.T, steps int, lr float64, build func([]*model.Param) (Optimizer, error)) float64 {
	t.Helper()
	cfg := mustPreset(t, "tiny")
	cfg.SeqLen = 32
	m, err := model.New(cfg, 7, false)
	if err != nil {
		t.Fatal(err)
	}
	opt, err := build(m.Params())
	if err != nil {
		t.Fatal(err)
	}
	text := []byte("the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. ")
	var corpus []int32
	for len(corpus) < 4096 {
		for _, c := range text {
			corpus = append(corpus, int32(c))
		}
	}
	const B, T = 4, 32
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	var tail float64
	for s := 0; s < steps; s++ {
		for b := 0; b < B; b++ {
			off := ((s*B + b) * 37) % (len(corpus) - T - 1)
			copy(tokens[b*T:], corpus[off:off+T])
			copy(targets[b*T:], corpus[off+1:off+T+1])
		}
		m.ZeroGrad()
		loss, n := m.ForwardBackward(tokens, targets, B, T, float32(1.0/(B*T)))
		opt.Step(lr)
		if s >= steps-10 {
			tail += loss / float64(n) / 10
		}
	}
	return tail
}
