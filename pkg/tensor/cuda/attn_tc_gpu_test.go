//go:build gpu

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/tensor"
)

// TestGPUAttentionTensorCores checks BF16 precision's attention (bfloat16
// GEMMs on the tensor cores, attn_tc.go) against tensor.CPU in float32.
// Q, K, V, dO and the probabilities are rounded to bfloat16 (8 significant
// bits, 2⁻⁹ ≈ 2e-3 relative each); scores of width-hd dot products, softmax
// over up to T keys and the T-term sums of the backward pass add such
// errors with random signs. Limits, relative to the largest reference
// magnitude: lse 1e-2 (it is of order log T, so an absolute error of a few
// 1e-3 in the scores), o 2e-2, dq, dk, dv 3e-2. A second backward must
// repeat the first bit for bit, and the path must have run (its score
// scratch exists).
func TestGPUAttentionTensorCores(t *testing.T) {
	bf, err := New(Options{Precision: BF16})
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	saved := attnTCChunkScores
	defer func() { attnTCChunkScores = saved }()
	for _, tc := range []struct {
		sh    tensor.AttnShape
		chunk int // score elements per chunk; small ones force several chunks
	}{
		{tensor.AttnShape{B: 2, T: 100, H: 4, KV: 2, HD: 32}, saved},
		{tensor.AttnShape{B: 1, T: 160, H: 3, KV: 3, HD: 64}, saved},
		{tensor.AttnShape{B: 3, T: 37, H: 4, KV: 1, HD: 80}, 2 * 4 * 37 * 37},
		{tensor.AttnShape{B: 2, T: 256, H: 4, KV: 4, HD: 64}, 3 * 256 * 256},
		{tensor.AttnShape{B: 1, T: 300, H: 2, KV: 1, HD: 128}, saved},
		{tensor.AttnShape{B: 2, T: 50, H: 2, KV: 2, HD: 160}, saved},
		{tensor.AttnShape{B: 1, T: 1024, H: 4, KV: 2, HD: 64}, 2 * 1024 * 1024},
	} {
		sh := tc.sh
		t.Run(fmt.Sprintf("%+v/chunk%d", sh, tc.chunk), func(t *testing.T) {
			attnTCChunkScores = tc.chunk
			r := rand.New(rand.NewPCG(31, uint64(sh.T)))
			cpu := tensor.CPU{}
			n := sh.B * sh.T
			qn, kn := n*sh.H*sh.HD, n*sh.KV*sh.HD
			q, k, v := randn(r, qn, 1), randn(r, kn, 1), randn(r, kn, 1)
			o, lse := make([]float32, qn), make([]float32, sh.B*sh.H*sh.T)
			cpu.AttentionForward(o, lse, q, k, v, sh)
			gq, gk, gv := upload(bf, q), upload(bf, k), upload(bf, v)
			gO, gl := bf.Alloc(qn), bf.Alloc(len(lse))
			if !bf.useTCAttention(sh) {
				t.Fatalf("shape %+v does not take the tensor-core path", sh)
			}
			bf.AttentionForward(gO, gl, gq, gk, gv, sh)
			bf.Sync()
			expectClose(t, "bf16 attention o", gO, o, 2e-2)
			expectClose(t, "bf16 attention lse", gl, lse, 1e-2)

			dout := randn(r, qn, 1)
			dq, dk, dv := make([]float32, qn), make([]float32, kn), make([]float32, kn)
			cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, o, lse, sh)
			gdq, gdk, gdv := bf.Alloc(qn), bf.Alloc(kn), bf.Alloc(kn)
			for i := range gdk {
				gdq[i%qn], gdk[i], gdv[i] = 7, 7, 7 // backward overwrites
			}
			gdo := upload(bf, dout)
			bf.AttentionBackward(gdq, gdk, gdv, gdo, gq, gk, gv, gO, gl, sh)
			bf.Sync()
			expectClose(t, "bf16 attention dq", gdq, dq, 3e-2)
			expectClose(t, "bf16 attention dk", gdk, dk, 3e-2)
			expectClose(t, "bf16 attention dv", gdv, dv, 3e-2)
			first := append([]float32(nil), gdq...)
			bf.AttentionBackward(gdq, gdk, gdv, gdo, gq, gk, gv, gO, gl, sh)
			bf.Sync()
			expectClose(t, "bf16 attention dq repeat (bitwise)", gdq, first, 0)
			ran := false
			bf.call("probe", func(w *worker) error { _, ran = w.scratch["attn_ds"]; return nil })
			if !ran {
				t.Fatal("the tensor-core backward did not run (no score scratch)")
			}
		})
	}
}

// TestGPUAdamMini steps Adam-mini on the small preset's parameters on the
// GPU (the device's AdamMini kernel) and on the CPU (pkg/optim's loop) from
// the same weights and gradients, for both partitions. The arithmetic is
// the same float32 sequence with Σg² in float64, so parameters and state
// must agree to 1e-6 relative (a last-bit difference in the double sum can
// flip one rounding of v).
func TestGPUAdamMini(t *testing.T) {
	cfg, err := model.Preset("small")
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range optim.AdamMiniPartitions {
		t.Run(part, func(t *testing.T) {
			cm, err := model.New(cfg, 5, false)
			if err != nil {
				t.Fatal(err)
			}
			gm, err := model.New(cfg, 5, false, model.WithDevice(gpu))
			if err != nil {
				t.Fatal(err)
			}
			oc := optim.DefaultAdamMiniConfig().ForModel(cfg)
			oc.Partition, oc.WeightDecay, oc.Beta2 = part, 0.1, 0.95
			copt, err := optim.NewAdamMini(cm.Params(), oc)
			if err != nil {
				t.Fatal(err)
			}
			gopt, err := optim.NewAdamMini(gm.Params(), oc)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(41, 42))
			cps, gps := cm.Params(), gm.Params()
			for step := range 3 {
				gpu.Sync()
				for i, p := range cps {
					copy(p.G, randn(r, len(p.G), 0.01))
					copy(gps[i].G, p.G)
				}
				copt.Step(1e-3 * float64(step+1))
				gopt.Step(1e-3 * float64(step+1))
			}
			gpu.Sync()
			for i, p := range cps {
				expectClose(t, "adam-mini "+p.Name, gps[i].W, p.W, 1e-6)
			}
			cs, gs := copt.State(), gopt.State()
			for i := range cs {
				expectClose(t, "adam-mini state "+cs[i].Name, gs[i].Data, cs[i].Data, 1e-6)
			}
			if copt.StateBytes() != gopt.StateBytes() {
				t.Errorf("StateBytes: GPU %d, CPU %d", gopt.StateBytes(), copt.StateBytes())
			}
		})
	}
}

// TestGPUAdamMiniLargeBlocks drives Device.AdamMini directly with blocks
// larger than a chunk (the partial-sum path), one not a multiple of the
// chunk, against the update written out in float64 here.
func TestGPUAdamMiniLargeBlocks(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for _, bs := range []int{300, 3 * adamMiniChunk, 2*adamMiniChunk + 7, 5*adamMiniChunk + 1001} {
		const nb = 3
		n := nb * bs
		w, g, m := randn(r, n, 1), randn(r, n, 0.01), randn(r, n, 0.001)
		v := make([]float32, nb)
		for i := range v {
			v[i] = 1e-5 * float32(i+1)
		}
		u := tensor.AdamWUpdate{Form: tensor.AdamWTorch, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, StepSize: 2e-3, BC2Sqrt: 0.4, Decay: 0.9999}
		gw, gg, gm, gv := upload(gpu, w), upload(gpu, g), upload(gpu, m), upload(gpu, v)
		gpu.AdamMini(gw, gg, gm, gv, bs, u)
		gpu.Sync()
		for b := range nb {
			var sq float64
			for _, x := range g[b*bs : (b+1)*bs] {
				sq += float64(x) * float64(x)
			}
			v[b] = u.Beta2*v[b] + (1-u.Beta2)*float32(sq/float64(bs))
			denom := float32(math.Sqrt(float64(v[b])))/u.BC2Sqrt + u.Eps
			for j := b * bs; j < (b+1)*bs; j++ {
				m[j] = u.Beta1*m[j] + (1-u.Beta1)*g[j]
				w[j] = w[j]*u.Decay - u.StepSize*m[j]/denom
			}
		}
		expectClose(t, fmt.Sprintf("AdamMini block %d v", bs), gv, v, 1e-6)
		expectClose(t, fmt.Sprintf("AdamMini block %d m", bs), gm, m, 1e-6)
		expectClose(t, fmt.Sprintf("AdamMini block %d w", bs), gw, w, 1e-6)
	}
}
