package cuda

import "github.com/ternml/tern/pkg/tensor"

// Tensor-core attention: in BF16 precision, attention runs as batched cuBLAS
// GEMMs on bfloat16 operands around two float32 softmax kernels (kernels.cu,
// "tensor-core attention"). One GEMM batch element is one (sequence, KV
// head) pair: the group·T query rows of its group = H/KV query heads, packed
// contiguously, against its T keys. The T×T score matrices live in scratch,
// a chunk of pairs at a time, so memory stays bounded whatever B and H are.

// attnTCChunkScores caps the score elements of one chunk: scratch holds two
// float32 and two bfloat16 matrices of that size (768 MiB at 2²⁶).
var attnTCChunkScores = 1 << 26 // a variable so tests can force several chunks

// useTCAttention reports whether attention of shape sh takes the tensor-core
// path: BF16 precision, not turned off, and one pair's scores fit a chunk.
func (d *Device) useTCAttention(sh tensor.AttnShape) bool {
	if d.opts.Precision != BF16 || d.opts.FloatAttention {
		return false
	}
	return (sh.H/sh.KV)*sh.T*sh.T <= attnTCChunkScores
}

// attnTCChunk is the number of (sequence, KV head) pairs per chunk.
func attnTCChunk(sh tensor.AttnShape) int {
	per := (sh.H / sh.KV) * sh.T * sh.T
	return max(1, min(sh.B*sh.KV, attnTCChunkScores/max(per, 1)))
}

// gemmBatchedBF16 computes, for each of batch matrices, the row-major
// C = alpha·op(A)·op(B) with A and B bfloat16 and C float32, each operand
// batch element stride elements after the previous one.
func (w *worker) gemmBatchedBF16(transA, transB bool, m, n, k int, alpha float32, a uintptr, lda, sa int,
	b uintptr, ldb, sb int, c uintptr, ldc, sc, batch int) error {
	o1, o2, cm, cn, ck := cublasGemmArgs(transA, transB, m, n, k)
	al, be := alpha, float32(0)
	return checkCuBLAS("attention", "cublasGemmStridedBatchedEx", cublasGemmStridedBatchedEx(w.blas, o1, o2,
		int32(cm), int32(cn), int32(ck), &al, b, cudaR16BF, int32(ldb), int64(sb), a, cudaR16BF, int32(lda), int64(sa),
		&be, c, cudaR32F, int32(ldc), int64(sc), int32(batch), w.compute, cublasGemmDefault))
}

// attnPack rounds src [B·T, nh·hd] into the scratch buffer name as
// [B, nh, T, hd] bfloat16.
func (w *worker) attnPack(name string, src uintptr, sh tensor.AttnShape, nh int) (uintptr, error) {
	n := sh.B * sh.T * nh * sh.HD
	dst, err := w.scratchBuf(name, uintptr(n)*2)
	if err != nil {
		return 0, err
	}
	var a argPack
	a.ptr(dst).ptr(src).i32(sh.B).i32(sh.T).i32(nh).i32(sh.HD)
	return dst, w.launch("attn_pack_bf16", grid1D(n, blockThreads, maxGridBlocks), 1, blockThreads, &a)
}

// attnUnpack writes dst [B·T, nh·hd] from src [B, nh, T, hd] float32.
func (w *worker) attnUnpack(dst, src uintptr, sh tensor.AttnShape, nh int) error {
	n := sh.B * sh.T * nh * sh.HD
	var a argPack
	a.ptr(dst).ptr(src).i32(sh.B).i32(sh.T).i32(nh).i32(sh.HD)
	return w.launch("attn_unpack_f32", grid1D(n, blockThreads, maxGridBlocks), 1, blockThreads, &a)
}

// attnTCScratch returns n bytes of the scratch buffers name, for each name.
func (w *worker) attnTCScratch(sizes map[string]uintptr) (map[string]uintptr, error) {
	out := make(map[string]uintptr, len(sizes))
	for name, n := range sizes {
		p, err := w.scratchBuf(name, n)
		if err != nil {
			return nil, err
		}
		out[name] = p
	}
	return out, nil
}

// attnForwardTC: S = s·QKᵀ, P and L by attn_tc_softmax, O = PV.
func (w *worker) attnForwardTC(po, pl, pq, pk, pv uintptr, sh tensor.AttnShape) error {
	T, HD, group := sh.T, sh.HD, sh.H/sh.KV
	gT := group * T
	per := gT * T
	chunk := attnTCChunk(sh)
	qb, err := w.attnPack("attn_qb", pq, sh, sh.H)
	if err != nil {
		return err
	}
	kb, err := w.attnPack("attn_kb", pk, sh, sh.KV)
	if err != nil {
		return err
	}
	vb, err := w.attnPack("attn_vb", pv, sh, sh.KV)
	if err != nil {
		return err
	}
	buf, err := w.attnTCScratch(map[string]uintptr{
		"attn_s": uintptr(chunk*per) * 4, "attn_p": uintptr(chunk*per) * 2,
		"attn_o32": uintptr(sh.B*sh.H*T*HD) * 4,
	})
	if err != nil {
		return err
	}
	scale := attnScale(HD)
	for c0 := 0; c0 < sh.B*sh.KV; c0 += chunk {
		cnt := min(chunk, sh.B*sh.KV-c0)
		q := qb + uintptr(c0*gT*HD)*2
		k := kb + uintptr(c0*T*HD)*2
		v := vb + uintptr(c0*T*HD)*2
		if err := w.gemmBatchedBF16(false, true, gT, T, HD, scale, q, HD, gT*HD, k, HD, T*HD, buf["attn_s"], T, per, cnt); err != nil {
			return err
		}
		rows := cnt * gT
		var a argPack
		a.ptr(buf["attn_p"]).ptr(pl + uintptr(c0*gT)*4).ptr(buf["attn_s"]).i64(rows).i32(T)
		if err := w.launch("attn_tc_softmax", warpGrid(rows), 1, attnBlock, &a); err != nil {
			return err
		}
		o := buf["attn_o32"] + uintptr(c0*gT*HD)*4
		if err := w.gemmBatchedBF16(false, false, gT, HD, T, 1, buf["attn_p"], T, per, v, HD, T*HD, o, HD, gT*HD, cnt); err != nil {
			return err
		}
	}
	return w.attnUnpack(po, buf["attn_o32"], sh, sh.H)
}

// attnBackwardTC: D = rowsum(dO∘O), then per chunk S and dP by GEMMs, P and
// dS by attn_tc_dsoftmax, and dV = PᵀdO, dK = s·dSᵀQ, dQ = s·dS·K.
func (w *worker) attnBackwardTC(pdq, pdk, pdv, pdo, pq, pk, pv, po, pl uintptr, sh tensor.AttnShape) error {
	T, HD, group := sh.T, sh.HD, sh.H/sh.KV
	gT := group * T
	per := gT * T
	chunk := attnTCChunk(sh)
	rowsAll := sh.B * sh.H * T
	buf, err := w.attnTCScratch(map[string]uintptr{
		"attn_D": uintptr(rowsAll) * 4,
		"attn_s": uintptr(chunk*per) * 4, "attn_dp": uintptr(chunk*per) * 4,
		"attn_p": uintptr(chunk*per) * 2, "attn_ds": uintptr(chunk*per) * 2,
		"attn_o32":  uintptr(sh.B*sh.H*T*HD) * 4,
		"attn_dk32": uintptr(sh.B*sh.KV*T*HD) * 4, "attn_dv32": uintptr(sh.B*sh.KV*T*HD) * 4,
	})
	if err != nil {
		return err
	}
	var a argPack
	a.ptr(buf["attn_D"]).ptr(pdo).ptr(po).i32(sh.B).i32(T).i32(sh.H).i32(HD)
	if err := w.launch("attn_bwd_dot", warpGrid(rowsAll), 1, attnBlock, &a); err != nil {
		return err
	}
	qb, err := w.attnPack("attn_qb", pq, sh, sh.H)
	if err != nil {
		return err
	}
	kb, err := w.attnPack("attn_kb", pk, sh, sh.KV)
	if err != nil {
		return err
	}
	vb, err := w.attnPack("attn_vb", pv, sh, sh.KV)
	if err != nil {
		return err
	}
	dob, err := w.attnPack("attn_dob", pdo, sh, sh.H)
	if err != nil {
		return err
	}
	scale := attnScale(HD)
	for c0 := 0; c0 < sh.B*sh.KV; c0 += chunk {
		cnt := min(chunk, sh.B*sh.KV-c0)
		q := qb + uintptr(c0*gT*HD)*2
		do := dob + uintptr(c0*gT*HD)*2
		k := kb + uintptr(c0*T*HD)*2
		v := vb + uintptr(c0*T*HD)*2
		if err := w.gemmBatchedBF16(false, true, gT, T, HD, scale, q, HD, gT*HD, k, HD, T*HD, buf["attn_s"], T, per, cnt); err != nil {
			return err
		}
		if err := w.gemmBatchedBF16(false, true, gT, T, HD, 1, do, HD, gT*HD, v, HD, T*HD, buf["attn_dp"], T, per, cnt); err != nil {
			return err
		}
		rows := cnt * gT
		a.reset()
		a.ptr(buf["attn_p"]).ptr(buf["attn_ds"]).ptr(buf["attn_s"]).ptr(buf["attn_dp"]).
			ptr(pl + uintptr(c0*gT)*4).ptr(buf["attn_D"] + uintptr(c0*gT)*4).i64(rows).i32(T)
		if err := w.launch("attn_tc_dsoftmax", warpGrid(rows), 1, attnBlock, &a); err != nil {
			return err
		}
		dv := buf["attn_dv32"] + uintptr(c0*T*HD)*4
		if err := w.gemmBatchedBF16(true, false, T, HD, gT, 1, buf["attn_p"], T, per, do, HD, gT*HD, dv, HD, T*HD, cnt); err != nil {
			return err
		}
		dk := buf["attn_dk32"] + uintptr(c0*T*HD)*4
		if err := w.gemmBatchedBF16(true, false, T, HD, gT, scale, buf["attn_ds"], T, per, q, HD, gT*HD, dk, HD, T*HD, cnt); err != nil {
			return err
		}
		dq := buf["attn_o32"] + uintptr(c0*gT*HD)*4
		if err := w.gemmBatchedBF16(false, false, gT, HD, T, scale, buf["attn_ds"], T, per, k, HD, T*HD, dq, HD, gT*HD, cnt); err != nil {
			return err
		}
	}
	if err := w.attnUnpack(pdq, buf["attn_o32"], sh, sh.H); err != nil {
		return err
	}
	if err := w.attnUnpack(pdk, buf["attn_dk32"], sh, sh.KV); err != nil {
		return err
	}
	return w.attnUnpack(pdv, buf["attn_dv32"], sh, sh.KV)
}
