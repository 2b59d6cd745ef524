package model

import "github.com/ternml/tern/pkg/tensor"

// A pre-norm LLaMA block:
//
//	x1 = x  + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),  n1 = rmsnorm₁(x)
//	x2 = x1 + down_proj(silu(gate_proj(n2)) ∘ up_proj(n2)),                  n2 = rmsnorm₂(x1)
//
// The backward pass walks the same steps in reverse; the residual adds make
// the incoming gradient flow unchanged to both branches.

type block struct {
	dev                          tensor.Device
	layer                        int
	norm1, wq, wk, wv, wo, norm2 *Param
	wg, wu, wd                   *Param
}

// blockActs are the tensors one block saves for its backward pass. The block
// input is not among them: it is the residual stream kept by Acts.
type blockActs struct {
	xn1, rstd1 []float32 // [N,D], [N]
	q, k, v    []float32 // [N,H·hd], [N,KV·hd] ×2; q and k after RoPE
	o, lse     []float32 // [N,H·hd], [B·H·T]
	x1         []float32 // [N,D] residual after attention
	xn2, rstd2 []float32 // [N,D], [N]
	g, u, hm   []float32 // [N,F] ×3: gate, up, silu(gate)∘up
}

func newBlockActs(al *allocator, c Config, b, t int) blockActs {
	n, d, f, hd := b*t, c.Dim, c.FFN, c.HeadDim()
	return blockActs{
		xn1: al.f32(n * d), rstd1: al.f32(n),
		q: al.f32(n * c.Heads * hd), k: al.f32(n * c.KVHeads * hd), v: al.f32(n * c.KVHeads * hd),
		o: al.f32(n * c.Heads * hd), lse: al.f32(b * c.Heads * t),
		x1:  al.f32(n * d),
		xn2: al.f32(n * d), rstd2: al.f32(n),
		g: al.f32(n * f), u: al.f32(n * f), hm: al.f32(n * f),
	}
}

// sized returns views of s for a microbatch of b·t tokens, so one set of
// buffers allocated for the largest microbatch serves smaller ones.
func (s blockActs) sized(c Config, b, t int) blockActs {
	n, d, f, hd := b*t, c.Dim, c.FFN, c.HeadDim()
	return blockActs{
		xn1: s.xn1[:n*d], rstd1: s.rstd1[:n],
		q: s.q[:n*c.Heads*hd], k: s.k[:n*c.KVHeads*hd], v: s.v[:n*c.KVHeads*hd],
		o: s.o[:n*c.Heads*hd], lse: s.lse[:b*c.Heads*t],
		x1:  s.x1[:n*d],
		xn2: s.xn2[:n*d], rstd2: s.rstd2[:n],
		g: s.g[:n*f], u: s.u[:n*f], hm: s.hm[:n*f],
	}
}

// blockGrads is the backward scratch shared by all blocks of a stage.
type blockGrads struct {
	dxn     []float32 // [N,D]
	dq, do  []float32 // [N,H·hd]
	dk, dv  []float32 // [N,KV·hd]
	dhm, du []float32 // [N,F]; dhm is reused for d(gate)
	// sel is the stage's gather scratch for weights with Param.RowSel set
	// (see linearBackwardParam); nil when sized() made the views.
	sel *[]float32
}

// sized returns views of g for n tokens.
func (g blockGrads) sized(c Config, n int) blockGrads {
	d, f, hd := c.Dim, c.FFN, c.HeadDim()
	return blockGrads{
		dxn: g.dxn[:n*d],
		dq:  g.dq[:n*c.Heads*hd], do: g.do[:n*c.Heads*hd],
		dk: g.dk[:n*c.KVHeads*hd], dv: g.dv[:n*c.KVHeads*hd],
		dhm: g.dhm[:n*f], du: g.du[:n*f],
	}
}

func newBlockGrads(al *allocator, c Config, n int) blockGrads {
	d, f, hd := c.Dim, c.FFN, c.HeadDim()
	return blockGrads{
		dxn: al.f32(n * d),
		dq:  al.f32(n * c.Heads * hd), do: al.f32(n * c.Heads * hd),
		dk: al.f32(n * c.KVHeads * hd), dv: al.f32(n * c.KVHeads * hd),
		dhm: al.f32(n * f), du: al.f32(n * f),
	}
}

// forward runs the block on x, saving into s, and writes the block output to
// out unless out is nil (recomputation needs only the saved tensors).
func (bl *block) forward(c Config, s *blockActs, rope *ropeCache, b, t int, x, out []float32) {
	n, d, f, hd := b*t, c.Dim, c.FFN, c.HeadDim()
	qd, kd := c.Heads*hd, c.KVHeads*hd
	eps := c.NormEps
	dev := bl.dev
	dev.RMSNormForward(s.xn1, s.rstd1, x, bl.norm1.W, n, d, eps)
	linearForward(dev, s.q, s.xn1, bl.wq.W, n, d, qd, 0)
	linearForward(dev, s.k, s.xn1, bl.wk.W, n, d, kd, 0)
	linearForward(dev, s.v, s.xn1, bl.wv.W, n, d, kd, 0)
	dev.RoPEForward(s.q, rope.cos, rope.sin, n, t, c.Heads, hd)
	dev.RoPEForward(s.k, rope.cos, rope.sin, n, t, c.KVHeads, hd)
	dev.AttentionForward(s.o, s.lse, s.q, s.k, s.v, tensor.AttnShape{B: b, T: t, H: c.Heads, KV: c.KVHeads, HD: hd})
	dev.Copy(s.x1, x)
	linearForward(dev, s.x1, s.o, bl.wo.W, n, qd, d, 1)
	dev.RMSNormForward(s.xn2, s.rstd2, s.x1, bl.norm2.W, n, d, eps)
	linearForward(dev, s.g, s.xn2, bl.wg.W, n, d, f, 0)
	linearForward(dev, s.u, s.xn2, bl.wu.W, n, d, f, 0)
	dev.SwiGLUForward(s.hm, s.g, s.u)
	if out != nil {
		dev.Copy(out, s.x1)
		linearForward(dev, out, s.hm, bl.wd.W, n, f, d, 1)
	}
}

// backward turns dres, the gradient w.r.t. the block output, into the
// gradient w.r.t. the block input x, in place, and accumulates parameter
// gradients.
func (bl *block) backward(c Config, s *blockActs, gr *blockGrads, rope *ropeCache, b, t int, x, dres []float32) {
	n, d, f, hd := b*t, c.Dim, c.FFN, c.HeadDim()
	qd, kd := c.Heads*hd, c.KVHeads*hd
	dev := bl.dev
	// MLP branch: x2 = x1 + down(hm).
	linearBackwardParam(dev, gr.dhm, bl.wd, dres, s.hm, n, f, d, 0, gr.sel)
	dev.SwiGLUBackward(gr.dhm, gr.du, gr.dhm, s.g, s.u)
	dg := gr.dhm
	linearBackwardParam(dev, gr.dxn, bl.wg, dg, s.xn2, n, d, f, 0, gr.sel)
	linearBackwardParam(dev, gr.dxn, bl.wu, gr.du, s.xn2, n, d, f, 1, gr.sel)
	dev.RMSNormBackward(dres, bl.norm2.G, gr.dxn, s.x1, bl.norm2.W, s.rstd2, n, d)
	// Attention branch: x1 = x + o_proj(o).
	linearBackwardParam(dev, gr.do, bl.wo, dres, s.o, n, qd, d, 0, gr.sel)
	dev.AttentionBackward(gr.dq, gr.dk, gr.dv, gr.do, s.q, s.k, s.v, s.o, s.lse, tensor.AttnShape{B: b, T: t, H: c.Heads, KV: c.KVHeads, HD: hd})
	dev.RoPEBackward(gr.dq, rope.cos, rope.sin, n, t, c.Heads, hd)
	dev.RoPEBackward(gr.dk, rope.cos, rope.sin, n, t, c.KVHeads, hd)
	linearBackwardParam(dev, gr.dxn, bl.wq, gr.dq, s.xn1, n, d, qd, 0, gr.sel)
	linearBackwardParam(dev, gr.dxn, bl.wk, gr.dk, s.xn1, n, d, kd, 1, gr.sel)
	linearBackwardParam(dev, gr.dxn, bl.wv, gr.dv, s.xn1, n, d, kd, 1, gr.sel)
	dev.RMSNormBackward(dres, bl.norm1.G, gr.dxn, x, bl.norm1.W, s.rstd1, n, d)
}
