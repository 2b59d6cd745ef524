package cuda

import (
	"fmt"
	"math"
	"slices"

	"github.com/ternml/tern/pkg/tensor"
)

// Launch geometry. Grid-stride kernels cap their grid: past a few waves of
// blocks per SM, more blocks only add scheduling.
const (
	blockThreads  = 256
	maxGridBlocks = 8192
	attnBlock     = 128      // threads of an attention block: 4 warps
	attnMaxHD     = 256      // ATTN_MAXD·32 in kernels.cu
	attnTiledHD   = 128      // 4·32 (AT_E ≤ 4 in kernels.cu): wider heads use the warp-per-row kernels
	attnTileRows  = 32       // AT_BROWS: query (or key) rows per tiled block
	attnSmemOptIn = 96 << 10 // shared memory the tiled kernels ask for (head width 128 needs 66 KiB)
	rmsChunkRows  = 64       // rows per partial sum of RMSNorm's gain gradient
	ceColBlocks   = 64       // column blocks per row in the cross-entropy backward
)

// i32 panics unless v fits the non-negative C int a kernel or cuBLAS takes.
func i32(op, name string, v int) {
	if v < 0 || v > math.MaxInt32 {
		panic(fmt.Sprintf("cuda.%s: %s = %d is outside [0, %d]", op, name, v, math.MaxInt32))
	}
}

// Gemm implements tensor.Device with cublasGemmEx in the device's precision.
func (d *Device) Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	const op = "Gemm"
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("cuda.Gemm: negative dimension m=%d n=%d k=%d", m, n, k))
	}
	for _, v := range []struct {
		name string
		v    int
	}{{"m", m}, {"n", n}, {"k", k}, {"lda", lda}, {"ldb", ldb}, {"ldc", ldc}} {
		i32(op, v.name, v.v)
	}
	pa := d.buf(op, "A", a, gemmNeed("A", transA, m, k, lda))
	pb := d.buf(op, "B", b, gemmNeed("B", transB, k, n, ldb))
	pc := d.buf(op, "C", c, gemmNeed("C", false, m, n, ldc))
	if m == 0 || n == 0 {
		return
	}
	na, nb := gemmNeed("A", transA, m, k, lda), gemmNeed("B", transB, k, n, ldb)
	bf16 := d.opts.Precision == BF16
	// BF16 operands whose rows are not 16-byte aligned, or an inner
	// dimension that is not a multiple of 8 (a 50257-token vocabulary's),
	// send cuBLAS to kernels several times slower; such operands are
	// repacked aligned, the inner dimension padded with zeros.
	pad := bf16 && !d.opts.NoGemmPadding && (lda%8 != 0 || ldb%8 != 0 || k%8 != 0)
	kp := k
	if pad {
		kp = (k + 7) &^ 7
	}
	o1, o2, cm, cn, ck := cublasGemmArgs(transA, transB, m, n, kp)
	// Stored shapes (rows × cols) of A and B, before and after padding k.
	ar, ac, br, bc := m, k, k, n
	arp, acp, brp, bcp := m, kp, kp, n
	if transA {
		ar, ac, arp, acp = k, m, kp, m
	}
	if transB {
		br, bc, brp, bcp = n, k, n, kp
	}
	d.async(op, func(w *worker) error {
		al, be := alpha, beta
		ta, tb := int32(cudaR32F), int32(cudaR32F)
		la, lb := lda, ldb
		if bf16 {
			var err error
			if pad {
				if pa, la, err = w.toBF16Padded("bf16_a", pa, ar, ac, lda, arp, acp); err != nil {
					return err
				}
				if pb, lb, err = w.toBF16Padded("bf16_b", pb, br, bc, ldb, brp, bcp); err != nil {
					return err
				}
			} else {
				// Operands are rounded over their whole stored span (rows ×
				// leading dimension), so the leading dimensions stay as given.
				if pa, err = w.toBF16("bf16_a", pa, na); err != nil {
					return err
				}
				if pb, err = w.toBF16("bf16_b", pb, nb); err != nil {
					return err
				}
			}
			ta, tb = cudaR16BF, cudaR16BF
		}
		return checkCuBLAS(op, "cublasGemmEx", cublasGemmEx(w.blas, o1, o2, int32(cm), int32(cn), int32(ck),
			&al, pb, tb, int32(lb), pa, ta, int32(la), &be, pc, cudaR32F, int32(ldc), w.compute, cublasGemmDefault))
	})
}

// toBF16Padded rounds the rows × cols matrix at src (leading dimension ld)
// into the scratch buffer name as a rowsOut × colsOut matrix, zero beyond
// src, with its leading dimension colsOut rounded up to a multiple of 8;
// it returns the buffer and that leading dimension.
func (w *worker) toBF16Padded(name string, src uintptr, rows, cols, ld, rowsOut, colsOut int) (uintptr, int, error) {
	ldp := max((colsOut+7)&^7, 8)
	if rowsOut == 0 || colsOut == 0 {
		return src, ld, nil
	}
	dst, err := w.scratchBuf(name, uintptr(rowsOut*ldp)*2)
	if err != nil {
		return 0, 0, err
	}
	var a argPack
	a.ptr(dst).ptr(src).i64(rows).i32(cols).i64(ld).i64(rowsOut).i32(colsOut).i64(ldp)
	return dst, ldp, w.launch("f32_to_bf16_2d", grid1D(colsOut, blockThreads, 64), uint32(min(rowsOut, 65535)), blockThreads, &a)
}

// toBF16 rounds n float32s at src into the scratch buffer name and returns
// it. The stream orders the conversion after any GEMM still reading the
// buffer.
func (w *worker) toBF16(name string, src uintptr, n int) (uintptr, error) {
	if n == 0 {
		return src, nil
	}
	dst, err := w.scratchBuf(name, uintptr(n)*2)
	if err != nil {
		return 0, err
	}
	var a argPack
	a.ptr(dst).ptr(src).i64(n)
	return dst, w.launch("f32_to_bf16", grid1D(n, blockThreads, maxGridBlocks), 1, blockThreads, &a)
}

// Copy implements tensor.Device.
func (d *Device) Copy(dst, src []float32) {
	sameLen("Copy", "dst, src", len(dst), len(src))
	pd, ps := d.buf("Copy", "dst", dst, len(dst)), d.buf("Copy", "src", src, len(src))
	if len(dst) == 0 {
		return
	}
	d.async("Copy", func(w *worker) error {
		return checkCU("Copy", "cuMemcpyDtoDAsync", cuMemcpyDtoDAsync(pd, ps, uintptr(len(dst))*4, w.stream))
	})
}

// Zero implements tensor.Device.
func (d *Device) Zero(x []float32) {
	p := d.buf("Zero", "x", x, len(x))
	if len(x) == 0 {
		return
	}
	d.async("Zero", func(w *worker) error {
		return checkCU("Zero", "cuMemsetD32Async", cuMemsetD32Async(p, 0, uintptr(len(x)), w.stream))
	})
}

// Scale implements tensor.Device.
func (d *Device) Scale(alpha float32, x []float32) {
	p := d.buf("Scale", "x", x, len(x))
	n := len(x)
	var a argPack
	a.ptr(p).f32(alpha).i64(n)
	d.async("Scale", func(w *worker) error {
		return w.launch("scale_f32", grid1D(n, blockThreads, maxGridBlocks), 1, blockThreads, &a)
	})
}

// SumSquares implements tensor.Device: a fixed grid of partial sums in
// float64, added in block order, so the result depends only on x.
func (d *Device) SumSquares(x []float32) float64 {
	p := d.buf("SumSquares", "x", x, len(x))
	n := len(x)
	if n == 0 {
		return 0
	}
	var out float64
	d.call("SumSquares", func(w *worker) error {
		part, err := w.scratchBuf("sumsq", (sumsqBlocks+1)*8)
		if err != nil {
			return err
		}
		var a argPack
		a.ptr(p).i64(n).ptr(part)
		if err := w.launch("sumsq_partial", sumsqBlocks, 1, blockThreads, &a); err != nil {
			return err
		}
		a.reset()
		a.ptr(part).i32(sumsqBlocks).ptr(part + sumsqBlocks*8)
		if err := w.launch("sumsq_final", 1, 1, 32, &a); err != nil {
			return err
		}
		if err := checkCU("SumSquares", "cuMemcpyDtoHAsync", cuMemcpyDtoHAsync(uintptr(w.hostOut), part+sumsqBlocks*8, 8, w.stream)); err != nil {
			return err
		}
		if err := checkCU("SumSquares", "cuStreamSynchronize", cuStreamSynchronize(w.stream)); err != nil {
			return err
		}
		out = *(*float64)(w.hostOut)
		return nil
	})
	return out
}

// GatherColumns implements tensor.Device.
func (d *Device) GatherColumns(dst, src []float32, rows, srcCols int, cols []int32) {
	const op = "GatherColumns"
	r := len(cols)
	i32(op, "rows", rows)
	i32(op, "srcCols", srcCols)
	ps := d.buf(op, "src", src, rows*srcCols)
	pd := d.buf(op, "dst", dst, rows*r)
	for j, c := range cols {
		if c < 0 || int(c) >= srcCols {
			panic(fmt.Sprintf("cuda.%s: cols[%d] = %d is outside [0, %d)", op, j, c, srcCols))
		}
	}
	if rows == 0 || r == 0 {
		return
	}
	idx := slices.Clone(cols)
	d.async(op, func(w *worker) error {
		pc, err := w.stage(idx)
		if err != nil {
			return err
		}
		var a argPack
		a.ptr(pd).ptr(ps).i32(rows).i32(srcCols).ptr(pc).i32(r)
		return w.launch("gather_columns", grid1D(r, blockThreads, 64), uint32(rows), blockThreads, &a)
	})
}

// EmbeddingForward implements tensor.Device.
func (d *Device) EmbeddingForward(out, w []float32, lo, hi, dim int, tokens []int32) {
	const op = "EmbeddingForward"
	if lo < 0 || hi < lo {
		panic(fmt.Sprintf("cuda.%s: row shard [%d, %d) is not a range", op, lo, hi))
	}
	i32(op, "hi", hi)
	i32(op, "d", dim)
	po := d.buf(op, "out", out, len(tokens)*dim)
	pw := d.buf(op, "w", w, (hi-lo)*dim)
	if len(tokens) == 0 || dim == 0 {
		return
	}
	toks := slices.Clone(tokens)
	d.async(op, func(wk *worker) error {
		pt, err := wk.stage(toks)
		if err != nil {
			return err
		}
		var a argPack
		a.ptr(po).ptr(pw).i32(lo).i32(hi).i32(dim).ptr(pt)
		return wk.launch("embedding_fwd", uint32(len(toks)), 1, blockThreads, &a)
	})
}

// EmbeddingBackward implements tensor.Device. The host groups the tokens by
// row (embedPlan), so each row's sum runs in token order with no atomics.
func (d *Device) EmbeddingBackward(dw, dout []float32, lo, hi, dim int, tokens []int32) {
	const op = "EmbeddingBackward"
	if lo < 0 || hi < lo {
		panic(fmt.Sprintf("cuda.%s: row shard [%d, %d) is not a range", op, lo, hi))
	}
	i32(op, "hi", hi)
	i32(op, "d", dim)
	pdo := d.buf(op, "dout", dout, len(tokens)*dim)
	pdw := d.buf(op, "dw", dw, (hi-lo)*dim)
	plan := newEmbedPlan(tokens, lo, hi)
	if len(plan.rows) == 0 || dim == 0 {
		return
	}
	d.async(op, func(w *worker) error {
		pr, err := w.stage(plan.rows)
		if err != nil {
			return err
		}
		ps, err := w.stage(plan.start)
		if err != nil {
			return err
		}
		pp, err := w.stage(plan.pos)
		if err != nil {
			return err
		}
		var a argPack
		a.ptr(pdw).ptr(pdo).i32(dim).ptr(pr).ptr(ps).ptr(pp)
		return w.launch("embedding_bwd", uint32(len(plan.rows)), 1, blockThreads, &a)
	})
}

// RMSNormForward implements tensor.Device.
func (d *Device) RMSNormForward(y, rstd, x, w []float32, n, dim int, eps float64) {
	const op = "RMSNormForward"
	i32(op, "n", n)
	i32(op, "d", dim)
	px, py := d.buf(op, "x", x, n*dim), d.buf(op, "y", y, n*dim)
	pr, pw := d.buf(op, "rstd", rstd, n), d.buf(op, "w", w, dim)
	if n == 0 || dim == 0 {
		return
	}
	var a argPack
	a.ptr(py).ptr(pr).ptr(px).ptr(pw).i32(n).i32(dim).f64(eps)
	d.async(op, func(wk *worker) error { return wk.launch("rmsnorm_fwd", uint32(n), 1, blockThreads, &a) })
}

// RMSNormBackward implements tensor.Device: dx per row, then dw as fixed
// chunks of rows summed in order (deterministic, no atomics).
func (d *Device) RMSNormBackward(dx, dw, dy, x, w, rstd []float32, n, dim int) {
	const op = "RMSNormBackward"
	i32(op, "n", n)
	i32(op, "d", dim)
	pdx, pdy, px := d.buf(op, "dx", dx, n*dim), d.buf(op, "dy", dy, n*dim), d.buf(op, "x", x, n*dim)
	pdw, pw, pr := d.buf(op, "dw", dw, dim), d.buf(op, "w", w, dim), d.buf(op, "rstd", rstd, n)
	if n == 0 || dim == 0 {
		return
	}
	chunks := (n + rmsChunkRows - 1) / rmsChunkRows
	d.async(op, func(wk *worker) error {
		var a argPack
		a.ptr(pdx).ptr(pdy).ptr(px).ptr(pw).ptr(pr).i32(n).i32(dim)
		if err := wk.launch("rmsnorm_bwd_dx", uint32(n), 1, blockThreads, &a); err != nil {
			return err
		}
		part, err := wk.scratchBuf("rmsnorm_dw", uintptr(chunks*dim)*4)
		if err != nil {
			return err
		}
		gx := uint32((dim + blockThreads - 1) / blockThreads)
		a.reset()
		a.ptr(part).ptr(pdy).ptr(px).ptr(pr).i32(n).i32(dim).i32(rmsChunkRows)
		if err := wk.launch("rmsnorm_bwd_dw_partial", gx, uint32(chunks), blockThreads, &a); err != nil {
			return err
		}
		a.reset()
		a.ptr(pdw).ptr(part).i32(dim).i32(chunks)
		return wk.launch("rmsnorm_bwd_dw_final", gx, 1, blockThreads, &a)
	})
}

// RoPEForward implements tensor.Device.
func (d *Device) RoPEForward(x, cos, sin []float32, n, t, heads, hd int) {
	d.rope("RoPEForward", x, cos, sin, n, t, heads, hd, 0)
}

// RoPEBackward implements tensor.Device.
func (d *Device) RoPEBackward(dx, cos, sin []float32, n, t, heads, hd int) {
	d.rope("RoPEBackward", dx, cos, sin, n, t, heads, hd, 1)
}

func (d *Device) rope(op string, x, cos, sin []float32, n, t, heads, hd, inverse int) {
	for _, v := range []struct {
		name string
		v    int
	}{{"n", n}, {"t", t}, {"heads", heads}, {"hd", hd}} {
		i32(op, v.name, v.v)
	}
	if hd%2 != 0 {
		panic(fmt.Sprintf("cuda.%s: head width %d is odd; RoPE pairs elements i and i+hd/2", op, hd))
	}
	if n > 0 && t == 0 {
		panic(fmt.Sprintf("cuda.%s: t = 0 with %d rows", op, n))
	}
	half := hd / 2
	px := d.buf(op, "x", x, n*heads*hd)
	pc := d.buf(op, "cos", cos, min(n, t)*half)
	ps := d.buf(op, "sin", sin, min(n, t)*half)
	total := n * heads * half
	if total == 0 {
		return
	}
	var a argPack
	a.ptr(px).ptr(pc).ptr(ps).i32(n).i32(t).i32(heads).i32(hd).i32(inverse)
	d.async(op, func(w *worker) error {
		return w.launch("rope", grid1D(total, blockThreads, maxGridBlocks), 1, blockThreads, &a)
	})
}

// SwiGLUForward implements tensor.Device.
func (d *Device) SwiGLUForward(h, g, u []float32) {
	const op = "SwiGLUForward"
	n := len(h)
	sameLen(op, "h, g, u", n, len(g), len(u))
	ph, pg, pu := d.buf(op, "h", h, n), d.buf(op, "g", g, n), d.buf(op, "u", u, n)
	var a argPack
	a.ptr(ph).ptr(pg).ptr(pu).i64(n)
	d.async(op, func(w *worker) error {
		return w.launch("swiglu_fwd", grid1D(n, blockThreads, maxGridBlocks), 1, blockThreads, &a)
	})
}

// SwiGLUBackward implements tensor.Device.
func (d *Device) SwiGLUBackward(dg, du, dh, g, u []float32) {
	const op = "SwiGLUBackward"
	n := len(dh)
	sameLen(op, "dh, dg, du, g, u", n, len(dg), len(du), len(g), len(u))
	pdg, pdu, pdh := d.buf(op, "dg", dg, n), d.buf(op, "du", du, n), d.buf(op, "dh", dh, n)
	pg, pu := d.buf(op, "g", g, n), d.buf(op, "u", u, n)
	var a argPack
	a.ptr(pdg).ptr(pdu).ptr(pdh).ptr(pg).ptr(pu).i64(n)
	d.async(op, func(w *worker) error {
		return w.launch("swiglu_bwd", grid1D(n, blockThreads, maxGridBlocks), 1, blockThreads, &a)
	})
}

func attnCheck(op string, sh tensor.AttnShape) {
	if sh.B < 0 || sh.T < 0 || sh.H <= 0 || sh.KV <= 0 || sh.HD <= 0 || sh.H%sh.KV != 0 {
		panic(fmt.Sprintf("cuda.%s: shape %+v: need B, T >= 0, H, KV, HD > 0 and H a multiple of KV", op, sh))
	}
	if sh.HD > attnMaxHD {
		panic(fmt.Sprintf("cuda.%s: head width %d exceeds the %d the attention kernels hold per warp", op, sh.HD, attnMaxHD))
	}
	i32(op, "B·T·H", sh.B*sh.T*sh.H)
}

func attnScale(hd int) float32 { return float32(1 / math.Sqrt(float64(hd))) }

// tiled reports whether attention of head width hd runs the tiled kernels.
func (d *Device) tiled(hd int) bool {
	return hd <= attnTiledHD && attnTiledSmem(hd, 2) <= d.attnSmemLimit
}

// tiledName picks the instantiation of a tiled kernel for head width hd:
// two output elements per lane up to 64, four up to 128.
func tiledName(kernel string, hd int) string {
	if hd <= 64 {
		return kernel + "2"
	}
	return kernel + "4"
}

// tiledGrid is the number of tiled-attention blocks along T.
func tiledGrid(t int) uint32 { return uint32((t + attnTileRows - 1) / attnTileRows) }

// attnTiledSmem is the dynamic shared memory, in bytes, of the tiled
// attention kernels for head width hd (kernel 0 forward, 1 dQ, 2 dK/dV):
// the block's 32 rows (one array forward, two backward) at qp = hd rounded up
// to 4 floats each, two 32-row tiles at qp+1 floats (K and V, or Q and dO;
// forward: the block rows plus the K and V tiles), and for dK/dV the 32
// log-sum-exps and row dots. kernels.cu lays them out the same way.
func attnTiledSmem(hd, kernel int) uint32 {
	const tile, rows = 32, attnTileRows
	qp := (hd + 3) &^ 3
	kp := qp + 1
	floats := 2 * tile * kp
	switch kernel {
	case 0:
		floats += rows * qp
	case 1:
		floats += 2 * rows * qp
	default:
		floats += 2*rows*qp + 2*tile
	}
	return uint32(4 * floats)
}

// warpGrid is the number of attnBlock-thread blocks that give rows warps.
func warpGrid(rows int) uint32 { return uint32((rows*32 + attnBlock - 1) / attnBlock) }

// AttentionForward implements tensor.Device.
func (d *Device) AttentionForward(o, lse, q, k, v []float32, sh tensor.AttnShape) {
	const op = "AttentionForward"
	attnCheck(op, sh)
	n := sh.B * sh.T
	po, pq := d.buf(op, "o", o, n*sh.H*sh.HD), d.buf(op, "q", q, n*sh.H*sh.HD)
	pk, pv := d.buf(op, "k", k, n*sh.KV*sh.HD), d.buf(op, "v", v, n*sh.KV*sh.HD)
	pl := d.buf(op, "lse", lse, sh.B*sh.H*sh.T)
	rows := sh.B * sh.H * sh.T
	if rows == 0 {
		return
	}
	if d.useTCAttention(sh) {
		d.async(op, func(w *worker) error { return w.attnForwardTC(po, pl, pq, pk, pv, sh) })
		return
	}
	var a argPack
	a.ptr(po).ptr(pl).ptr(pq).ptr(pk).ptr(pv).i32(sh.B).i32(sh.T).i32(sh.H).i32(sh.KV).i32(sh.HD).f32(attnScale(sh.HD))
	if d.tiled(sh.HD) {
		gx, gy := tiledGrid(sh.T), uint32(sh.B*sh.H)
		d.async(op, func(w *worker) error {
			return w.launchShared(tiledName("attn_fwd_tiled", sh.HD), gx, gy, attnBlock, attnTiledSmem(sh.HD, 0), &a)
		})
		return
	}
	d.async(op, func(w *worker) error { return w.launch("attn_fwd", warpGrid(rows), 1, attnBlock, &a) })
}

// AttentionBackward implements tensor.Device: Dᵢ = rowsum(dO∘O), then dQ by
// query rows and dK, dV by key rows, each recomputing the probabilities
// from q, k and lse.
func (d *Device) AttentionBackward(dq, dk, dv, dout, q, k, v, o, lse []float32, sh tensor.AttnShape) {
	const op = "AttentionBackward"
	attnCheck(op, sh)
	n := sh.B * sh.T
	qn, kn := n*sh.H*sh.HD, n*sh.KV*sh.HD
	pdq, pdo, pq, po := d.buf(op, "dq", dq, qn), d.buf(op, "dout", dout, qn), d.buf(op, "q", q, qn), d.buf(op, "o", o, qn)
	pdk, pdv, pk, pv := d.buf(op, "dk", dk, kn), d.buf(op, "dv", dv, kn), d.buf(op, "k", k, kn), d.buf(op, "v", v, kn)
	pl := d.buf(op, "lse", lse, sh.B*sh.H*sh.T)
	rows := sh.B * sh.H * sh.T
	if rows == 0 {
		return
	}
	if d.useTCAttention(sh) {
		d.async(op, func(w *worker) error { return w.attnBackwardTC(pdq, pdk, pdv, pdo, pq, pk, pv, po, pl, sh) })
		return
	}
	scale := attnScale(sh.HD)
	d.async(op, func(w *worker) error {
		pD, err := w.scratchBuf("attn_D", uintptr(rows)*4)
		if err != nil {
			return err
		}
		var a argPack
		a.ptr(pD).ptr(pdo).ptr(po).i32(sh.B).i32(sh.T).i32(sh.H).i32(sh.HD)
		if err := w.launch("attn_bwd_dot", warpGrid(rows), 1, attnBlock, &a); err != nil {
			return err
		}
		a.reset()
		a.ptr(pdq).ptr(pdo).ptr(pq).ptr(pk).ptr(pv).ptr(pl).ptr(pD).i32(sh.B).i32(sh.T).i32(sh.H).i32(sh.KV).i32(sh.HD).f32(scale)
		if d.tiled(sh.HD) {
			err = w.launchShared(tiledName("attn_bwd_dq_tiled", sh.HD), tiledGrid(sh.T), uint32(sh.B*sh.H), attnBlock, attnTiledSmem(sh.HD, 1), &a)
		} else {
			err = w.launch("attn_bwd_dq", warpGrid(rows), 1, attnBlock, &a)
		}
		if err != nil {
			return err
		}
		a.reset()
		a.ptr(pdk).ptr(pdv).ptr(pdo).ptr(pq).ptr(pk).ptr(pv).ptr(pl).ptr(pD).i32(sh.B).i32(sh.T).i32(sh.H).i32(sh.KV).i32(sh.HD).f32(scale)
		if d.tiled(sh.HD) {
			return w.launchShared(tiledName("attn_bwd_dkv_tiled", sh.HD), tiledGrid(sh.T), uint32(sh.B*sh.KV), attnBlock, attnTiledSmem(sh.HD, 2), &a)
		}
		return w.launch("attn_bwd_dkv", warpGrid(sh.B*sh.KV*sh.T), 1, attnBlock, &a)
	})
}

// CrossEntropyStats implements tensor.Device.
func (d *Device) CrossEntropyStats(mx, sumExp, targetLogit, logits []float32, rows, lo int, targets []int32) {
	const op = "CrossEntropyStats"
	n := len(targets)
	i32(op, "rows", rows)
	i32(op, "lo", lo)
	pz := d.buf(op, "logits", logits, n*rows)
	pm, ps, pt := d.buf(op, "max", mx, n), d.buf(op, "sumExp", sumExp, n), d.buf(op, "targetLogit", targetLogit, n)
	if n == 0 {
		return
	}
	if rows == 0 {
		panic(fmt.Sprintf("cuda.%s: %d tokens over a shard of 0 rows", op, n))
	}
	tg := slices.Clone(targets)
	d.async(op, func(w *worker) error {
		ptg, err := w.stage(tg)
		if err != nil {
			return err
		}
		var a argPack
		a.ptr(pm).ptr(ps).ptr(pt).ptr(pz).i32(rows).i32(lo).ptr(ptg)
		return w.launch("ce_stats", uint32(n), 1, 512, &a)
	})
}

// CrossEntropyBackward implements tensor.Device.
func (d *Device) CrossEntropyBackward(logits, gMax, gSum []float32, rows, lo int, targets []int32, scale float32) {
	const op = "CrossEntropyBackward"
	n := len(targets)
	i32(op, "rows", rows)
	i32(op, "lo", lo)
	pz := d.buf(op, "logits", logits, n*rows)
	pm, ps := d.buf(op, "gMax", gMax, n), d.buf(op, "gSum", gSum, n)
	if n == 0 || rows == 0 {
		return
	}
	tg := slices.Clone(targets)
	d.async(op, func(w *worker) error {
		ptg, err := w.stage(tg)
		if err != nil {
			return err
		}
		var a argPack
		a.ptr(pz).ptr(pm).ptr(ps).i32(rows).i32(lo).ptr(ptg).f32(scale)
		return w.launch("ce_bwd", grid1D(rows, blockThreads, ceColBlocks), uint32(n), blockThreads, &a)
	})
}

// AdamW implements tensor.Device.
func (d *Device) AdamW(w, g, m, v []float32, u tensor.AdamWUpdate) {
	const op = "AdamW"
	n := len(w)
	sameLen(op, "w, g, m, v", n, len(g), len(m), len(v))
	var kernel string
	switch u.Form {
	case tensor.AdamWTorch:
		kernel = "adamw_torch"
	case tensor.AdamWHF:
		kernel = "adamw_hf"
	default:
		panic(fmt.Sprintf("cuda.AdamW: form %d unknown: allowed are AdamWTorch (%d) and AdamWHF (%d)", u.Form, tensor.AdamWTorch, tensor.AdamWHF))
	}
	pw, pg, pm, pv := d.buf(op, "w", w, n), d.buf(op, "g", g, n), d.buf(op, "m", m, n), d.buf(op, "v", v, n)
	var a argPack
	a.ptr(pw).ptr(pg).ptr(pm).ptr(pv).i64(n).f32(u.Beta1).f32(u.Beta2).f32(u.Eps).f32(u.StepSize).f32(u.BC2Sqrt).f32(u.Decay)
	d.async(op, func(wk *worker) error {
		return wk.launch(kernel, grid1D(n, blockThreads, maxGridBlocks), 1, blockThreads, &a)
	})
}

// AdamMini applies one Adam-mini update (pkg/optim.AdamMini) to w in place:
// the elements fall into len(w)/block consecutive blocks of block elements,
// each sharing the second moment v[b]; m is the full first moment. u gives
// the constants of torch AdamW's form (Form must be AdamWTorch; BC2Sqrt,
// StepSize, Eps, Beta1, Beta2 and Decay as there). One thread block per
// Adam-mini block sums g² in double in a fixed tree, so the result is
// repeatable and matches the CPU's float64 sum to the last bit or so.
func (d *Device) AdamMini(w, g, m, v []float32, block int, u tensor.AdamWUpdate) {
	const op = "AdamMini"
	n := len(w)
	sameLen(op, "w, g, m", n, len(g), len(m))
	if block <= 0 || n%block != 0 {
		panic(fmt.Sprintf("cuda.AdamMini: block %d must be > 0 and divide len(w) = %d", block, n))
	}
	if len(v) != n/block {
		panic(fmt.Sprintf("cuda.AdamMini: len(v) = %d, want len(w)/block = %d", len(v), n/block))
	}
	if u.Form != tensor.AdamWTorch {
		panic(fmt.Sprintf("cuda.AdamMini: form %d unknown: only AdamWTorch (%d) is Adam-mini's", u.Form, tensor.AdamWTorch))
	}
	pw, pg, pm, pv := d.buf(op, "w", w, n), d.buf(op, "g", g, n), d.buf(op, "m", m, n), d.buf(op, "v", v, n/block)
	if n == 0 {
		return
	}
	nb := n / block
	var a argPack
	if block <= 2*adamMiniChunk {
		a.ptr(pw).ptr(pg).ptr(pm).ptr(pv).i64(block).i64(nb).f32(u.Beta1).f32(u.Beta2).f32(u.Eps).f32(u.StepSize).f32(u.BC2Sqrt).f32(u.Decay)
		d.async(op, func(wk *worker) error {
			return wk.launch("adam_mini", uint32(min(nb, maxGridBlocks)), 1, blockThreads, &a)
		})
		return
	}
	// Large blocks: Σg² by chunks, v, then the update by chunks.
	nc := (block + adamMiniChunk - 1) / adamMiniChunk
	total := nb * nc
	grid := uint32(min(total, maxGridBlocks))
	d.async(op, func(wk *worker) error {
		part, err := wk.scratchBuf("adam_mini_part", uintptr(total)*8)
		if err != nil {
			return err
		}
		a.reset()
		a.ptr(part).ptr(pg).i64(block).i32(nc).i32(adamMiniChunk).i64(total)
		if err := wk.launch("adam_mini_partial", grid, 1, blockThreads, &a); err != nil {
			return err
		}
		a.reset()
		a.ptr(pv).ptr(part).i64(nb).i32(nc).i64(block).f32(u.Beta2)
		if err := wk.launch("adam_mini_v", grid1D(nb, blockThreads, maxGridBlocks), 1, blockThreads, &a); err != nil {
			return err
		}
		a.reset()
		a.ptr(pw).ptr(pg).ptr(pm).ptr(pv).i64(block).i32(nc).i32(adamMiniChunk).i64(total).
			f32(u.Beta1).f32(u.Eps).f32(u.StepSize).f32(u.BC2Sqrt).f32(u.Decay)
		return wk.launch("adam_mini_apply", grid, 1, blockThreads, &a)
	})
}

// adamMiniChunk is the elements per partial sum and per update block of
// Adam-mini blocks larger than twice it.
const adamMiniChunk = 4096
