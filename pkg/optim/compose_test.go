package optim

import (
	"testing"

	"github.com/ternml/tern/pkg/model"
)

func TestSplitProjectedByRole(t *testing.T) {
	m, err := model.New(mustPreset(t, "tiny"), 1, false)
	if err != nil {
		t.Fatal(err)
	}
	proj, rest := SplitProjected(m.Params())
	for _, p := range proj {
		if p.Role == model.RoleEmbedding || p.Role == model.RoleHead || p.Role == model.RoleNorm || len(p.Shape) != 2 {
			t.Errorf("%s (%s) should not be projected", p.Name, p.Role)
		}
	}
	for _, p := range rest {
		if p.Role != model.RoleEmbedding && p.Role != model.RoleHead && p.Role != model.RoleNorm {
			t.Errorf("%s (%s) should be projected", p.Name, p.Role)
		}
	}
	// tiny: 2 layers × (q, k, v, o, gate, up, down).
	if len(proj) != 14 || len(proj)+len(rest) != len(m.Params()) {
		t.Errorf("split %d + %d of %d", len(proj), len(rest), len(m.Params()))
	}
}

func mustPreset(t *testing.T, name string) model.Config {
	t.Helper()
	c, err := model.Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCompositeRejectsCollidingState(t *testing.T) {
	cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	b := testParams()
	// The same parameters in two AdamW parts: the step counters would collide,
	// so the composite must refuse.
	p1, _ := NewAdamW(b[:1], cfg)
	p2, _ := NewAdamW(b[1:], cfg)
	if _, err := NewComposite(p1, p2); err == nil {
		t.Fatal("colliding state names accepted")
	}
}
