package model

import (
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/tensor"
)

// Inference with a key/value cache (the standard incremental decoding of
// autoregressive transformers, e.g. Pope et al. 2022, "Efficiently Scaling
// Transformer Inference", §2): the keys and values of every position seen so
// far are kept per layer, so each new token costs one row of every
// projection plus attention over the cached rows, instead of a forward pass
// over the whole sequence.
//
// For a chunk of n new tokens at positions p..p+n-1 each block computes
//
//	q, k, v = rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)   rotated at their own positions
//	K[p:p+n], V[p:p+n] = k, v
//	o_i = Σ_{j ≤ p+i} softmax_j(q_i·K_j / sqrt(hd)) V_j
//
// and the rest of the block exactly as in training (block.go). The
// projections, norms and SwiGLU are the device's kernels; the attention over
// the cache runs on the host, so a KVCache needs a model on the CPU.

// KVCache holds one sequence's keys and values for every layer.
type KVCache struct {
	cfg      Config
	capacity int         // positions the cache can hold
	n        int         // positions filled
	k, v     [][]float32 // per layer [capacity, KV·hd], after RoPE for k
	cos, sin []float32   // [capacity, hd/2]
}

// NewKVCache returns an empty cache for up to capacity positions of this
// model; it refuses a model on a device other than the CPU.
func (m *Model) NewKVCache(capacity int) (*KVCache, error) {
	if _, ok := m.stage.dev.(tensor.CPU); !ok {
		return nil, fmt.Errorf("KV-cache inference runs on the CPU; this model is on %s", m.stage.dev.Name())
	}
	if capacity <= 0 {
		return nil, fmt.Errorf("KV cache capacity %d must be > 0", capacity)
	}
	c := m.cfg
	kd, half := c.KVHeads*c.HeadDim(), c.HeadDim()/2
	kc := &KVCache{cfg: c, capacity: capacity, cos: make([]float32, capacity*half), sin: make([]float32, capacity*half)}
	tensor.RoPETables(kc.cos, kc.sin, capacity, c.HeadDim(), c.RopeTheta)
	for range c.Layers {
		kc.k = append(kc.k, make([]float32, capacity*kd))
		kc.v = append(kc.v, make([]float32, capacity*kd))
	}
	return kc, nil
}

// Len is the number of positions in the cache.
func (kc *KVCache) Len() int { return kc.n }

// Cap is the number of positions the cache can hold.
func (kc *KVCache) Cap() int { return kc.capacity }

// Reset empties the cache for a new sequence.
func (kc *KVCache) Reset() { kc.n = 0 }

// Append runs tokens (one sequence, continuing the cached one) through the
// model, adds their keys and values to the cache, and returns the logits of
// the last token ([Vocab], a fresh slice); with all set it returns the
// logits of every new token instead ([len(tokens)·Vocab]).
func (m *Model) Append(kc *KVCache, tokens []int32, all bool) ([]float32, error) {
	c := m.cfg
	n := len(tokens)
	switch {
	case kc.cfg != c:
		return nil, fmt.Errorf("KV cache was built for another model configuration")
	case n == 0:
		return nil, fmt.Errorf("append: no tokens")
	case kc.n+n > kc.capacity:
		return nil, fmt.Errorf("append: %d cached + %d new positions exceed the cache's %d", kc.n, n, kc.capacity)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= c.Vocab {
			return nil, fmt.Errorf("token %d at position %d is outside the vocabulary [0,%d)", t, i, c.Vocab)
		}
	}
	s := m.stage
	dev := s.dev
	d, hd, f := c.Dim, c.HeadDim(), c.FFN
	qd, kd, half := c.Heads*hd, c.KVHeads*hd, hd/2
	p := kc.n
	x := make([]float32, n*d)
	s.EmbedForward(tokens, x)
	xn, rstd := make([]float32, n*d), make([]float32, n)
	q, o := make([]float32, n*qd), make([]float32, n*qd)
	g, u, hm := make([]float32, n*f), make([]float32, n*f), make([]float32, n*f)
	cos, sin := kc.cos[p*half:(p+n)*half], kc.sin[p*half:(p+n)*half]
	for l, bl := range s.blocks {
		kl, vl := kc.k[l][p*kd:(p+n)*kd], kc.v[l][p*kd:(p+n)*kd]
		dev.RMSNormForward(xn, rstd, x, bl.norm1.W, n, d, c.NormEps)
		linearForward(dev, q, xn, bl.wq.W, n, d, qd, 0)
		linearForward(dev, kl, xn, bl.wk.W, n, d, kd, 0)
		linearForward(dev, vl, xn, bl.wv.W, n, d, kd, 0)
		// Row r of the chunk is position p+r: with t = n, ropeApply takes
		// row r's angles from row r of the tables sliced at p.
		dev.RoPEForward(q, cos, sin, n, n, c.Heads, hd)
		dev.RoPEForward(kl, cos, sin, n, n, c.KVHeads, hd)
		cachedAttention(o, q, kc.k[l], kc.v[l], p, n, c.Heads, c.KVHeads, hd)
		linearForward(dev, x, o, bl.wo.W, n, qd, d, 1)
		dev.RMSNormForward(xn, rstd, x, bl.norm2.W, n, d, c.NormEps)
		linearForward(dev, g, xn, bl.wg.W, n, d, f, 0)
		linearForward(dev, u, xn, bl.wu.W, n, d, f, 0)
		dev.SwiGLUForward(hm, g, u)
		linearForward(dev, x, hm, bl.wd.W, n, f, d, 1)
	}
	kc.n += n
	rows := x
	if !all {
		rows = x[(n-1)*d:]
		n = 1
	}
	dev.RMSNormForward(xn[:n*d], rstd[:n], rows, s.finalNorm.W, n, d, c.NormEps)
	logits := make([]float32, n*c.Vocab)
	linearForward(dev, logits, xn[:n*d], s.head.W, n, d, c.Vocab, 0)
	dev.Sync()
	return logits, nil
}

// cachedAttention writes o [n, H·hd] for n queries at positions p..p+n-1,
// each attending causally to cached keys and values [0, p+i] (grouped-query:
// query head h reads kv head h/(H/KV)). Softmax subtracts the row maximum
// and accumulates in float64.
func cachedAttention(o, q, k, v []float32, p, n, heads, kvHeads, hd int) {
	qd, kd, group := heads*hd, kvHeads*hd, heads/kvHeads
	scale := 1 / math.Sqrt(float64(hd))
	tensor.ParallelFor(n*heads, 1, func(lo, hi int) {
		sc := make([]float64, p+n)
		acc := make([]float64, hd)
		for task := lo; task < hi; task++ {
			i, h := task/heads, task%heads
			kvh := h / group
			qi := q[i*qd+h*hd : i*qd+(h+1)*hd]
			last := p + i
			mx := math.Inf(-1)
			for j := 0; j <= last; j++ {
				kj := k[j*kd+kvh*hd : j*kd+(kvh+1)*hd]
				var dot float32
				for e := range qi {
					dot += qi[e] * kj[e]
				}
				sc[j] = float64(dot) * scale
				mx = max(mx, sc[j])
			}
			clear(acc)
			var sum float64
			for j := 0; j <= last; j++ {
				w := math.Exp(sc[j] - mx)
				sum += w
				vj := v[j*kd+kvh*hd : j*kd+(kvh+1)*hd]
				for e := range acc {
					acc[e] += w * float64(vj[e])
				}
			}
			oi := o[i*qd+h*hd : i*qd+(h+1)*hd]
			for e := range oi {
				oi[e] = float32(acc[e] / sum)
			}
		}
	})
}
