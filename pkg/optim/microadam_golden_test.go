package optim

import (
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
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

// TestWriteGoldenMicroAdam writes the inputs and Go's outputs of two runs for
// the PyTorch float64 cross-check: the reference-test configuration (ring
// wraps, partial blocks, quantisation blocks splitting code words), and
// Density 1 with bf16-exact gradients, which must equal torch.optim.AdamW.
// Run: go test ./pkg/optim -run TestWriteGoldenMicroAdam -golden-microadam-out DIR
func TestWriteGoldenMicroAdam(t *testing.T) {
	if *goldenMicroAdamDir == "" {
		t.Skip("only with -golden-microadam-out DIR: writes cross-check inputs for scripts/crosscheck/optim_microadam.py")
	}
	ref := DefaultMicroAdamConfig()
	ref.Window, ref.Density, ref.TopKBlockSize, ref.QuantBlockSize = 4, 0.25, 8, 6
	ref.Beta2, ref.WeightDecay = 0.99, 0.05
	adam := DefaultMicroAdamConfig()
	adam.Density, adam.Window, adam.Beta2, adam.WeightDecay = 1, 12, 0.95, 0.1
	adam.TopKBlockSize, adam.QuantBlockSize = 16, 5
	cases := []microAdamGoldenCase{
		microAdamGoldenRun(t, "window-wraps", ref, 30, false),
		microAdamGoldenRun(t, "density-one-adamw", adam, 12, true),
	}
	b, err := json.MarshalIndent(cases, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(*goldenMicroAdamDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(*goldenMicroAdamDir, "optim_microadam.json")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", out)
}

func microAdamGoldenRun(t *testing.T, name string, cfg MicroAdamConfig, steps int, bf16Grads bool) microAdamGoldenCase {
	ps := microAdamTestParams()
	o, err := NewMicroAdam(ps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := microAdamGoldenCase{Name: name, Config: cfg}
	for _, p := range ps {
		c.Params = append(c.Params, microAdamGoldenParam{Name: p.Name, Shape: p.Shape, Matrix: len(p.Shape) >= 2, W0: append([]float32(nil), p.W...)})
	}
	for s := 0; s < steps; s++ {
		microAdamFillGrads(ps, s)
		for i, p := range ps {
			if bf16Grads {
				for j, g := range p.G {
					p.G[j] = tensor.ToBF16(g).Float32()
				}
			}
			c.Params[i].Grads = append(c.Params[i].Grads, append([]float32(nil), p.G...))
		}
		lr := 2e-2 * (1 + 0.1*float64(s%3))
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
