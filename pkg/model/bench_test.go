package model

import (
	"testing"
)

// benchStep times one ForwardBackward of a preset at B×T tokens.
func benchStep(b *testing.B, preset string, batch, t int, recompute bool) {
	c, err := Preset(preset)
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(c, 1, recompute)
	if err != nil {
		b.Fatal(err)
	}
	tokens, targets := make([]int32, batch*t), make([]int32, batch*t)
	for i := range tokens {
		tokens[i] = int32((i * 7919) % c.Vocab)
		targets[i] = int32((i*104729 + 1) % c.Vocab)
	}
	m.ForwardBackward(tokens, targets, batch, t, 1) // allocate buffers
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.ZeroGrad()
		m.ForwardBackward(tokens, targets, batch, t, 1)
	}
	b.ReportMetric(float64(batch*t*b.N)/b.Elapsed().Seconds(), "tokens/s")
}

func BenchmarkStepTinyB4T64(b *testing.B)      { benchStep(b, "tiny", 4, 64, false) }
func BenchmarkStepSmallB4T256(b *testing.B)    { benchStep(b, "small", 4, 256, false) }
func BenchmarkStepGPT2ShapeB4T64(b *testing.B) { benchStep(b, "gpt2-shape", 4, 64, false) }

// BenchmarkAttentionT1024 times forward+backward of one gpt2-shape layer's
// attention (12 heads of 64) on one 1024-token sequence.
func BenchmarkAttentionT1024(b *testing.B) {
	sh := attnShape{b: 1, t: 1024, h: 12, kv: 12, hd: 64}
	n, w := sh.b*sh.t, sh.h*sh.hd
	mk := func() []float32 {
		x := make([]float32, n*w)
		for i := range x {
			x[i] = float32((i*2654435761)%1000)/1000 - 0.5
		}
		return x
	}
	q, k, v, dout := mk(), mk(), mk(), mk()
	o, lse := make([]float32, n*w), make([]float32, sh.h*sh.t)
	dq, dk, dv := make([]float32, n*w), make([]float32, n*w), make([]float32, n*w)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		attentionForward(o, lse, q, k, v, sh)
		attentionBackward(dq, dk, dv, dout, q, k, v, o, lse, sh)
	}
}
