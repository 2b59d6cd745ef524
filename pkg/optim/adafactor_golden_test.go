package optim

import (
	"encoding/json"
	"flag"
	"fmt"
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

// adaptiveGoldenSpec is one run of optim_adaptive.json: five steps from the
// parameters of adaptiveParams (or miniParams) with the gradients of
// adaSetGrads and lr·(1 + 0.1·(s mod 3)) at step s.
type adaptiveGoldenSpec struct {
	name, opt string // opt: a key of adaptiveBuilders
	cfg       any
	lr        float64
	mini      bool
	// pending marks a case not yet cross-checked: the writer emits it, the
	// committed file does not hold it yet.
	pending bool
}

func (c adaptiveGoldenSpec) params() []*model.Param {
	if c.mini {
		ps, _ := miniParams()
		return ps
	}
	return adaptiveParams(false)
}

// adaptiveBuilders builds each optimizer of optim_adaptive.json from its
// configuration as stored in the file.
var adaptiveBuilders = map[string]func(ps []*model.Param, raw json.RawMessage) (Optimizer, error){
	"adafactor": func(ps []*model.Param, raw json.RawMessage) (Optimizer, error) {
		c, err := decodeConfig[AdafactorConfig](raw)
		if err != nil {
			return nil, err
		}
		return NewAdafactor(ps, c)
	},
	"came": func(ps []*model.Param, raw json.RawMessage) (Optimizer, error) {
		c, err := decodeConfig[CAMEConfig](raw)
		if err != nil {
			return nil, err
		}
		return NewCAME(ps, c)
	},
	"adam-mini": func(ps []*model.Param, raw json.RawMessage) (Optimizer, error) {
		c, err := decodeConfig[AdamMiniConfig](raw)
		if err != nil {
			return nil, err
		}
		return NewAdamMini(ps, c)
	},
	"adamw": func(ps []*model.Param, raw json.RawMessage) (Optimizer, error) {
		c, err := decodeConfig[AdamWConfig](raw)
		if err != nil {
			return nil, err
		}
		return NewAdamW(ps, c)
	},
}

func adaptiveGoldenSpecs() []adaptiveGoldenSpec {
	withMomentum := DefaultAdafactorConfig()
	withMomentum.Beta1, withMomentum.WeightDecay, withMomentum.ClipThreshold = 0.9, 0.1, 0.7
	relative := DefaultAdafactorConfig()
	relative.RelativeStep, relative.ScaleParameter = true, true
	cameLlama := DefaultCAMEConfig()
	cameLlama.Beta2, cameLlama.Beta3, cameLlama.WeightDecay = 0.95, 0.995, 0.1
	adam := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-6, WeightDecay: 0.1}
	adamHF := adam
	adamHF.Convention = AdamWHF
	return []adaptiveGoldenSpec{
		{name: "adafactor-baseline", opt: "adafactor", cfg: DefaultAdafactorConfig(), lr: 1e-2},
		{name: "adafactor-momentum-decay-clip", opt: "adafactor", cfg: withMomentum, lr: 1e-2},
		{name: "adafactor-relative-step", opt: "adafactor", cfg: relative, lr: 0},
		{name: "came-defaults", opt: "came", cfg: DefaultCAMEConfig(), lr: 1e-3},
		{name: "came-llama1b-decay", opt: "came", cfg: cameLlama, lr: 1e-3},
		{name: "adam-mini", opt: "adam-mini", cfg: miniConfig(), lr: 1e-2, mini: true},
		{name: "adam-mini-v1.0", opt: "adam-mini", cfg: miniConfigV10(), lr: 1e-2, mini: true},
		{name: "adamw-pytorch", opt: "adamw", cfg: adam, lr: 1e-2},
		{name: "adamw-hf", opt: "adamw", cfg: adamHF, lr: 1e-2},
	}
}

const adaptiveGoldenSteps = 5

// goldenAdaptiveFile runs every case (pending ones only when asked) and
// returns optim_adaptive.json's bytes.
func goldenAdaptiveFile(t *testing.T, pending bool) []byte {
	t.Helper()
	var out struct {
		Cases []goldenCase `json:"cases"`
	}
	for _, c := range adaptiveGoldenSpecs() {
		if c.pending && !pending {
			continue
		}
		ps := c.params()
		gc := goldenCase{Name: c.name, Optimizer: c.opt, Config: c.cfg}
		for _, p := range ps {
			gc.Params = append(gc.Params, goldenParam{Name: p.Name, Role: p.Role.String(), Shape: p.Shape, W0: exact64(p.W)})
		}
		raw, err := json.Marshal(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		o, err := adaptiveBuilders[c.opt](ps, raw)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for s := 0; s < adaptiveGoldenSteps; s++ {
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
	return b
}

func TestWriteGoldenAdaptive(t *testing.T) {
	if *goldenAdaptiveDir == "" {
		t.Skip("set -golden-adaptive-out DIR to write the cross-check inputs")
	}
	writeGolden(t, *goldenAdaptiveDir, "optim_adaptive.json", goldenAdaptiveFile(t, true))
}

// TestGoldenAdaptiveReplay rebuilds every optimizer of optim_adaptive.json
// from its stored configuration, replays the stored gradients and learning
// rates from the stored initial weights and requires the stored weights
// after every step (see goldenReplayTol).
func TestGoldenAdaptiveReplay(t *testing.T) {
	var file struct {
		Cases []struct {
			Name      string          `json:"name"`
			Optimizer string          `json:"optimizer"`
			Config    json.RawMessage `json:"config"`
			Params    []goldenParam   `json:"params"`
			Steps     []goldenStep    `json:"steps"`
		} `json:"cases"`
	}
	readGolden(t, "optim_adaptive.json", &file)
	specs := map[string]adaptiveGoldenSpec{}
	table := map[string]bool{}
	for _, c := range adaptiveGoldenSpecs() {
		specs[c.name], table[c.name] = c, c.pending
	}
	var names []string
	for _, c := range file.Cases {
		names = append(names, c.Name)
	}
	requireCases(t, "optim_adaptive.json", names, table)
	for _, c := range file.Cases {
		t.Run(c.Name, func(t *testing.T) {
			spec, ok := specs[c.Name]
			if !ok {
				t.Skip("not in the case table (reported above)")
			}
			if c.Optimizer != spec.opt {
				t.Fatalf("stored optimizer %q, the case table has %q", c.Optimizer, spec.opt)
			}
			if len(c.Steps) != adaptiveGoldenSteps {
				t.Fatalf("%d stored steps, want %d", len(c.Steps), adaptiveGoldenSteps)
			}
			ps := spec.params()
			var names []string
			var shapes [][]int
			var w0 [][]float64
			for i, p := range c.Params {
				if i < len(ps) && p.Role != ps[i].Role.String() {
					t.Fatalf("%s: stored role %s, the case table builds %s", p.Name, p.Role, ps[i].Role)
				}
				names, shapes, w0 = append(names, p.Name), append(shapes, p.Shape), append(w0, p.W0)
			}
			goldenWeights(t, ps, names, shapes, w0)
			o, err := adaptiveBuilders[c.Optimizer](ps, c.Config)
			if err != nil {
				t.Fatal(err)
			}
			for s, st := range c.Steps {
				setGrads(t, ps, st.Grads)
				o.Step(st.LR)
				checkGoldenWeights(t, fmt.Sprintf("step %d", s+1), ps, st.W)
			}
		})
	}
}
