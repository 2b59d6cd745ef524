package optim

import (
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// TestDemoTrainsTinyModel trains the tiny preset in projTrainTiny's harness
// (300 steps on windows of a repeated text, constant lr) with DeMo at its
// reference settings (64×64 chunks, k = 32, β = 0.999) on one rank, every
// parameter stepped by DeMo.
//
// Thresholds, from this harness: AdamW at lr 0.01 ends near 0.75 nats and
// the unigram entropy of the text is about 2.9, so ending below 0.9 needs
// real learning. DeMo's update is a sign, every weight moving by exactly lr
// per step, so it wants a smaller lr than Adam here: at 3e-3 it ends near
// 0.36 (bf16 values) and 0.38 (signs); at 1e-3 it is still near 1.2-1.3
// after 300 steps and at 1e-2 it ends near 0.53-0.59.
func TestDemoTrainsTinyModel(t *testing.T) {
	if raceEnabled {
		t.Skip("training run: covered by the plain (non-race) pass of make test")
	}
	const steps, lr = 300, 3e-3
	for _, values := range []string{"bf16", "sign"} {
		cfg := DefaultDemoConfig()
		cfg.Values = values
		loss := projTrainTiny(t, func(ps []*model.Param) (Optimizer, error) { return NewDemo(ps, cfg, nil) }, lr, steps)
		t.Logf("demo %s: loss %.4f after %d steps at lr %g", values, loss, steps, lr)
		if !(loss < 0.9) {
			t.Errorf("demo %s: loss %.4f after %d steps, want < 0.9", values, loss, steps)
		}
	}
}
