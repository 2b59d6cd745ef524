package tensor

import (
	"fmt"
	"math"
	"sync"
)

// Causal grouped-query attention with a blockwise online softmax, so the
// T×T score matrix is never held: only one attnBlock×attnBlock tile per
// goroutine (Rabe & Staats 2021, "Self-attention Does Not Need O(n²)
// Memory"; Dao 2023, "FlashAttention-2", Algorithms 1 and 2).
//
// Layout: q and o are [B·T, H·hd], k and v are [B·T, KV·hd]; query head h
// reads key/value head h / (H/KV) (Ainslie et al. 2023, GQA). With
// s = 1/sqrt(hd) and causal mask j ≤ i:
//
//	forward (Alg. 1): for each query tile Qᵢ, over key tiles Kⱼ, Vⱼ:
//	    Sᵢⱼ = s·QᵢKⱼᵀ,  mᵢ' = max(mᵢ, rowmax Sᵢⱼ),  P = exp(Sᵢⱼ − mᵢ')
//	    ℓᵢ = e^(mᵢ−mᵢ')ℓᵢ + rowsum P,  Oᵢ = e^(mᵢ−mᵢ')Oᵢ + P·Vⱼ
//	  then Oᵢ /= ℓᵢ and the row logsumexp Lᵢ = mᵢ + log ℓᵢ is kept.
//	backward (Alg. 2): Dᵢ = rowsum(dOᵢ ∘ Oᵢ); for each tile pair
//	    P = exp(s·QᵢKⱼᵀ − Lᵢ),  dVⱼ += Pᵀ·dOᵢ,  dP = dOᵢ·Vⱼᵀ,
//	    dS = P ∘ (dP − Dᵢ),  dQᵢ += s·dS·Kⱼ,  dKⱼ += s·dSᵀ·Qᵢ
//
// Saved activations are O and L only: linear in T.

// attnBlock is the tile edge for both queries and keys.
const attnBlock = 64

type attnScratch struct {
	s, dp   []float32 // [attnBlock·attnBlock] scores / probabilities, dP / dS
	m, l    []float32 // [attnBlock] running max and sum
	acc     []float32 // [attnBlock·hd] unnormalised output
	rowDots []float32 // [T] Dᵢ of one head
}

var attnScratchPool = sync.Pool{New: func() any { return new(attnScratch) }}

func getAttnScratch(hd, t int) *attnScratch {
	sc := attnScratchPool.Get().(*attnScratch)
	if len(sc.s) < attnBlock*attnBlock {
		sc.s = make([]float32, attnBlock*attnBlock)
		sc.dp = make([]float32, attnBlock*attnBlock)
		sc.m = make([]float32, attnBlock)
		sc.l = make([]float32, attnBlock)
	}
	if len(sc.acc) < attnBlock*hd {
		sc.acc = make([]float32, attnBlock*hd)
	}
	if len(sc.rowDots) < t {
		sc.rowDots = make([]float32, t)
	}
	return sc
}

func (s AttnShape) scale() float32 { return float32(1 / math.Sqrt(float64(s.HD))) }

// check panics unless the shape is usable and the buffers hold it.
func (s AttnShape) check(op string, q, k, v, o []float32) {
	if s.B < 0 || s.T < 0 || s.H <= 0 || s.KV <= 0 || s.HD <= 0 || s.H%s.KV != 0 {
		panic(fmt.Sprintf("tensor.%s: shape %+v: need B, T >= 0, H, KV, HD > 0 and H a multiple of KV", op, s))
	}
	n := s.B * s.T
	need(op, "q", q, n*s.H*s.HD)
	need(op, "k", k, n*s.KV*s.HD)
	need(op, "v", v, n*s.KV*s.HD)
	need(op, "o", o, n*s.H*s.HD)
}

// AttentionForward implements Device: it writes o [B·T, H·hd] and
// lse [B, H, T].
func (CPU) AttentionForward(o, lse, q, k, v []float32, sh AttnShape) {
	sh.check("AttentionForward", q, k, v, o)
	need("AttentionForward", "lse", lse, sh.B*sh.H*sh.T)
	B, T, H, KV, hd := sh.B, sh.T, sh.H, sh.KV, sh.HD
	qs, ks := H*hd, KV*hd
	group := H / KV
	scale := sh.scale()
	negInf := float32(math.Inf(-1))
	ParallelFor(B*H, 1, func(lo, hi int) {
		sc := getAttnScratch(hd, T)
		defer attnScratchPool.Put(sc)
		for task := lo; task < hi; task++ {
			b, h := task/H, task%H
			g := h / group
			for i0 := 0; i0 < T; i0 += attnBlock {
				br := min(attnBlock, T-i0)
				m, l, acc := sc.m[:br], sc.l[:br], sc.acc[:br*hd]
				for r := range m {
					m[r], l[r] = negInf, 0
				}
				clear(acc)
				qi := q[((b*T+i0)*H+h)*hd:]
				for j0 := 0; j0 < i0+br; j0 += attnBlock {
					bc := min(attnBlock, T-j0)
					Gemm(false, true, br, bc, hd, scale, qi, qs, k[((b*T+j0)*KV+g)*hd:], ks, 0, sc.s, attnBlock)
					for r := 0; r < br; r++ {
						row := sc.s[r*attnBlock : r*attnBlock+bc]
						last := min(i0+r-j0, bc-1) // last visible key column
						if last < 0 {
							clear(row)
							continue
						}
						mx := m[r]
						for c := 0; c <= last; c++ {
							mx = max(mx, row[c])
						}
						alpha := exp32(m[r] - mx)
						var sum float32
						for c := 0; c <= last; c++ {
							p := exp32(row[c] - mx)
							row[c] = p
							sum += p
						}
						clear(row[last+1:])
						l[r] = l[r]*alpha + sum
						m[r] = mx
						if alpha != 1 {
							ar := acc[r*hd : (r+1)*hd]
							for d := range ar {
								ar[d] *= alpha
							}
						}
					}
					Gemm(false, false, br, hd, bc, 1, sc.s, attnBlock, v[((b*T+j0)*KV+g)*hd:], ks, 1, acc, hd)
				}
				for r := 0; r < br; r++ {
					inv := 1 / l[r]
					dst := o[((b*T+i0+r)*H+h)*hd:][:hd]
					for d, a := range acc[r*hd : (r+1)*hd] {
						dst[d] = a * inv
					}
					lse[(b*H+h)*T+i0+r] = m[r] + float32(math.Log(float64(l[r])))
				}
			}
		}
	})
}

// AttentionBackward implements Device: it overwrites dq, dk, dv. Work is
// split over (batch, kv head): every query head of a group adds into the same
// dK, dV rows, so one task owns the whole group and sums in a fixed order.
func (CPU) AttentionBackward(dq, dk, dv, dout, q, k, v, o, lse []float32, sh AttnShape) {
	sh.check("AttentionBackward", q, k, v, o)
	sh.check("AttentionBackward", dq, dk, dv, dout)
	need("AttentionBackward", "lse", lse, sh.B*sh.H*sh.T)
	B, T, H, KV, hd := sh.B, sh.T, sh.H, sh.KV, sh.HD
	qs, ks := H*hd, KV*hd
	group := H / KV
	scale := sh.scale()
	Zero(dq)
	Zero(dk)
	Zero(dv)
	ParallelFor(B*KV, 1, func(lo, hi int) {
		sc := getAttnScratch(hd, T)
		defer attnScratchPool.Put(sc)
		for task := lo; task < hi; task++ {
			b, g := task/KV, task%KV
			for h := g * group; h < (g+1)*group; h++ {
				dots := sc.rowDots[:T]
				for t := 0; t < T; t++ {
					off := ((b*T+t)*H + h) * hd
					var s float32
					for d := 0; d < hd; d++ {
						s += dout[off+d] * o[off+d]
					}
					dots[t] = s
				}
				L := lse[(b*H+h)*T : (b*H+h+1)*T]
				for j0 := 0; j0 < T; j0 += attnBlock {
					bc := min(attnBlock, T-j0)
					kj := k[((b*T+j0)*KV+g)*hd:]
					vj := v[((b*T+j0)*KV+g)*hd:]
					dkj := dk[((b*T+j0)*KV+g)*hd:]
					dvj := dv[((b*T+j0)*KV+g)*hd:]
					for i0 := j0 - j0%attnBlock; i0 < T; i0 += attnBlock {
						br := min(attnBlock, T-i0)
						if i0+br <= j0 {
							continue
						}
						qi := q[((b*T+i0)*H+h)*hd:]
						doi := dout[((b*T+i0)*H+h)*hd:]
						dqi := dq[((b*T+i0)*H+h)*hd:]
						Gemm(false, true, br, bc, hd, scale, qi, qs, kj, ks, 0, sc.s, attnBlock)
						for r := 0; r < br; r++ {
							row := sc.s[r*attnBlock : r*attnBlock+bc]
							last := min(i0+r-j0, bc-1)
							li := L[i0+r]
							for c := 0; c <= last; c++ {
								row[c] = exp32(row[c] - li)
							}
							clear(row[max(last+1, 0):])
						}
						Gemm(true, false, bc, hd, br, 1, sc.s, attnBlock, doi, qs, 1, dvj, ks)
						Gemm(false, true, br, bc, hd, 1, doi, qs, vj, ks, 0, sc.dp, attnBlock)
						for r := 0; r < br; r++ {
							p := sc.s[r*attnBlock : r*attnBlock+bc]
							ds := sc.dp[r*attnBlock : r*attnBlock+bc]
							di := dots[i0+r]
							for c := range ds {
								ds[c] = p[c] * (ds[c] - di)
							}
						}
						Gemm(false, false, br, hd, bc, scale, sc.dp, attnBlock, kj, ks, 1, dqi, qs)
						Gemm(true, false, bc, hd, br, scale, sc.dp, attnBlock, qi, qs, 1, dkj, ks)
					}
				}
			}
		}
	})
}
