package optim

import (
	"encoding/json"
	"flag"
	"fmt"
	"testing"
)

var goldenGrassDir = flag.String("golden-grass-out", "", "directory to write optim_grass.json into (for scripts/crosscheck/optim_grass.py)")

type grassGoldenCase struct {
	Name   string      `json:"name"`
	Config GrassConfig `json:"config"`
	Shape  []int       `json:"shape"` // [m, n]
	W0     []float64   `json:"w0"`
	Grads  [][]float64 `json:"grads"` // full gradient per step, m·n row-major
	LRs    []float64   `json:"lrs"`
	Rows   [][]int32   `json:"rows"`   // σ used at each step
	Scales [][]float64 `json:"scales"` // ρ used at each step
	W      [][]float64 `json:"w"`      // tern's weights after each step
}

// grassGoldenSpec is one run of optim_grass.json: grassGoldenSteps steps on
// the 7×5 weight of projParams(13, ...) with the full gradients of
// grassFullGrads and lr 0.01·(1 + 0.1·(s mod 3)) at step s.
type grassGoldenSpec struct {
	name    string
	cfg     GrassConfig
	pending bool // not yet cross-checked (see adaptiveGoldenSpec)
}

const grassGoldenSteps = 8

var grassGoldenShape = [2]int{7, 5}

// grassGoldenSpecs: every selection method, with and without replacement,
// two selection windows and a partial one, weight decay, α = 0.25.
func grassGoldenSpecs() []grassGoldenSpec {
	var out []grassGoldenSpec
	for _, v := range []struct {
		name        string
		sel         string
		replacement bool
	}{{"topr", GrassTopR, false}, {"norm-R", GrassNorm, true}, {"norm-NR", GrassNorm, false},
		{"uniform-R", GrassUniform, true}, {"uniform-NR", GrassUniform, false}} {
		cfg := DefaultGrassConfig()
		cfg.Rank, cfg.UpdateProjGap, cfg.WeightDecay, cfg.Seed = 3, 3, 0.05, 17
		cfg.Selection, cfg.Replacement = v.sel, v.replacement
		out = append(out, grassGoldenSpec{name: v.name, cfg: cfg})
	}
	return out
}

func grassGoldenLR(s int) float64 { return 0.01 * (1 + 0.1*float64(s%3)) }

// goldenGrassFile runs every case (pending ones only when asked) and
// returns optim_grass.json's bytes.
func goldenGrassFile(t *testing.T, pending bool) []byte {
	t.Helper()
	var cases []grassGoldenCase
	for _, spec := range grassGoldenSpecs() {
		if spec.pending && !pending {
			continue
		}
		cfg := spec.cfg
		ps := projParams(13, grassGoldenShape)
		o, err := NewGrass(ps, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := grassGoldenCase{Name: spec.name, Config: cfg, Shape: ps[0].Shape, W0: f64s(ps[0].W)}
		for s := 0; s < grassGoldenSteps; s++ {
			g := grassFullGrads(ps, s)
			grassBackward(ps, g)
			// Uniform draws σ before the backward pass; the others select
			// inside Step from the full gradient.
			var rows []int32
			var rho []float32
			if cfg.Selection == GrassUniform {
				rows, rho = append(rows, o.sel[0]...), append(rho, o.rho[0]...)
			}
			lr := grassGoldenLR(s)
			o.Step(lr)
			if cfg.Selection != GrassUniform {
				rows, rho = append(rows, o.sel[0]...), append(rho, o.rho[0]...)
			}
			c.Grads = append(c.Grads, f64s(g[0]))
			c.LRs = append(c.LRs, lr)
			c.Rows = append(c.Rows, rows)
			c.Scales = append(c.Scales, f64s(rho))
			c.W = append(c.W, f64s(ps[0].W))
		}
		cases = append(cases, c)
	}
	b, err := json.MarshalIndent(cases, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestWriteGoldenGrass writes inputs and tern's per-step outputs of GRASS
// runs for the float64 PyTorch cross-check.
// Run: go test ./pkg/optim -run TestWriteGoldenGrass -golden-grass-out DIR
func TestWriteGoldenGrass(t *testing.T) {
	if *goldenGrassDir == "" {
		t.Skip("only with -golden-grass-out DIR: writes cross-check inputs for scripts/crosscheck/optim_grass.py")
	}
	writeGolden(t, *goldenGrassDir, "optim_grass.json", goldenGrassFile(t, true))
}

// TestGoldenGrassReplay rebuilds GRASS from each stored configuration and
// replays the stored full gradients (handed over as the row-selected
// backward would: in full at selection steps, only the selected rows
// otherwise) and learning rates from the stored initial weight; the
// weights must stay within goldenReplayTol of the stored ones at every step.
func TestGoldenGrassReplay(t *testing.T) {
	var file []struct {
		Name   string          `json:"name"`
		Config json.RawMessage `json:"config"`
		Shape  []int           `json:"shape"`
		W0     []float64       `json:"w0"`
		Grads  [][]float64     `json:"grads"`
		LRs    []float64       `json:"lrs"`
		W      [][]float64     `json:"w"`
	}
	readGolden(t, "optim_grass.json", &file)
	specs := map[string]grassGoldenSpec{}
	table := map[string]bool{}
	for _, s := range grassGoldenSpecs() {
		specs[s.name], table[s.name] = s, s.pending
	}
	var names []string
	for _, c := range file {
		names = append(names, c.Name)
	}
	requireCases(t, "optim_grass.json", names, table)
	for _, c := range file {
		t.Run(c.Name, func(t *testing.T) {
			if _, ok := specs[c.Name]; !ok {
				t.Skip("not in the case table (reported above)")
			}
			if len(c.Grads) != grassGoldenSteps || len(c.LRs) != grassGoldenSteps || len(c.W) != grassGoldenSteps {
				t.Fatalf("%d/%d/%d stored gradients/lrs/weights, want %d steps", len(c.Grads), len(c.LRs), len(c.W), grassGoldenSteps)
			}
			cfg, err := decodeConfig[GrassConfig](c.Config)
			if err != nil {
				t.Fatal(err)
			}
			ps := projParams(13, grassGoldenShape)
			goldenWeights(t, ps, []string{ps[0].Name}, [][]int{c.Shape}, [][]float64{c.W0})
			o, err := NewGrass(ps, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for s, g := range c.Grads {
				if len(g) != len(ps[0].W) {
					t.Fatalf("step %d: %d stored gradient values, want %d", s+1, len(g), len(ps[0].W))
				}
				full := make([]float32, len(g))
				for j, x := range g {
					full[j] = float32(x)
				}
				grassBackward(ps, [][]float32{full})
				o.Step(c.LRs[s])
				checkGoldenWeights(t, fmt.Sprintf("step %d", s+1), ps, c.W[s:s+1])
			}
		})
	}
}
