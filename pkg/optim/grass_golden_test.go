package optim

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
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

// TestWriteGoldenGrass writes inputs and tern's per-step outputs of GRASS
// runs for the float64 PyTorch cross-check: every selection method, two
// selection windows and a partial one, weight decay, α = 0.25.
// Run: go test ./pkg/optim -run TestWriteGoldenGrass -golden-grass-out DIR
func TestWriteGoldenGrass(t *testing.T) {
	if *goldenGrassDir == "" {
		t.Skip("only with -golden-grass-out DIR: writes cross-check inputs for scripts/crosscheck/optim_grass.py")
	}
	const steps = 8
	var cases []grassGoldenCase
	for _, v := range []struct {
		name        string
		sel         string
		replacement bool
	}{{"topr", GrassTopR, false}, {"norm-R", GrassNorm, true}, {"norm-NR", GrassNorm, false},
		{"uniform-R", GrassUniform, true}, {"uniform-NR", GrassUniform, false}} {
		cfg := DefaultGrassConfig()
		cfg.Rank, cfg.UpdateProjGap, cfg.WeightDecay, cfg.Seed = 3, 3, 0.05, 17
		cfg.Selection, cfg.Replacement = v.sel, v.replacement
		ps := projParams(13, [2]int{7, 5})
		o, err := NewGrass(ps, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := grassGoldenCase{Name: v.name, Config: cfg, Shape: ps[0].Shape, W0: f64s(ps[0].W)}
		for s := 0; s < steps; s++ {
			g := grassFullGrads(ps, s)
			grassBackward(ps, g)
			// Uniform draws σ before the backward pass; the others select
			// inside Step from the full gradient.
			var rows []int32
			var rho []float32
			if v.sel == GrassUniform {
				rows, rho = append(rows, o.sel[0]...), append(rho, o.rho[0]...)
			}
			lr := 0.01 * (1 + 0.1*float64(s%3))
			o.Step(lr)
			if v.sel != GrassUniform {
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
	out := filepath.Join(*goldenGrassDir, "optim_grass.json")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d cases to %s", len(cases), out)
}
