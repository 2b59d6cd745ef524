package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ternml/tern/pkg/tensor"
)

// cpu runs the kernels under test.
var cpu tensor.Device = tensor.CPU{}

// Tolerances. The kernels compute in float32 (unit roundoff 6e-8) with sums
// of up to a few hundred terms, so forward values carry relative errors of
// about 1e-6; we allow fwdTol = 1e-5. Gradients pass through more float32
// steps (and through exp in softmax/silu), and are compared with float64
// central differences whose own error is ~1e-10; gradTol = 1e-4 still sits
// two orders of magnitude above the observed float32 noise while any wrong
// term in a backward formula shows up as an O(1) relative error.
const (
	fwdTol  = 1e-5
	gradTol = 1e-4
)

func TestLinear(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	n, in, out := 7, 13, 11
	x, w := randVec(r, n*in, 1), randVec(r, out*in, 0.3)
	y := make([]float32, n*out)
	linearForward(cpu, y, x, w, n, in, out, 0)
	x64, w64 := to64(x), to64(w)
	checkClose(t, "linear forward", y, refLinear(x64, w64, n, in, out), fwdTol)

	dy := randVec(r, n*out, 1)
	dx, dw := make([]float32, n*in), make([]float32, out*in)
	linearBackward(cpu, dx, dw, dy, x, w, n, in, out, 0)
	dy64 := to64(dy)
	f := func() float64 { return dot64(dy64, refLinear(x64, w64, n, in, out)) }
	gradCheck(t, "linear dx", f, x64, dx, nil, gradTol)
	gradCheck(t, "linear dw", f, w64, dw, nil, gradTol)
}

func TestRMSNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	n, d := 6, 24
	eps := 1e-5
	x, w := randVec(r, n*d, 1), randVec(r, d, 1)
	y, rstd := make([]float32, n*d), make([]float32, n)
	cpu.RMSNormForward(y, rstd, x, w, n, d, eps)
	x64, w64 := to64(x), to64(w)
	checkClose(t, "rmsnorm forward", y, refRMSNorm(x64, w64, n, d, eps), fwdTol)

	dy := randVec(r, n*d, 1)
	dx, dw := make([]float32, n*d), make([]float32, d)
	cpu.RMSNormBackward(dx, dw, dy, x, w, rstd, n, d)
	dy64 := to64(dy)
	f := func() float64 { return dot64(dy64, refRMSNorm(x64, w64, n, d, eps)) }
	gradCheck(t, "rmsnorm dx", f, x64, dx, nil, gradTol)
	gradCheck(t, "rmsnorm dw", f, w64, dw, nil, gradTol)
}

func TestRoPE(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	b, tt, heads, hd := 2, 9, 3, 8
	n := b * tt
	theta := 10000.0
	x := randVec(r, n*heads*hd, 1)
	cos, sin := make([]float32, tt*hd/2), make([]float32, tt*hd/2)
	tensor.RoPETables(cos, sin, tt, hd, theta)
	y := append([]float32(nil), x...)
	cpu.RoPEForward(y, cos, sin, n, tt, heads, hd)
	x64 := to64(x)
	checkClose(t, "rope forward", y, refRope(x64, n, tt, heads, hd, theta), fwdTol)

	dy := randVec(r, len(x), 1)
	dx := append([]float32(nil), dy...)
	cpu.RoPEBackward(dx, cos, sin, n, tt, heads, hd)
	dy64 := to64(dy)
	f := func() float64 { return dot64(dy64, refRope(x64, n, tt, heads, hd, theta)) }
	gradCheck(t, "rope dx", f, x64, dx, nil, gradTol)
}

func TestSwiGLU(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	n := 50
	g, u := randVec(r, n, 2), randVec(r, n, 1)
	h := make([]float32, n)
	cpu.SwiGLUForward(h, g, u)
	g64, u64 := to64(g), to64(u)
	checkClose(t, "swiglu forward", h, refSwiGLU(g64, u64), fwdTol)

	dh := randVec(r, n, 1)
	dg, du := append([]float32(nil), dh...), make([]float32, n)
	cpu.SwiGLUBackward(dg, du, dg, g, u) // dg aliases dh, as in the block
	dh64 := to64(dh)
	f := func() float64 { return dot64(dh64, refSwiGLU(g64, u64)) }
	gradCheck(t, "swiglu dg", f, g64, dg, nil, gradTol)
	gradCheck(t, "swiglu du", f, u64, du, nil, gradTol)
}

func TestEmbeddingShard(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	v, d := 10, 5
	lo, hi := 3, 7
	full := randVec(r, v*d, 1)
	shard := full[lo*d : hi*d]
	tokens := []int32{0, 3, 6, 7, 3, 9, 4, 3}
	out := make([]float32, len(tokens)*d)
	for i := range out {
		out[i] = float32(math.NaN()) // every element must be written
	}
	cpu.EmbeddingForward(out, shard, lo, hi, d, tokens)
	dOut := randVec(r, len(out), 1)
	dw := make([]float32, len(shard))
	cpu.EmbeddingBackward(dw, dOut, lo, hi, d, tokens)
	wantDW := make([]float64, len(shard))
	for n, tok := range tokens {
		for j := 0; j < d; j++ {
			want := 0.0
			if int(tok) >= lo && int(tok) < hi {
				want = float64(full[int(tok)*d+j])
				wantDW[(int(tok)-lo)*d+j] += float64(dOut[n*d+j])
			}
			if float64(out[n*d+j]) != want {
				t.Fatalf("token %d col %d: got %v want %v", tok, j, out[n*d+j], want)
			}
		}
	}
	checkClose(t, "embedding dW", dw, wantDW, fwdTol)
}

func TestAttentionMatchesNaive(t *testing.T) {
	for _, tc := range []struct{ b, t, h, kv, hd int }{
		{2, 37, 4, 2, 8}, {1, 64, 2, 2, 8}, {1, 130, 4, 1, 8}, {2, 1, 2, 1, 4},
	} {
		t.Run(fmt.Sprintf("B%dT%dH%dKV%d", tc.b, tc.t, tc.h, tc.kv), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(tc.t), 11))
			sh := tensor.AttnShape{B: tc.b, T: tc.t, H: tc.h, KV: tc.kv, HD: tc.hd}
			n := tc.b * tc.t
			qd, kd := tc.h*tc.hd, tc.kv*tc.hd
			q, k, v := randVec(r, n*qd, 1), randVec(r, n*kd, 1), randVec(r, n*kd, 1)
			o, lse := make([]float32, n*qd), make([]float32, tc.b*tc.h*tc.t)
			cpu.AttentionForward(o, lse, q, k, v, sh)
			q64, k64, v64 := to64(q), to64(k), to64(v)
			ref := func() []float64 { return refAttention(q64, k64, v64, tc.b, tc.t, tc.h, tc.kv, tc.hd) }
			checkClose(t, "attention forward", o, ref(), fwdTol)

			dout := randVec(r, len(o), 1)
			dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
			cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, o, lse, sh)
			d64 := to64(dout)
			f := func() float64 { return dot64(d64, ref()) }
			const coords = 60 // finite differences of the naive O(T²) reference are costly
			gradCheck(t, "attention dq", f, q64, dq, sample(r, len(q), coords), gradTol)
			gradCheck(t, "attention dk", f, k64, dk, sample(r, len(k), coords), gradTol)
			gradCheck(t, "attention dv", f, v64, dv, sample(r, len(v), coords), gradTol)
		})
	}
}

func newHeadStats(n int) HeadStats {
	return HeadStats{Max: make([]float32, n), SumExp: make([]float32, n), TargetLogit: make([]float32, n), HasTarget: make([]bool, n)}
}

func TestHeadShardCrossEntropy(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 13))
	n, d, v := 6, 8, 11
	h, w := randVec(r, n*d, 1), randVec(r, v*d, 1)
	targets := []int32{3, -1, 10, 0, 5, 7}
	h64, w64 := to64(h), to64(w)
	f := func() float64 { return refCrossEntropy(refLinear(h64, w64, n, d, v), n, v, targets) }
	want := f()
	for _, cuts := range [][]int{{0, 11}, {0, 4, 11}, {0, 3, 7, 11}} {
		t.Run(fmt.Sprint(cuts), func(t *testing.T) {
			parts := make([]HeadStats, len(cuts)-1)
			logits := make([][]float32, len(parts))
			for s := range parts {
				lo, hi := cuts[s], cuts[s+1]
				parts[s] = newHeadStats(n)
				logits[s] = make([]float32, n*(hi-lo))
				headForward(cpu, logits[s], parts[s], h, w[lo*d:hi*d], lo, hi-lo, d, targets)
			}
			gMax, gSum := make([]float32, n), make([]float32, n)
			loss, count := CombineHeadStats(parts, gMax, gSum)
			if count != 5 {
				t.Fatalf("count %d, want 5 (one target ignored)", count)
			}
			if math.Abs(loss-want) > 1e-5*math.Abs(want) {
				t.Fatalf("loss %.9g, want %.9g", loss, want)
			}
			const scale = 0.5
			dh, dw := make([]float32, n*d), make([]float32, v*d)
			for s := range parts {
				lo, hi := cuts[s], cuts[s+1]
				headBackward(cpu, dw[lo*d:hi*d], dh, logits[s], h, w[lo*d:hi*d], lo, hi-lo, d, targets, gMax, gSum, scale)
			}
			fs := func() float64 { return scale * f() }
			gradCheck(t, "head dh", fs, h64, dh, nil, gradTol)
			gradCheck(t, "head dW", fs, w64, dw, nil, gradTol)
			for j := 0; j < d; j++ {
				if dh[1*d+j] != 0 {
					t.Fatalf("ignored token has gradient %v", dh[1*d+j])
				}
			}
		})
	}
}
