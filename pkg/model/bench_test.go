package model

import (
	"testing"

	"github.com/ternml/tern/pkg/tensor"
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
	sh := tensor.AttnShape{B: 1, T: 1024, H: 12, KV: 12, HD: 64}
	n, w := sh.B*sh.T, sh.H*sh.HD
	mk := func() []float32 {
		x := make([]float32, n*w)
		for i := range x {
			x[i] = float32((i*2654435761)%1000)/1000 - 0.5
		}
		return x
	}
	q, k, v, dout := mk(), mk(), mk(), mk()
	o, lse := make([]float32, n*w), make([]float32, sh.H*sh.T)
	dq, dk, dv := make([]float32, n*w), make([]float32, n*w), make([]float32, n*w)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cpu.AttentionForward(o, lse, q, k, v, sh)
		cpu.AttentionBackward(dq, dk, dv, dout, q, k, v, o, lse, sh)
	}
}
