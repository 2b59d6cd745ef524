package optim

import (
	"math"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// grassTrainTiny is projTrainTiny's loop (same model, text, batches and
// loss window) with GRASS routed as NewGrassRouted does. Before every
// backward pass it checks the gradient memory contract: a projected weight
// holds its full gradient only at a selection step of a gradient-based
// method, and otherwise has G nil and only its r selected rows.
func grassTrainTiny(t *testing.T, cfg GrassConfig, lr float64, steps int) float64 {
	t.Helper()
	mc := mustPreset(t, "tiny")
	mc.SeqLen = 32
	m, err := model.New(mc, 7, false)
	if err != nil {
		t.Fatal(err)
	}
	adam := AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-6, Convention: AdamWHF}
	o, err := NewGrassRouted(m.Params(), cfg, adam)
	if err != nil {
		t.Fatal(err)
	}
	proj, _ := SplitProjected(m.Params())
	const b, tt = 4, 32
	text := []byte(projText + projText)
	tokens, targets := make([]int32, b*tt), make([]int32, b*tt)
	var tail float64
	for step := 0; step < steps; step++ {
		full := step%cfg.UpdateProjGap == 0 && cfg.Selection != GrassUniform
		for _, p := range proj {
			r := min(cfg.Rank, p.Shape[0])
			if full && (p.G == nil || p.RowSel != nil) {
				t.Fatalf("step %d: %s must form its full gradient for the selection", step, p.Name)
			}
			if !full && (p.G != nil || len(p.RowSel) != r || len(p.GSel) != r*p.Shape[1]) {
				t.Fatalf("step %d: %s has G %v and %d selected rows, want no G and %d rows", step, p.Name, p.G != nil, len(p.RowSel), r)
			}
		}
		for s := 0; s < b; s++ {
			off := ((step*b + s) * 29) % len(projText)
			for j := 0; j < tt; j++ {
				tokens[s*tt+j] = int32(text[off+j])
				targets[s*tt+j] = int32(text[off+j+1])
			}
		}
		m.ZeroGrad()
		sum, n := m.ForwardBackward(tokens, targets, b, tt, float32(1)/float32(b*tt))
		if step >= steps-10 {
			tail += sum / float64(n) / 10
		}
		if g := ClipGradNorm(m.Params(), 1); math.IsNaN(g) || g == 0 {
			t.Fatalf("step %d: gradient norm %v", step, g)
		}
		o.Step(lr)
	}
	return tail
}

// TestGrassTrainsTinyModel trains the tiny preset as
// TestProjectionTrainsTinyModel does (300 steps, lr 0.01, the rest with
// AdamW), with gradient clipping at 1 on top to exercise clipping over
// row-selected gradients. That test's controls set the threshold: AdamW on
// everything ends near 0.75 nats, AdamW with the projected weights frozen
// stalls near 1.6, so ending below 1.0 requires the row-selected updates to
// learn; the alpha-0 case repeats the frozen control in this harness
// (≈ 1.58). Top-r, norm-NR and uniform-NR end near 0.35, 0.29 and 0.32. Rank 16 is d/4 as for GaLore there; K = 20 re-selects often enough
// that most rows are updated within the run (with K = 200 only the first
// selection's rows would be for most of it).
func TestGrassTrainsTinyModel(t *testing.T) {
	if raceEnabled {
		t.Skip("training run: covered by the plain (non-race) pass of make test")
	}
	const steps = 300
	cases := []struct {
		name    string
		edit    func(*GrassConfig)
		lr      float64
		control bool // must not get below 1.4
	}{
		{"topr", func(c *GrassConfig) {}, 0.01, false},
		{"norm-NR", func(c *GrassConfig) { c.Selection = GrassNorm }, 0.01, false},
		{"uniform-NR", func(c *GrassConfig) { c.Selection = GrassUniform }, 0.01, false},
		// The same harness with the row updates scaled to nothing: the
		// frozen-projected control, here with clipping as above.
		{"alpha-0", func(c *GrassConfig) { c.Scale = 1e-12 }, 0.01, true},
	}
	for _, tc := range cases {
		cfg := DefaultGrassConfig()
		cfg.Rank, cfg.UpdateProjGap, cfg.Seed = 16, 20, 3
		tc.edit(&cfg)
		loss := grassTrainTiny(t, cfg, tc.lr, steps)
		t.Logf("grass %s: loss %.4f after %d steps at lr %g", tc.name, loss, steps, tc.lr)
		if tc.control {
			if loss < 1.4 {
				t.Errorf("grass %s: loss %.4f: the task is too easy to show the projected weights learn", tc.name, loss)
			}
			continue
		}
		if !(loss < 1.0) {
			t.Errorf("grass %s: loss %.4f after %d steps, want < 1.0", tc.name, loss, steps)
		}
	}
}
