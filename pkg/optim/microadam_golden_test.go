package optim

import (
	"encoding/json"
	"flag"
	"math"
	"testing"

	"github.com/ternml/tern/pkg/tensor"
)

var goldenMicroAdamDir = flag.String("golden-microadam-out", "", "directory to write optim_microadam.json into (for scripts/crosscheck/optim_microadam.py)")

type microAdamGoldenParam struct {
	Name   string      `json:"name"`
	Shape  []int       `json:"shape"`
	Matrix bool        `json:"matrix"` // weight decay applies
	W0     []float32   `json:"w0"`
	Grads  [][]float32 `json:"grads"` // per step
	W      []float32   `json:"w"`     // Go's weights after the last step
	Kept   [][]int     `json:"kept"`  // per step: flat indices Go kept, ascending
}

type microAdamGoldenCase struct {
	Name   string                 `json:"name"`
	Config MicroAdamConfig        `json:"config"`
	LRs    []float64              `json:"lrs"`
	Params []microAdamGoldenParam `json:"params"`
}

// microAdamGoldenSpec is one run of optim_microadam.json on
// microAdamTestParams with the gradients of microAdamFillGrads (rounded to
// bf16 when bf16Grads) and lr 2e-2·(1 + 0.1·(s mod 3)) at step s.
type microAdamGoldenSpec struct {
	name      string
	cfg       MicroAdamConfig
	steps     int
	bf16Grads bool
	pending   bool // not yet cross-checked (see adaptiveGoldenSpec)
}

// microAdamGoldenSpecs: the reference-test configuration (ring wraps,
// partial blocks, quantisation blocks splitting code words), and Density 1
// with bf16-exact gradients, which must equal torch.optim.AdamW.
func microAdamGoldenSpecs() []microAdamGoldenSpec {
	ref := DefaultMicroAdamConfig()
	ref.Window, ref.Density, ref.TopKBlockSize, ref.QuantBlockSize = 4, 0.25, 8, 6
	ref.Beta2, ref.WeightDecay = 0.99, 0.05
	adam := DefaultMicroAdamConfig()
	adam.Density, adam.Window, adam.Beta2, adam.WeightDecay = 1, 12, 0.95, 0.1
	adam.TopKBlockSize, adam.QuantBlockSize = 16, 5
	return []microAdamGoldenSpec{
		{name: "window-wraps", cfg: ref, steps: 30},
		{name: "density-one-adamw", cfg: adam, steps: 12, bf16Grads: true},
	}
}

func microAdamGoldenLR(s int) float64 { return 2e-2 * (1 + 0.1*float64(s%3)) }

// goldenMicroAdamFile runs every case (pending ones only when asked) and
// returns optim_microadam.json's bytes.
func goldenMicroAdamFile(t *testing.T, pending bool) []byte {
	t.Helper()
	var cases []microAdamGoldenCase
	for _, spec := range microAdamGoldenSpecs() {
		if spec.pending && !pending {
			continue
		}
		cases = append(cases, microAdamGoldenRun(t, spec))
	}
	b, err := json.MarshalIndent(cases, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWriteGoldenMicroAdam writes the inputs and Go's outputs of the
// MicroAdam runs for the PyTorch float64 cross-check.
// Run: go test ./pkg/optim -run TestWriteGoldenMicroAdam -golden-microadam-out DIR
func TestWriteGoldenMicroAdam(t *testing.T) {
	if *goldenMicroAdamDir == "" {
		t.Skip("only with -golden-microadam-out DIR: writes cross-check inputs for scripts/crosscheck/optim_microadam.py")
	}
	writeGolden(t, *goldenMicroAdamDir, "optim_microadam.json", goldenMicroAdamFile(t, true))
}

func microAdamGoldenRun(t *testing.T, spec microAdamGoldenSpec) microAdamGoldenCase {
	cfg := spec.cfg
	ps := microAdamTestParams()
	o, err := NewMicroAdam(ps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := microAdamGoldenCase{Name: spec.name, Config: cfg}
	for _, p := range ps {
		c.Params = append(c.Params, microAdamGoldenParam{Name: p.Name, Shape: p.Shape, Matrix: len(p.Shape) >= 2, W0: append([]float32(nil), p.W...)})
	}
	for s := 0; s < spec.steps; s++ {
		microAdamFillGrads(ps, s)
		for i, p := range ps {
			if spec.bf16Grads {
				for j, g := range p.G {
					p.G[j] = tensor.ToBF16(g).Float32()
				}
			}
			c.Params[i].Grads = append(c.Params[i].Grads, append([]float32(nil), p.G...))
		}
		lr := microAdamGoldenLR(s)
		c.LRs = append(c.LRs, lr)
		o.Step(lr)
		row := s % cfg.Window
		for i, mt := range o.tensors {
			var kept []int
			for b := 0; b < mt.nblk; b++ {
				start, _, off, kb := mt.block(b)
				for _, e := range mt.window[row*mt.k+off : row*mt.k+off+kb] {
					kept = append(kept, start+int(math.Float32bits(e)&0xffff))
				}
			}
			c.Params[i].Kept = append(c.Params[i].Kept, kept)
		}
	}
	for i, p := range ps {
		c.Params[i].W = append([]float32(nil), p.W...)
	}
	return c
}

// TestGoldenMicroAdamReplay rebuilds MicroAdam from each stored
// configuration and replays the stored gradients and learning rates from
// the stored initial weights; the final weights (the file holds only those)
// must be within goldenReplayTol of the stored ones.
func TestGoldenMicroAdamReplay(t *testing.T) {
	var file []struct {
		Name   string                 `json:"name"`
		Config json.RawMessage        `json:"config"`
		LRs    []float64              `json:"lrs"`
		Params []microAdamGoldenParam `json:"params"`
	}
	readGolden(t, "optim_microadam.json", &file)
	specs := map[string]microAdamGoldenSpec{}
	table := map[string]bool{}
	for _, s := range microAdamGoldenSpecs() {
		specs[s.name], table[s.name] = s, s.pending
	}
	var names []string
	for _, c := range file {
		names = append(names, c.Name)
	}
	requireCases(t, "optim_microadam.json", names, table)
	for _, c := range file {
		t.Run(c.Name, func(t *testing.T) {
			spec, ok := specs[c.Name]
			if !ok {
				t.Skip("not in the case table (reported above)")
			}
			if len(c.LRs) != spec.steps {
				t.Fatalf("%d stored steps, the case table runs %d", len(c.LRs), spec.steps)
			}
			cfg, err := decodeConfig[MicroAdamConfig](c.Config)
			if err != nil {
				t.Fatal(err)
			}
			ps := microAdamTestParams()
			var names []string
			var shapes [][]int
			var w0, want [][]float64
			for _, p := range c.Params {
				if len(p.Grads) != spec.steps {
					t.Fatalf("%s: %d stored gradients, want %d", p.Name, len(p.Grads), spec.steps)
				}
				names, shapes = append(names, p.Name), append(shapes, p.Shape)
				w0, want = append(w0, exact64(p.W0)), append(want, exact64(p.W))
			}
			goldenWeights(t, ps, names, shapes, w0)
			o, err := NewMicroAdam(ps, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for s, lr := range c.LRs {
				grads := make([][]float64, len(c.Params))
				for i, p := range c.Params {
					grads[i] = exact64(p.Grads[s])
				}
				setGrads(t, ps, grads)
				o.Step(lr)
			}
			checkGoldenWeights(t, "final", ps, want)
		})
	}
}
