package main

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/ternml/tern/pkg/tensor"
)

// profiled wraps a device and syncs after every call, charging the wall
// time to the call's name (GEMMs by shape), to show where a step's time
// goes. The syncs serialise host and GPU, so the total exceeds the step
// time measured without them.
type profiled struct {
	tensor.Device
	t map[string]time.Duration
	n map[string]int
}

func newProfiled(d tensor.Device) *profiled {
	return &profiled{Device: d, t: map[string]time.Duration{}, n: map[string]int{}}
}

func (p *profiled) time(name string, f func()) {
	t0 := time.Now()
	f()
	p.Device.Sync()
	p.t[name] += time.Since(t0)
	p.n[name]++
}

func (p *profiled) reset() { clear(p.t); clear(p.n) }

// report prints the calls by total time, per step.
func (p *profiled) report(w io.Writer, steps int) {
	names := make([]string, 0, len(p.t))
	var total time.Duration
	for k, v := range p.t {
		names = append(names, k)
		total += v
	}
	sort.Slice(names, func(i, j int) bool { return p.t[names[i]] > p.t[names[j]] })
	fmt.Fprintf(w, "profile: %.2f ms per step in %d kinds of call (each followed by a sync)\n", ms(total)/float64(steps), len(names))
	for _, k := range names {
		fmt.Fprintf(w, "  %8.3f ms/step  %5.1f%%  %4d calls/step  %s\n", ms(p.t[k])/float64(steps), 100*p.t[k].Seconds()/total.Seconds(), p.n[k]/steps, k)
	}
}

func (p *profiled) Gemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	name := fmt.Sprintf("Gemm %dx%dx%d tA=%v tB=%v", m, n, k, ta, tb)
	p.time(name, func() { p.Device.Gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) })
}
func (p *profiled) Copy(dst, src []float32) { p.time("Copy", func() { p.Device.Copy(dst, src) }) }
func (p *profiled) Zero(x []float32)        { p.time("Zero", func() { p.Device.Zero(x) }) }
func (p *profiled) Scale(a float32, x []float32) {
	p.time("Scale", func() { p.Device.Scale(a, x) })
}
func (p *profiled) GatherColumns(dst, src []float32, rows, srcCols int, cols []int32) {
	p.time("GatherColumns", func() { p.Device.GatherColumns(dst, src, rows, srcCols, cols) })
}
func (p *profiled) EmbeddingForward(out, w []float32, lo, hi, d int, tokens []int32) {
	p.time("EmbeddingForward", func() { p.Device.EmbeddingForward(out, w, lo, hi, d, tokens) })
}
func (p *profiled) EmbeddingBackward(dw, dout []float32, lo, hi, d int, tokens []int32) {
	p.time("EmbeddingBackward", func() { p.Device.EmbeddingBackward(dw, dout, lo, hi, d, tokens) })
}
func (p *profiled) RMSNormForward(y, rstd, x, w []float32, n, d int, eps float64) {
	p.time("RMSNormForward", func() { p.Device.RMSNormForward(y, rstd, x, w, n, d, eps) })
}
func (p *profiled) RMSNormBackward(dx, dw, dy, x, w, rstd []float32, n, d int) {
	p.time("RMSNormBackward", func() { p.Device.RMSNormBackward(dx, dw, dy, x, w, rstd, n, d) })
}
func (p *profiled) RoPEForward(x, cos, sin []float32, n, t, heads, hd int) {
	p.time("RoPEForward", func() { p.Device.RoPEForward(x, cos, sin, n, t, heads, hd) })
}
func (p *profiled) RoPEBackward(dx, cos, sin []float32, n, t, heads, hd int) {
	p.time("RoPEBackward", func() { p.Device.RoPEBackward(dx, cos, sin, n, t, heads, hd) })
}
func (p *profiled) SwiGLUForward(h, g, u []float32) {
	p.time("SwiGLUForward", func() { p.Device.SwiGLUForward(h, g, u) })
}
func (p *profiled) SwiGLUBackward(dg, du, dh, g, u []float32) {
	p.time("SwiGLUBackward", func() { p.Device.SwiGLUBackward(dg, du, dh, g, u) })
}
func (p *profiled) AttentionForward(o, lse, q, k, v []float32, sh tensor.AttnShape) {
	p.time("AttentionForward", func() { p.Device.AttentionForward(o, lse, q, k, v, sh) })
}
func (p *profiled) AttentionBackward(dq, dk, dv, dout, q, k, v, o, lse []float32, sh tensor.AttnShape) {
	p.time("AttentionBackward", func() { p.Device.AttentionBackward(dq, dk, dv, dout, q, k, v, o, lse, sh) })
}
func (p *profiled) CrossEntropyStats(mx, sumExp, tl, logits []float32, rows, lo int, targets []int32) {
	p.time("CrossEntropyStats", func() { p.Device.CrossEntropyStats(mx, sumExp, tl, logits, rows, lo, targets) })
}
func (p *profiled) CrossEntropyBackward(logits, gMax, gSum []float32, rows, lo int, targets []int32, scale float32) {
	p.time("CrossEntropyBackward", func() { p.Device.CrossEntropyBackward(logits, gMax, gSum, rows, lo, targets, scale) })
}
func (p *profiled) AdamW(w, g, m, v []float32, u tensor.AdamWUpdate) {
	p.time("AdamW", func() { p.Device.AdamW(w, g, m, v, u) })
}
