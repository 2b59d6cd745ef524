package optim

import (
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// benchAdaptive times one step over a gpt2-shape LM head, one MLP matrix and
// a norm (39.9M parameters).
func benchAdaptive(b *testing.B, build func([]*model.Param) (Optimizer, error)) {
	mk := func(name string, role model.Role, shape ...int) *model.Param {
		n := 1
		for _, d := range shape {
			n *= d
		}
		p := &model.Param{Name: name, Role: role, Shape: shape, GlobalShape: shape, W: make([]float32, n), G: make([]float32, n)}
		for j := range p.G {
			p.W[j] = float32(j%97) * 1e-3
			p.G[j] = float32(j%89-44) * 1e-4
		}
		return p
	}
	ps := []*model.Param{mk("head", model.RoleHead, 50257, 768), mk("up", model.RoleMLP, 2048, 768), mk("norm", model.RoleNorm, 768)}
	o, err := build(ps)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, p := range ps {
		n += len(p.W)
	}
	b.SetBytes(int64(4 * n)) // per parameter, so MB/s reads as Mparams/s × 4
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o.Step(1e-3)
	}
}

func BenchmarkAdaptiveStepAdamW(b *testing.B) {
	benchAdaptive(b, func(ps []*model.Param) (Optimizer, error) {
		return NewAdamW(ps, AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1})
	})
}

func BenchmarkAdaptiveStepAdafactor(b *testing.B) {
	benchAdaptive(b, func(ps []*model.Param) (Optimizer, error) { return NewAdafactor(ps, DefaultAdafactorConfig()) })
}

func BenchmarkAdaptiveStepCAME(b *testing.B) {
	benchAdaptive(b, func(ps []*model.Param) (Optimizer, error) { return NewCAME(ps, DefaultCAMEConfig()) })
}

func BenchmarkAdaptiveStepAdamMini(b *testing.B) {
	benchAdaptive(b, func(ps []*model.Param) (Optimizer, error) { return NewAdamMini(ps, DefaultAdamMiniConfig()) })
}
