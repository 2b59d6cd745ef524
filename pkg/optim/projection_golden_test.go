package optim

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var goldenProjectionDir = flag.String("golden-projection-out", "", "directory to write optim_projection.json into (for scripts/crosscheck/optim_projection.py)")

type projGoldenCase struct {
	Name      string      `json:"name"`
	Optimizer string      `json:"optimizer"` // "galore" or "apollo"
	Config    any         `json:"config"`
	Shape     []int       `json:"shape"` // [m, n]
	W0        []float64   `json:"w0"`
	Grads     [][]float64 `json:"grads"` // per step, m·n row-major
	LRs       []float64   `json:"lrs"`
	// Proj holds tern's projection used at each step, r×d row-major in
	// tern's layout (Q = P on the right, m ≥ n; Q = Pᵀ on the left).
	Proj [][]float64 `json:"proj"`
	W    [][]float64 `json:"w"` // tern's weights after each step
}

func f64s(x []float32) []float64 { return projTo64(x) }

// TestWriteGoldenProjection writes inputs and tern's per-step outputs of
// GaLore and APOLLO runs for the float64 PyTorch cross-check: both sides of
// the projection, a refresh inside the run, weight decay, and a gradient
// jump that makes APOLLO's limiter act.
// Run: go test ./pkg/optim -run TestWriteGoldenProjection -golden-projection-out DIR
func TestWriteGoldenProjection(t *testing.T) {
	if *goldenProjectionDir == "" {
		t.Skip("only with -golden-projection-out DIR: writes cross-check inputs for scripts/crosscheck/optim_projection.py")
	}
	const steps = 7
	var cases []projGoldenCase
	for _, shape := range [][2]int{{4, 7}, {7, 4}, {5, 5}} {
		cfg := galoreTestConfig()
		ps := projParams(11, shape)
		o, err := NewGaLore(ps, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := projGoldenCase{Name: "galore", Optimizer: "galore", Config: cfg, Shape: ps[0].Shape, W0: f64s(ps[0].W)}
		for s := 0; s < steps; s++ {
			projGrads(ps, s, 0.1+0.05*float64(s))
			lr := 0.01 * (1 + 0.1*float64(s%3))
			o.Step(lr)
			c.Grads = append(c.Grads, f64s(ps[0].G))
			c.LRs = append(c.LRs, lr)
			c.Proj = append(c.Proj, f64s(o.q[0]))
			c.W = append(c.W, f64s(ps[0].W))
		}
		cases = append(cases, c)
	}
	for _, tc := range []struct {
		name      string
		scaleType string
		rank      int
		front     bool
	}{{"apollo", ApolloChannel, 2, false}, {"apollo-mini", ApolloTensor, 1, true}} {
		for _, shape := range [][2]int{{4, 9}, {9, 4}, {6, 6}} {
			cfg := apolloTestConfig(tc.scaleType, tc.rank)
			cfg.ScaleFront = tc.front
			ps := projParams(12, shape)
			o := mustApollo(t, ps, cfg)
			c := projGoldenCase{Name: tc.name, Optimizer: "apollo", Config: cfg, Shape: ps[0].Shape, W0: f64s(ps[0].W)}
			for s := 0; s < steps; s++ {
				gain := 0.1
				if s >= 4 {
					gain = 0.4
				}
				projGrads(ps, s, gain)
				lr := 0.01 * (1 + 0.1*float64(s%3))
				q := make([]float32, o.lay[0].qSize())
				o.gen(q, 0, int64(s/cfg.UpdateProjGap))
				o.Step(lr)
				c.Grads = append(c.Grads, f64s(ps[0].G))
				c.LRs = append(c.LRs, lr)
				c.Proj = append(c.Proj, f64s(q))
				c.W = append(c.W, f64s(ps[0].W))
			}
			cases = append(cases, c)
		}
	}
	b, err := json.MarshalIndent(cases, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(*goldenProjectionDir, "optim_projection.json")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d cases to %s", len(cases), out)
}
