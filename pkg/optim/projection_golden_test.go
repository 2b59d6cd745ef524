package optim

import (
	"encoding/json"
	"flag"
	"fmt"
	"testing"

	"github.com/ternml/tern/pkg/model"
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

// projGoldenSpec is one run of optim_projection.json: projGoldenSteps steps
// on one weight of projParams(seed, shape) with the gradients of projGrads
// at gain(s) and lr 0.01·(1 + 0.1·(s mod 3)) at step s. Cases are keyed by
// name and shape.
type projGoldenSpec struct {
	name, opt string // opt: a key of projBuilders
	cfg       any
	shape     [2]int
	seed      uint64
	gain      func(step int) float64
	pending   bool // not yet cross-checked (see adaptiveGoldenSpec)
}

func projGoldenKey(name string, shape []int) string {
	return fmt.Sprintf("%s-%dx%d", name, shape[0], shape[1])
}

const projGoldenSteps = 7

var projBuilders = map[string]func(ps []*model.Param, raw json.RawMessage) (Optimizer, error){
	"galore": func(ps []*model.Param, raw json.RawMessage) (Optimizer, error) {
		c, err := decodeConfig[GaLoreConfig](raw)
		if err != nil {
			return nil, err
		}
		return NewGaLore(ps, c)
	},
	"apollo": func(ps []*model.Param, raw json.RawMessage) (Optimizer, error) {
		c, err := decodeConfig[ApolloConfig](raw)
		if err != nil {
			return nil, err
		}
		return NewApollo(ps, c)
	},
}

// projGoldenSpecs covers both sides of the projection, a refresh inside the
// run, weight decay, and (APOLLO) a gradient jump at step 4 that makes the
// norm-growth limiter act.
func projGoldenSpecs() []projGoldenSpec {
	var out []projGoldenSpec
	for _, shape := range [][2]int{{4, 7}, {7, 4}, {5, 5}} {
		out = append(out, projGoldenSpec{name: "galore", opt: "galore", cfg: galoreTestConfig(), shape: shape, seed: 11,
			gain: func(s int) float64 { return 0.1 + 0.05*float64(s) }})
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
			out = append(out, projGoldenSpec{name: tc.name, opt: "apollo", cfg: cfg, shape: shape, seed: 12,
				gain: func(s int) float64 {
					if s >= 4 {
						return 0.4
					}
					return 0.1
				}})
		}
	}
	return out
}

// goldenProjectionFile runs every case (pending ones only when asked) and
// returns optim_projection.json's bytes.
func goldenProjectionFile(t *testing.T, pending bool) []byte {
	t.Helper()
	var cases []projGoldenCase
	for _, spec := range projGoldenSpecs() {
		if spec.pending && !pending {
			continue
		}
		ps := projParams(spec.seed, spec.shape)
		raw, err := json.Marshal(spec.cfg)
		if err != nil {
			t.Fatal(err)
		}
		o, err := projBuilders[spec.opt](ps, raw)
		if err != nil {
			t.Fatalf("%s: %v", projGoldenKey(spec.name, ps[0].Shape), err)
		}
		c := projGoldenCase{Name: spec.name, Optimizer: spec.opt, Config: spec.cfg, Shape: ps[0].Shape, W0: f64s(ps[0].W)}
		for s := 0; s < projGoldenSteps; s++ {
			projGrads(ps, s, spec.gain(s))
			lr := 0.01 * (1 + 0.1*float64(s%3))
			var q []float32
			switch o := o.(type) {
			case *Apollo:
				// The step's projection, drawn as Step will draw it.
				q = make([]float32, o.lay[0].qSize())
				o.gen(q, 0, int64(s/o.cfg.UpdateProjGap))
				o.Step(lr)
			case *GaLore:
				o.Step(lr)
				q = o.q[0]
			default:
				t.Fatalf("%s: no projection to record for %T", spec.name, o)
			}
			c.Grads = append(c.Grads, f64s(ps[0].G))
			c.LRs = append(c.LRs, lr)
			c.Proj = append(c.Proj, f64s(q))
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

// TestWriteGoldenProjection writes inputs and tern's per-step outputs of
// GaLore and APOLLO runs for the float64 PyTorch cross-check.
// Run: go test ./pkg/optim -run TestWriteGoldenProjection -golden-projection-out DIR
func TestWriteGoldenProjection(t *testing.T) {
	if *goldenProjectionDir == "" {
		t.Skip("only with -golden-projection-out DIR: writes cross-check inputs for scripts/crosscheck/optim_projection.py")
	}
	writeGolden(t, *goldenProjectionDir, "optim_projection.json", goldenProjectionFile(t, true))
}

// TestGoldenProjectionReplay rebuilds every GaLore and APOLLO run of
// optim_projection.json from its stored configuration and replays it (the
// projections are recomputed, not injected) from the stored weight,
// gradients and learning rates; the weights must stay within
// goldenReplayTol of the stored ones at every step.
func TestGoldenProjectionReplay(t *testing.T) {
	var file []struct {
		Name      string          `json:"name"`
		Optimizer string          `json:"optimizer"`
		Config    json.RawMessage `json:"config"`
		Shape     []int           `json:"shape"`
		W0        []float64       `json:"w0"`
		Grads     [][]float64     `json:"grads"`
		LRs       []float64       `json:"lrs"`
		W         [][]float64     `json:"w"`
	}
	readGolden(t, "optim_projection.json", &file)
	specs := map[string]projGoldenSpec{}
	table := map[string]bool{}
	for _, s := range projGoldenSpecs() {
		k := projGoldenKey(s.name, s.shape[:])
		specs[k], table[k] = s, s.pending
	}
	var keys []string
	for _, c := range file {
		keys = append(keys, projGoldenKey(c.Name, c.Shape))
	}
	requireCases(t, "optim_projection.json", keys, table)
	for i, c := range file {
		t.Run(keys[i], func(t *testing.T) {
			spec, ok := specs[keys[i]]
			if !ok {
				t.Skip("not in the case table (reported above)")
			}
			if c.Optimizer != spec.opt {
				t.Fatalf("stored optimizer %q, the case table has %q", c.Optimizer, spec.opt)
			}
			if len(c.Grads) != projGoldenSteps || len(c.LRs) != projGoldenSteps || len(c.W) != projGoldenSteps {
				t.Fatalf("%d/%d/%d stored gradients/lrs/weights, want %d steps", len(c.Grads), len(c.LRs), len(c.W), projGoldenSteps)
			}
			ps := projParams(spec.seed, spec.shape)
			goldenWeights(t, ps, []string{ps[0].Name}, [][]int{c.Shape}, [][]float64{c.W0})
			o, err := projBuilders[c.Optimizer](ps, c.Config)
			if err != nil {
				t.Fatal(err)
			}
			for s := range c.Grads {
				setGrads(t, ps, c.Grads[s:s+1])
				o.Step(c.LRs[s])
				checkGoldenWeights(t, fmt.Sprintf("step %d", s+1), ps, c.W[s:s+1])
			}
		})
	}
}
