package optim

import (
	"runtime"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// planParams builds zeroed parameters of the given shapes.
func planParams(shapes []ParamShape) []*model.Param {
	ps := make([]*model.Param, len(shapes))
	for i, s := range shapes {
		n := s.Size()
		ps[i] = &model.Param{Name: s.Name, Role: s.Role, Shape: append([]int(nil), s.Shape...),
			GlobalShape: append([]int(nil), s.Shape...), W: make([]float32, n), G: make([]float32, n)}
	}
	return ps
}

// Shapes the model presets do not produce but the optimizers accept: wide and
// tall projections on both sides of every rank, a 3-D tensor (Adafactor and
// CAME factor its last two axes), a row count not a multiple of the top-k
// block, heads of 4 rows.
var planShapes = []ParamShape{
	{"emb", model.RoleEmbedding, []int{37, 12}},
	{"n1", model.RoleNorm, []int{12}},
	{"q", model.RoleAttnQK, []int{16, 12}},
	{"k", model.RoleAttnQK, []int{8, 12}},
	{"v", model.RoleAttnV, []int{8, 12}},
	{"o", model.RoleAttnO, []int{12, 16}},
	{"up", model.RoleMLP, []int{40, 12}},
	{"down", model.RoleMLP, []int{12, 40}},
	{"conv", model.RoleMLP, []int{3, 5, 7}},
	{"head", model.RoleHead, []int{37, 12}},
}

func TestPlanStateBytesEqualsBuilt(t *testing.T) {
	adam := AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
	flat := []ParamShape{}
	for _, s := range planShapes {
		if s.Name != "conv" {
			flat = append(flat, s)
		}
	}
	af := DefaultAdafactorConfig()
	af.Beta1 = 0.9
	mini := DefaultAdamMiniConfig()
	mini.HeadDim = 4
	mini10 := mini
	mini10.Partition = AdamMiniV10
	ma := DefaultMicroAdamConfig()
	ma.TopKBlockSize = 50
	ma.QuantBlockSize = 7
	type build func(ps []*model.Param) (Optimizer, error)
	for _, rank := range []int{1, 5, 9, 64} {
		gal, galRev := DefaultGaLoreConfig(), DefaultGaLoreConfig()
		gal.Rank, galRev.Rank, galRev.ProjType = rank, rank, GaLoreReverseStd
		apo := DefaultApolloConfig()
		apo.Rank = rank
		gr := DefaultGrassConfig()
		gr.Rank = rank
		cases := []struct {
			name   string
			shapes []ParamShape
			pc     PlanConfigs
			build  build
		}{
			{"adamw", planShapes, PlanConfigs{}, func(ps []*model.Param) (Optimizer, error) { return NewAdamW(ps, adam) }},
			{"adafactor", planShapes, PlanConfigs{Adafactor: af}, func(ps []*model.Param) (Optimizer, error) { return NewAdafactor(ps, af) }},
			{"came", planShapes, PlanConfigs{}, func(ps []*model.Param) (Optimizer, error) { return NewCAME(ps, DefaultCAMEConfig()) }},
			{"adam-mini", flat, PlanConfigs{AdamMini: mini}, func(ps []*model.Param) (Optimizer, error) { return NewAdamMini(ps, mini) }},
			{"adam-mini", flat, PlanConfigs{AdamMini: mini10}, func(ps []*model.Param) (Optimizer, error) { return NewAdamMini(ps, mini10) }},
			{"microadam", planShapes, PlanConfigs{MicroAdam: ma}, func(ps []*model.Param) (Optimizer, error) { return NewMicroAdam(ps, ma) }},
			{"galore", flat, PlanConfigs{GaLore: gal}, func(ps []*model.Param) (Optimizer, error) { return NewGaLoreRouted(ps, gal, adam) }},
			{"galore", flat, PlanConfigs{GaLore: galRev}, func(ps []*model.Param) (Optimizer, error) { return NewGaLoreRouted(ps, galRev, adam) }},
			{"apollo", flat, PlanConfigs{Apollo: apo}, func(ps []*model.Param) (Optimizer, error) { return NewApolloRouted(ps, apo, adam) }},
			{"grass", flat, PlanConfigs{Grass: gr}, func(ps []*model.Param) (Optimizer, error) { return NewGrassRouted(ps, gr, adam) }},
		}
		for _, c := range cases {
			o, err := c.build(planParams(c.shapes))
			if err != nil {
				t.Fatalf("%s rank %d: %v", c.name, rank, err)
			}
			got, err := PlanStateBytes(c.name, c.shapes, c.pc)
			if err != nil {
				t.Fatalf("%s rank %d: %v", c.name, rank, err)
			}
			if want := o.StateBytes(); got != want {
				t.Errorf("%s rank %d: planned %d bytes of state, built optimizer holds %d", c.name, rank, got, want)
			}
		}
	}
	if _, err := PlanStateBytes("sgd", planShapes, PlanConfigs{}); err == nil {
		t.Fatal("an optimizer without a plan was accepted")
	}
	if _, err := PlanStateBytes("adam-mini", flat, PlanConfigs{AdamMini: DefaultAdamMiniConfig()}); err == nil {
		t.Fatal("adam-mini without a head size was planned; NewAdamMini rejects it")
	}
	mini.Partition = "paper"
	if _, err := PlanStateBytes("adam-mini", flat, PlanConfigs{AdamMini: mini}); err == nil {
		t.Fatal("adam-mini with an unknown partition was planned; NewAdamMini rejects it")
	}
}

// SplitProjectedShapes routes exactly as SplitProjected.
func TestSplitProjectedShapes(t *testing.T) {
	proj, rest := SplitProjected(planParams(planShapes))
	sp, sr := SplitProjectedShapes(planShapes)
	names := func(ps []*model.Param) (n []string) {
		for _, p := range ps {
			n = append(n, p.Name)
		}
		return n
	}
	shapeNames := func(ss []ParamShape) (n []string) {
		for _, s := range ss {
			n = append(n, s.Name)
		}
		return n
	}
	if a, b := names(proj), shapeNames(sp); len(a) != len(b) || len(a) == 0 {
		t.Fatalf("projected %v vs %v", a, b)
	} else {
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("projected %v vs %v", a, b)
			}
		}
	}
	if a, b := names(rest), shapeNames(sr); len(a) != len(b) {
		t.Fatalf("rest %v vs %v", a, b)
	} else {
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("rest %v vs %v", a, b)
			}
		}
	}
}

// Under GRASS the projected weights hold r rows of gradient between
// selections and their full gradient at a gradient-based selection.
func TestPlanGradElems(t *testing.T) {
	gr := DefaultGrassConfig()
	gr.Rank = 10
	flat := planShapes[:len(planShapes)-2] // drop the 3-D tensor and the head
	ps := planParams(flat)
	if _, err := NewGrassRouted(ps, gr, AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}); err != nil {
		t.Fatal(err)
	}
	var held int64
	for _, p := range ps {
		held += int64(len(p.G) + len(p.GSel))
	}
	g := PlanGradElems("grass", flat, PlanConfigs{Grass: gr})
	if held != g.Steady+g.Selection {
		t.Fatalf("before the first (selection) step GRASS holds %d gradient values, plan says %d + %d", held, g.Steady, g.Selection)
	}
	gr.Selection = GrassUniform
	if g := PlanGradElems("grass", flat, PlanConfigs{Grass: gr}); g.Selection != 0 {
		t.Fatalf("uniform selection reads no gradient but the plan reserves %d values", g.Selection)
	}
	var all int64
	for _, s := range flat {
		all += int64(s.Size())
	}
	if g := PlanGradElems("adamw", flat, PlanConfigs{}); g.Steady != all || g.Selection != 0 {
		t.Fatalf("adamw: plan %+v, want %d steady values and none transient", g, all)
	}
}

// TestGaLoreTransientBytes checks the planned SVD buffers of a refresh
// against what one allocates: with one goroutine, one buffer set for all
// weights (gonum's own scratch at these sizes is a few KiB), never one per
// weight; with two, at most two sets.
func TestGaLoreTransientBytes(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts: checked without the race detector")
	}
	shapes := [][2]int{{96, 40}, {40, 96}, {64, 64}, {7, 3}}
	cfg := DefaultGaLoreConfig()
	cfg.Rank = 8
	const slack = 64 << 10
	for _, procs := range []int{1, 2} {
		withProcs(procs, func() {
			ps := projParams(3, shapes...)
			o, err := NewGaLore(ps, cfg)
			if err != nil {
				t.Fatal(err)
			}
			projGrads(ps, 0, 1)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			o.refresh()
			runtime.ReadMemStats(&after)
			got := int64(after.TotalAlloc - before.TotalAlloc)
			plan := PlanTransientBytes("galore", ShapesOf(ps), PlanConfigs{GaLore: cfg}, procs)
			one := plan / int64(procs)
			// One set: 96·40 + 40·40 + 40 + dgesvd's workspace floats.
			if lo := 8 * int64(96*40+40*40+40); one < lo {
				t.Fatalf("planned set of %d bytes, below the %d of its matrices", one, lo)
			}
			if got < one || got > plan+slack {
				t.Errorf("GOMAXPROCS %d: a refresh allocated %d bytes, planned %d (sets of %d)", procs, got, plan, one)
			}
		})
	}
	for _, name := range []string{"adamw", "apollo", "grass", "adam-mini"} {
		if n := PlanTransientBytes(name, planShapes, PlanConfigs{}, 2); n != 0 {
			t.Errorf("%s: transient %d, want 0", name, n)
		}
	}
	if n := PlanTransientBytes("galore", nil, PlanConfigs{GaLore: cfg}, 2); n != 0 {
		t.Errorf("galore without projected weights: transient %d", n)
	}
}
