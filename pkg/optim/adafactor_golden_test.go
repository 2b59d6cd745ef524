package optim

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// goldenAdaptiveDir, when set, makes TestWriteGoldenAdaptive write the inputs
// and tern's outputs of a few short runs for scripts/crosscheck/optim_adaptive.py,
// which replays them with transformers' Adafactor and float64 PyTorch.
var goldenAdaptiveDir = flag.String("golden-adaptive-out", "", "directory to write optim_adaptive.json into")

type goldenParam struct {
	Name  string    `json:"name"`
	Role  string    `json:"role"`
	Shape []int     `json:"shape"`
	W0    []float64 `json:"w0"`
}

type goldenStep struct {
	LR    float64     `json:"lr"`
	Grads [][]float64 `json:"grads"`
	W     [][]float64 `json:"w"` // tern's weights after the step
}

// exact64 widens float32 values so JSON carries them exactly (a float32
// printed in its own shortest form would be read back by Python as a
// different float64).
func exact64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

type goldenCase struct {
	Name      string        `json:"name"`
	Optimizer string        `json:"optimizer"`
	Config    any           `json:"config"`
	Params    []goldenParam `json:"params"`
	Steps     []goldenStep  `json:"steps"`
}

func TestWriteGoldenAdaptive(t *testing.T) {
	if *goldenAdaptiveDir == "" {
		t.Skip("set -golden-adaptive-out DIR to write the cross-check inputs")
	}
	withMomentum := DefaultAdafactorConfig()
	withMomentum.Beta1, withMomentum.WeightDecay, withMomentum.ClipThreshold = 0.9, 0.1, 0.7
	relative := DefaultAdafactorConfig()
	relative.RelativeStep, relative.ScaleParameter = true, true
	cameLlama := DefaultCAMEConfig()
	cameLlama.Beta2, cameLlama.Beta3, cameLlama.WeightDecay = 0.95, 0.995, 0.1
	adam := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-6, WeightDecay: 0.1}
	adamHF := adam
	adamHF.Convention = AdamWHF
	type build func([]*model.Param) (Optimizer, error)
	cases := []struct {
		name, opt string
		cfg       any
		lr        float64
		mini      bool
		build     build
	}{
		{"adafactor-baseline", "adafactor", DefaultAdafactorConfig(), 1e-2, false,
			func(ps []*model.Param) (Optimizer, error) { return NewAdafactor(ps, DefaultAdafactorConfig()) }},
		{"adafactor-momentum-decay-clip", "adafactor", withMomentum, 1e-2, false,
			func(ps []*model.Param) (Optimizer, error) { return NewAdafactor(ps, withMomentum) }},
		{"adafactor-relative-step", "adafactor", relative, 0, false,
			func(ps []*model.Param) (Optimizer, error) { return NewAdafactor(ps, relative) }},
		{"came-defaults", "came", DefaultCAMEConfig(), 1e-3, false,
			func(ps []*model.Param) (Optimizer, error) { return NewCAME(ps, DefaultCAMEConfig()) }},
		{"came-llama1b-decay", "came", cameLlama, 1e-3, false,
			func(ps []*model.Param) (Optimizer, error) { return NewCAME(ps, cameLlama) }},
		{"adam-mini", "adam-mini", miniConfig(), 1e-2, true,
			func(ps []*model.Param) (Optimizer, error) { return NewAdamMini(ps, miniConfig()) }},
		{"adamw-pytorch", "adamw", adam, 1e-2, false,
			func(ps []*model.Param) (Optimizer, error) { return NewAdamW(ps, adam) }},
		{"adamw-hf", "adamw", adamHF, 1e-2, false,
			func(ps []*model.Param) (Optimizer, error) { return NewAdamW(ps, adamHF) }},
	}
	var out struct {
		Cases []goldenCase `json:"cases"`
	}
	for _, c := range cases {
		ps := adaptiveParams(false)
		if c.mini {
			ps, _ = miniParams()
		}
		gc := goldenCase{Name: c.name, Optimizer: c.opt, Config: c.cfg}
		for _, p := range ps {
			gc.Params = append(gc.Params, goldenParam{Name: p.Name, Role: p.Role.String(), Shape: p.Shape, W0: exact64(p.W)})
		}
		o, err := c.build(ps)
		if err != nil {
			t.Fatal(err)
		}
		for s := 0; s < 5; s++ {
			adaSetGrads(ps, s)
			lr := c.lr * (1 + 0.1*float64(s%3))
			st := goldenStep{LR: lr}
			for _, p := range ps {
				st.Grads = append(st.Grads, exact64(p.G))
			}
			o.Step(lr)
			for _, p := range ps {
				st.W = append(st.W, exact64(p.W))
			}
			gc.Steps = append(gc.Steps, st)
		}
		out.Cases = append(out.Cases, gc)
	}
	b, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(*goldenAdaptiveDir, "optim_adaptive.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d cases)", path, len(out.Cases))
}
