package optim

import (
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// projBenchLayer is one gpt2-shape block's projected weights (d = 768,
// FFN = 2048) with random gradients.
func projBenchLayer(b *testing.B) []*model.Param {
	b.Helper()
	c, err := model.Preset("gpt2-shape")
	if err != nil {
		b.Fatal(err)
	}
	shapes := projShapes(c)
	ps := projParams(1, shapes...)
	projGrads(ps, 0, 0.01)
	return ps
}

// BenchmarkGaLoreRefreshGPT2Layer times the SVD refresh of one gpt2-shape
// block's seven projections (every T steps).
func BenchmarkGaLoreRefreshGPT2Layer(b *testing.B) {
	ps := projBenchLayer(b)
	c := DefaultGaLoreConfig()
	c.Rank = 256
	o, err := NewGaLore(ps, c)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		o.refresh()
	}
}

// BenchmarkGaLoreStepGPT2Layer times a step between refreshes.
func BenchmarkGaLoreStepGPT2Layer(b *testing.B) {
	ps := projBenchLayer(b)
	c := DefaultGaLoreConfig()
	c.Rank, c.UpdateProjGap = 256, 1<<30
	o, err := NewGaLore(ps, c)
	if err != nil {
		b.Fatal(err)
	}
	o.Step(1e-3)
	for b.Loop() {
		o.Step(1e-3)
	}
}

func benchApollo(b *testing.B, c ApolloConfig) {
	ps := projBenchLayer(b)
	o, err := NewApollo(ps, c)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		o.Step(1e-3)
	}
}

// BenchmarkApolloStepGPT2Layer times an APOLLO step (rank 256), projection
// regeneration included.
func BenchmarkApolloStepGPT2Layer(b *testing.B) {
	c := DefaultApolloConfig()
	c.Rank = 256
	benchApollo(b, c)
}

// BenchmarkApolloMiniStepGPT2Layer times an APOLLO-Mini step.
func BenchmarkApolloMiniStepGPT2Layer(b *testing.B) { benchApollo(b, DefaultApolloMiniConfig()) }

// BenchmarkAdamWStepGPT2Layer is the AdamW baseline on the same weights.
func BenchmarkAdamWStepGPT2Layer(b *testing.B) {
	ps := projBenchLayer(b)
	o, err := NewAdamW(ps, AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		o.Step(1e-3)
	}
}
