package model

import "github.com/ternml/tern/pkg/tensor"

// Linear layer without bias, Hugging Face layout: W is [out, in].
//
//	forward:  y = x·Wᵀ                 (x [n,in], y [n,out])
//	backward: dx = dy·W,  dW += dyᵀ·x
//
// All three products are the device's Gemm.

// linearForward computes y = x·Wᵀ + beta·y.
func linearForward(dev tensor.Device, y, x, w []float32, n, in, out int, beta float32) {
	if n == 0 || out == 0 {
		return
	}
	dev.Gemm(false, true, n, out, in, 1, x, in, w, in, beta, y, out)
}

// linearBackward computes dx = dy·W + dxBeta·dx and dW += dyᵀ·x.
func linearBackward(dev tensor.Device, dx, dw, dy, x, w []float32, n, in, out int, dxBeta float32) {
	if n == 0 || out == 0 {
		return
	}
	dev.Gemm(false, false, n, in, out, 1, dy, out, w, in, dxBeta, dx, in)
	dev.Gemm(true, false, out, in, n, 1, dy, out, x, in, 1, dw, in)
}

// linearBackwardParam is linearBackward for the weight p. With p.RowSel nil
// it is exactly linearBackward into p.G. With p.RowSel set (structured sparse
// gradients, GRASS: Muhamed et al. 2024, §3) it accumulates only the selected
// rows of dW into p.GSel:
//
//	GSel[j, :] += Σ_tokens dy[:, RowSel[j]]·x = (dyᵀ·x)[RowSel[j], :]
//
// and leaves p.G alone (it may be nil), so no out×in gradient is formed: the
// cost is n·r·in multiply-adds instead of n·out·in, and the memory an r×in
// buffer plus an n×r gather scratch (*sel, shared by a stage's layers and
// grown on first use). The selected columns of dy are gathered into the
// scratch (the device's GatherColumns) so one Gemm computes all r rows. On
// the CPU the Gemm's depth blocking depends only on n (tensor.Gemm's kc) and
// border tiles use the same kernel, so with the "asm" and "go" backends every
// selected row is bitwise equal to that row of the full dyᵀ·x. dx needs all
// of dy and is computed as usual.
func linearBackwardParam(dev tensor.Device, dx []float32, p *Param, dy, x []float32, n, in, out int, dxBeta float32, sel *[]float32) {
	if p.RowSel == nil {
		linearBackward(dev, dx, p.G, dy, x, p.W, n, in, out, dxBeta)
		return
	}
	if n == 0 || out == 0 {
		return
	}
	dev.Gemm(false, false, n, in, out, 1, dy, out, p.W, in, dxBeta, dx, in)
	r := len(p.RowSel)
	if r == 0 {
		return
	}
	if cap(*sel) < n*r {
		*sel = dev.Alloc(n * r)
	}
	g := (*sel)[:n*r]
	dev.GatherColumns(g, dy, n, out, p.RowSel)
	dev.Gemm(true, false, r, in, n, 1, g, r, x, in, 1, p.GSel, in)
}
