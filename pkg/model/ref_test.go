package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Float64 reference implementations, written independently of the float32
// kernels: naive loops, full T×T attention with an explicit softmax, RoPE
// angles computed per element. They define what the kernels must compute;
// finite differences on them check the hand-written backward passes.

func refLinear(x, w []float64, n, in, out int) []float64 {
	y := make([]float64, n*out)
	for i := 0; i < n; i++ {
		for o := 0; o < out; o++ {
			var s float64
			for k := 0; k < in; k++ {
				s += x[i*in+k] * w[o*in+k]
			}
			y[i*out+o] = s
		}
	}
	return y
}

func refRMSNorm(x, w []float64, n, d int, eps float64) []float64 {
	y := make([]float64, n*d)
	for i := 0; i < n; i++ {
		var ss float64
		for j := 0; j < d; j++ {
			ss += x[i*d+j] * x[i*d+j]
		}
		r := 1 / math.Sqrt(ss/float64(d)+eps)
		for j := 0; j < d; j++ {
			y[i*d+j] = x[i*d+j] * r * w[j]
		}
	}
	return y
}

func refRope(x []float64, n, t, heads, hd int, theta float64) []float64 {
	y := make([]float64, len(x))
	half := hd / 2
	for r := 0; r < n; r++ {
		pos := float64(r % t)
		for h := 0; h < heads; h++ {
			base := r*heads*hd + h*hd
			for i := 0; i < hd; i++ {
				// rotate_half(x)[i] = -x[i+half] for i < half, x[i-half] otherwise.
				fi := i % half
				ang := pos / math.Pow(theta, float64(2*fi)/float64(hd))
				var rot float64
				if i < half {
					rot = -x[base+i+half]
				} else {
					rot = x[base+i-half]
				}
				y[base+i] = x[base+i]*math.Cos(ang) + rot*math.Sin(ang)
			}
		}
	}
	return y
}

func refAttention(q, k, v []float64, b, t, h, kv, hd int) []float64 {
	o := make([]float64, b*t*h*hd)
	scale := 1 / math.Sqrt(float64(hd))
	group := h / kv
	scores := make([]float64, t)
	for bb := 0; bb < b; bb++ {
		for hh := 0; hh < h; hh++ {
			g := hh / group
			for i := 0; i < t; i++ {
				mx := math.Inf(-1)
				for j := 0; j <= i; j++ {
					var s float64
					for d := 0; d < hd; d++ {
						s += q[((bb*t+i)*h+hh)*hd+d] * k[((bb*t+j)*kv+g)*hd+d]
					}
					scores[j] = s * scale
					mx = math.Max(mx, scores[j])
				}
				var z float64
				for j := 0; j <= i; j++ {
					scores[j] = math.Exp(scores[j] - mx)
					z += scores[j]
				}
				for j := 0; j <= i; j++ {
					p := scores[j] / z
					for d := 0; d < hd; d++ {
						o[((bb*t+i)*h+hh)*hd+d] += p * v[((bb*t+j)*kv+g)*hd+d]
					}
				}
			}
		}
	}
	return o
}

func refSwiGLU(g, u []float64) []float64 {
	h := make([]float64, len(g))
	for i := range g {
		h[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
	}
	return h
}

// refCrossEntropy is Σ over targeted tokens of −log softmax(logits)[target].
func refCrossEntropy(logits []float64, n, v int, targets []int32) float64 {
	var loss float64
	for i := 0; i < n; i++ {
		if targets[i] < 0 {
			continue
		}
		z := logits[i*v : (i+1)*v]
		mx := math.Inf(-1)
		for _, x := range z {
			mx = math.Max(mx, x)
		}
		var s float64
		for _, x := range z {
			s += math.Exp(x - mx)
		}
		loss += math.Log(s) + mx - z[targets[i]]
	}
	return loss
}

// refModelLoss is the summed loss of the whole decoder with weights taken by
// Hugging Face name from w.
func refModelLoss(c Config, w map[string][]float64, tokens, targets []int32, b, t int) float64 {
	n, d, hd, f := b*t, c.Dim, c.HeadDim(), c.FFN
	qd, kd := c.Heads*hd, c.KVHeads*hd
	x := make([]float64, n*d)
	emb := w["model.embed_tokens.weight"]
	for i, tok := range tokens {
		copy(x[i*d:(i+1)*d], emb[int(tok)*d:(int(tok)+1)*d])
	}
	for l := 0; l < c.Layers; l++ {
		p := func(s string) []float64 { return w["model.layers."+itoa(l)+"."+s] }
		xn := refRMSNorm(x, p("input_layernorm.weight"), n, d, c.NormEps)
		q := refRope(refLinear(xn, p("self_attn.q_proj.weight"), n, d, qd), n, t, c.Heads, hd, c.RopeTheta)
		k := refRope(refLinear(xn, p("self_attn.k_proj.weight"), n, d, kd), n, t, c.KVHeads, hd, c.RopeTheta)
		v := refLinear(xn, p("self_attn.v_proj.weight"), n, d, kd)
		a := refLinear(refAttention(q, k, v, b, t, c.Heads, c.KVHeads, hd), p("self_attn.o_proj.weight"), n, qd, d)
		for i := range x {
			x[i] += a[i]
		}
		xn = refRMSNorm(x, p("post_attention_layernorm.weight"), n, d, c.NormEps)
		hm := refSwiGLU(refLinear(xn, p("mlp.gate_proj.weight"), n, d, f), refLinear(xn, p("mlp.up_proj.weight"), n, d, f))
		m := refLinear(hm, p("mlp.down_proj.weight"), n, f, d)
		for i := range x {
			x[i] += m[i]
		}
	}
	x = refRMSNorm(x, w["model.norm.weight"], n, d, c.NormEps)
	return refCrossEntropy(refLinear(x, w["lm_head.weight"], n, d, c.Vocab), n, c.Vocab, targets)
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// Helpers.

func to64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

func randVec(r *rand.Rand, n int, std float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * std)
	}
	return x
}

func dot64(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// fdStep is the central-difference step. With float64 references the
// truncation error is O(h²) ≈ 1e-12 and the rounding error O(ε/h) ≈ 1e-10
// relative, both far below the float32 errors being tested.
const fdStep = 1e-6

// numGrad is ∂f/∂x[i] by central differences; x is restored.
func numGrad(f func() float64, x []float64, i int) float64 {
	old := x[i]
	x[i] = old + fdStep
	fp := f()
	x[i] = old - fdStep
	fm := f()
	x[i] = old
	return (fp - fm) / (2 * fdStep)
}

// maxRelErr is max|got−want| / max|want|: an error measured against the
// tensor's scale, so tiny entries with cancellation do not dominate.
func maxRelErr(got []float32, want []float64) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i])-want[i]))
		den = math.Max(den, math.Abs(want[i]))
	}
	if den == 0 {
		return num
	}
	return num / den
}

func checkClose(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: length %d, want %d", what, len(got), len(want))
	}
	e := maxRelErr(got, want)
	t.Logf("%s: max relative error %.3g (tolerance %.3g)", what, e, tol)
	if e > tol || math.IsNaN(e) {
		t.Errorf("%s: max relative error %.3g > %.3g", what, e, tol)
	}
}

// gradCheck compares the analytic gradient g of the scalar f w.r.t. x
// against central differences on the float64 reference at the given
// coordinates (all if idx is nil).
func gradCheck(t *testing.T, what string, f func() float64, x []float64, g []float32, idx []int, tol float64) {
	t.Helper()
	if idx == nil {
		idx = make([]int, len(x))
		for i := range idx {
			idx[i] = i
		}
	}
	got := make([]float32, len(idx))
	want := make([]float64, len(idx))
	for j, i := range idx {
		got[j] = g[i]
		want[j] = numGrad(f, x, i)
	}
	checkClose(t, what, got, want, tol)
}

func sample(r *rand.Rand, n, k int) []int {
	if k >= n {
		return nil
	}
	idx := make([]int, k)
	for i := range idx {
		idx[i] = r.IntN(n)
	}
	return idx
}
