package optim

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

func TestGrassRejectsBadConfig(t *testing.T) {
	good := DefaultGrassConfig()
	cases := []struct {
		field string
		edit  func(*GrassConfig)
	}{
		{"rank", func(c *GrassConfig) { c.Rank = 0 }},
		{"updateProjGap", func(c *GrassConfig) { c.UpdateProjGap = 0 }},
		{"scale", func(c *GrassConfig) { c.Scale = 0 }},
		{"selection", func(c *GrassConfig) { c.Selection = "random" }},
		{"normPower", func(c *GrassConfig) { c.Selection = GrassNorm; c.NormPower = 0 }},
		{"beta1", func(c *GrassConfig) { c.Beta1 = 1 }},
		{"beta2", func(c *GrassConfig) { c.Beta2 = -0.1 }},
		{"eps", func(c *GrassConfig) { c.Eps = 0 }},
		{"weightDecay", func(c *GrassConfig) { c.WeightDecay = math.NaN() }},
	}
	for _, tc := range cases {
		c := good
		tc.edit(&c)
		_, err := NewGrass(projParams(1, [2]int{4, 3}), c)
		if err == nil || !strings.Contains(err.Error(), "optimizer.grass."+tc.field) {
			t.Errorf("%s: error %v, want one naming optimizer.grass.%s", tc.field, err, tc.field)
		}
	}
	norm := &model.Param{Name: "n", Role: model.RoleNorm, Shape: []int{4}, W: make([]float32, 4), G: make([]float32, 4)}
	if _, err := NewGrass([]*model.Param{norm}, good); err == nil {
		t.Error("a norm weight was accepted; its backward does not honour RowSel")
	}
	ps := projParams(1, [2]int{4, 3})
	if _, err := NewGrass(append(ps, ps[0]), good); err == nil {
		t.Error("the same weight given twice was accepted")
	}
}

// TestGrassTopRSelectsLargestRows checks Top-r against an independent
// counting rule, on norms with many exact ties (lower index wins).
func TestGrassTopRSelectsLargestRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cfg := DefaultGrassConfig()
	for trial := 0; trial < 200; trial++ {
		m := 1 + rng.IntN(40)
		r := 1 + rng.IntN(m)
		norms := make([]float64, m)
		for i := range norms {
			norms[i] = float64(rng.IntN(5)) // ties on purpose
		}
		sel, rho := make([]int32, r), make([]float32, r)
		grassSelect(sel, rho, norms, m, cfg, uint64(trial))
		want := grassRefSelectTopR(norms, r)
		for j := range want {
			if int(sel[j]) != want[j] || rho[j] != 1 {
				t.Fatalf("trial %d (m=%d r=%d norms %v): selected %v scales %v, want %v scales 1", trial, m, r, norms, sel, rho, want)
			}
		}
	}
}

// TestGrassSamplingUnbiased checks E[P·Pᵀ·G] = G for the sampled methods
// that claim it (§6.1). Row i of P·Pᵀ·G is c_i·G_i with c_i = Σ_{j: σ_j=i} ρ_j²,
// so the Monte-Carlo mean over N draws is c̄_i·G_i. Its squared error
// Σ_i (c̄_i−1)²‖G_i‖² has expectation E/N, where E is the per-draw variance
// computed in closed form (with replacement: (1/r)(Σ‖G_i‖²/q_i − ‖G‖²);
// uniform without replacement: (m/r − 1)‖G‖²). The test asks for at most
// 3× its expected root (a tail that a fixed-seed run would hit with
// vanishing probability; the error is a sum over m rows) and checks that
// Top-r, which is biased, fails the same bound.
func TestGrassSamplingUnbiased(t *testing.T) {
	const m, r, draws = 16, 4, 10000
	norms := make([]float64, m)
	sq := 0.0
	for i := range norms {
		norms[i] = 0.1 + float64(i%5)*0.7 + float64(i)*0.05
		sq += norms[i] * norms[i]
	}
	cases := []struct {
		name   string
		cfg    GrassConfig
		biased bool
	}{
		{"norm-R p=2", GrassConfig{Selection: GrassNorm, Replacement: true, NormPower: 2}, false},
		{"norm-R p=1", GrassConfig{Selection: GrassNorm, Replacement: true, NormPower: 1}, false},
		{"uniform-R", GrassConfig{Selection: GrassUniform, Replacement: true}, false},
		{"uniform-NR", GrassConfig{Selection: GrassUniform}, false},
		{"topr", GrassConfig{Selection: GrassTopR}, true},
	}
	for _, tc := range cases {
		var variance float64
		switch {
		case tc.cfg.Selection == GrassNorm:
			tot := 0.0
			for _, x := range norms {
				tot += math.Pow(x, tc.cfg.NormPower)
			}
			s := 0.0
			for _, x := range norms {
				s += x * x / (math.Pow(x, tc.cfg.NormPower) / tot)
			}
			variance = (s - sq) / r
		case tc.cfg.Replacement:
			variance = (float64(m)*sq - sq) / r
		default:
			variance = (float64(m)/r - 1) * sq
		}
		if tc.biased {
			variance = (float64(m)/r - 1) * sq // compare with the uniform bound
		}
		c := make([]float64, m)
		sel, rho := make([]int32, r), make([]float32, r)
		for d := 0; d < draws; d++ {
			grassSelect(sel, rho, norms, m, tc.cfg, projectionSeed(42, "w", int64(d)))
			for j, i := range sel {
				c[i] += float64(rho[j]) * float64(rho[j]) / draws
			}
		}
		errSq := 0.0
		for i := range c {
			errSq += (c[i] - 1) * (c[i] - 1) * norms[i] * norms[i]
		}
		rel, bound := math.Sqrt(errSq/sq), 3*math.Sqrt(variance/draws/sq)
		t.Logf("%s: relative error of the mean %.4f, bound %.4f", tc.name, rel, bound)
		if tc.biased != (rel > bound) {
			t.Errorf("%s: relative error %.4f vs bound %.4f (biased=%v)", tc.name, rel, bound, tc.biased)
		}
	}
}

// TestGrassSamplesMatchDistribution checks that norm sampling with
// replacement draws row i with frequency q_i and never draws a zero row.
func TestGrassSamplesMatchDistribution(t *testing.T) {
	norms := []float64{0, 1, 2, 0, 3, 0}
	const r, draws = 3, 20000
	cfg := GrassConfig{Selection: GrassNorm, Replacement: true, NormPower: 2}
	counts := make([]float64, len(norms))
	sel, rho := make([]int32, r), make([]float32, r)
	for d := 0; d < draws; d++ {
		grassSelect(sel, rho, norms, len(norms), cfg, uint64(d)*7919)
		for j, i := range sel {
			counts[i]++
			want := 1 / math.Sqrt(r*norms[i]*norms[i]/14)
			if math.Abs(float64(rho[j])-want) > 1e-6*want {
				t.Fatalf("row %d drawn with scale %v, want %v", i, rho[j], want)
			}
		}
	}
	for i, x := range norms {
		q := x * x / 14
		got := counts[i] / (r * draws)
		// binomial standard error over 60000 draws is at most 0.002
		if math.Abs(got-q) > 0.01 {
			t.Errorf("row %d drawn with frequency %.4f, want %.4f", i, got, q)
		}
	}
}

// TestGrassFullRankMatchesAdamW: with r = m, Top-r, α = 1 and no
// re-selection within the run, P = I (rows in index order, ρ = 1), so GRASS
// is exactly Hugging Face AdamW on those weights (§13.4), bit for bit.
func TestGrassFullRankMatchesAdamW(t *testing.T) {
	ps := projParams(5, [2]int{6, 5}, [2]int{9, 4})
	ref := grassCloneParams(ps)
	cfg := DefaultGrassConfig()
	cfg.Rank, cfg.Scale, cfg.UpdateProjGap, cfg.WeightDecay = 1000, 1, 1000, 0.1
	o, err := NewGrass(ps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAdamW(ref, AdamWConfig{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.Eps, WeightDecay: cfg.WeightDecay, Convention: AdamWHF})
	if err != nil {
		t.Fatal(err)
	}
	for step := 0; step < 12; step++ {
		g := grassFullGrads(ps, step)
		grassBackward(ps, g)
		for i := range ref {
			copy(ref[i].G, g[i])
		}
		o.Step(0.01)
		a.Step(0.01)
		projRequireBitwise(t, ps, ref, "grass r=m vs adamw-hf")
		for _, p := range ps {
			if p.G != nil || len(p.RowSel) != p.Shape[0] {
				t.Fatalf("step %d: %s has G %v, %d selected rows: the full gradient must be gone between selections", step, p.Name, p.G != nil, len(p.RowSel))
			}
		}
	}
}

// TestGrassMatchesFloat64Reference runs several selection windows against
// the float64 transcription (grassRef). Top-r is replicated independently;
// for norm sampling with replacement the reference takes σ and ρ from the
// optimizer (its draws are not replicated) and checks the rest, including
// that repeated rows accumulate. Tolerance: every step moves a weight by at
// most lr·α·ρ·|N|, with |N| ≲ 1/(1−β1) early on; float32 rounding of these
// updates over 10 steps stays far below 1e-5 at lr 0.01.
func TestGrassMatchesFloat64Reference(t *testing.T) {
	for _, sel := range []string{GrassTopR, GrassNorm} {
		ps := projParams(6, [2]int{12, 7}, [2]int{5, 9})
		cfg := DefaultGrassConfig()
		cfg.Rank, cfg.UpdateProjGap, cfg.WeightDecay, cfg.Selection = 4, 3, 0.05, sel
		cfg.Replacement, cfg.Seed = true, 9
		o, err := NewGrass(ps, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ref := newGrassRef(ps, cfg)
		var inject func(i int) ([]int, []float64)
		dup := false
		for step := 0; step < 10; step++ {
			g := grassFullGrads(ps, step)
			grassBackward(ps, g)
			o.Step(0.01)
			if sel == GrassNorm {
				st := o.State()
				inject = func(i int) ([]int, []float64) {
					rows, rho := st[4*i+2].Data, st[4*i+3].Data
					s, sc := make([]int, len(rows)), make([]float64, len(rows))
					for j := range rows {
						s[j], sc[j] = int(rows[j]), float64(rho[j])
						if j > 0 && s[j] == s[j-1] {
							dup = true
						}
					}
					return s, sc
				}
			}
			ref.step(ps, g, 0.01, inject)
			if d, where := projMaxDiff(ps, ref.w); !(d < 1e-5) {
				t.Fatalf("%s step %d: %s differs from the float64 reference by %g", sel, step, where, d)
			}
		}
		if sel == GrassNorm && !dup {
			t.Errorf("no repeated row was drawn; the accumulation of repeats went unchecked")
		}
	}
}

// TestGrassFirstStepIsSignOfSelectedRows is the closed form of §13.3: at the
// first step with ρ = 1, ΔW[σ_j] = −lr·α·sign(G[σ_j]) up to ε (relative
// ε/(√(1−β2)·|g|) ≤ 7e-5 for |g| ≥ 0.5), and every other row is unchanged.
func TestGrassFirstStepIsSignOfSelectedRows(t *testing.T) {
	ps := projParams(7, [2]int{10, 6})
	p := ps[0]
	w0 := append([]float32(nil), p.W...)
	g := grassFullGrads(ps, 0)[0]
	for k, x := range g {
		if math.Abs(float64(x)) < 0.5 {
			g[k] = float32(math.Copysign(0.5, float64(x)))
		}
	}
	cfg := DefaultGrassConfig()
	cfg.Rank = 3
	o, err := NewGrass(ps, cfg)
	if err != nil {
		t.Fatal(err)
	}
	copy(p.G, g)
	const lr = 0.01
	o.Step(lr)
	norms := make([]float64, 10)
	for row := range norms {
		for k := 0; k < 6; k++ {
			norms[row] += float64(g[row*6+k]) * float64(g[row*6+k])
		}
	}
	picked := map[int]bool{}
	for _, row := range grassRefSelectTopR(norms, 3) {
		picked[row] = true
	}
	for k := range p.W {
		d := float64(p.W[k]) - float64(w0[k])
		if !picked[k/6] {
			if d != 0 {
				t.Fatalf("row %d was not selected but moved by %g", k/6, d)
			}
			continue
		}
		want := -lr * cfg.Scale * math.Copysign(1, float64(g[k]))
		if math.Abs(d-want) > lr*cfg.Scale*(7e-5+1e-5) {
			t.Fatalf("W[%d] moved by %g, want %g", k, d, want)
		}
	}
}

// TestGrassStateRoundTrip stops after a number of steps, restores the
// exported state into a fresh optimizer over copies of the weights, and
// requires both to continue bit for bit: once stopping right before a
// selection step (the restored optimizer must ask for the full gradient) and
// once mid-window. It also checks StateBytes against the exported floats.
func TestGrassStateRoundTrip(t *testing.T) {
	for _, sel := range []string{GrassTopR, GrassNorm, GrassUniform} {
		for _, stop := range []int{6, 7} {
			cfg := DefaultGrassConfig()
			cfg.Rank, cfg.UpdateProjGap, cfg.Selection, cfg.Seed, cfg.WeightDecay = 3, 3, sel, 11, 0.01
			ps := projParams(8, [2]int{8, 5}, [2]int{6, 7})
			a, err := NewGrass(ps, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := a.StateBytes(), 4*projStateFloats(a.State()); got != want {
				t.Errorf("StateBytes %d, exported %d bytes", got, want)
			}
			for step := 0; step < stop; step++ {
				grassBackward(ps, grassFullGrads(ps, step))
				a.Step(0.02)
			}
			saved := projCopyState(a.State())
			qs := grassCloneParams(ps)
			cfgB := cfg
			cfgB.Seed = 999 // the seed must come from the state
			b, err := NewGrass(qs, cfgB)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.SetState(saved); err != nil {
				t.Fatal(err)
			}
			for step := stop; step < stop+7; step++ {
				g := grassFullGrads(ps, step)
				grassBackward(ps, g)
				grassBackward(qs, g)
				a.Step(0.02)
				b.Step(0.02)
				projRequireBitwise(t, ps, qs, sel+" after restore")
			}
		}
	}
}

func TestGrassSetStateRejectsBadSelection(t *testing.T) {
	cfg := DefaultGrassConfig()
	cfg.Rank = 2
	o, err := NewGrass(projParams(1, [2]int{4, 3}), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		slot string
		val  float32
	}{{"grass_rows", 4}, {"grass_rows", -1}, {"grass_rows", 1.5}, {"grass_scale", 0}, {"grass_scale", float32(math.Inf(1))}} {
		st := projCopyState(o.State())
		for i := range st {
			if st[i].Name == "optim.w0."+bad.slot {
				st[i].Data[1] = bad.val
			}
		}
		if err := o.SetState(st); err == nil || !strings.Contains(err.Error(), bad.slot) {
			t.Errorf("%s = %v: error %v", bad.slot, bad.val, err)
		}
	}
}

// TestGrassDeterministicAcrossCores runs weights large enough for the
// parallel loops to split (r·n above adamGrain) with 1 and 2 cores.
func TestGrassDeterministicAcrossCores(t *testing.T) {
	run := func(procs int) []*model.Param {
		ps := projParams(9, [2]int{300, 256}, [2]int{64, 40})
		cfg := DefaultGrassConfig()
		cfg.Rank, cfg.UpdateProjGap, cfg.Selection, cfg.Replacement = 200, 2, GrassNorm, true
		withProcs(procs, func() {
			o, err := NewGrass(ps, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for step := 0; step < 5; step++ {
				grassBackward(ps, grassFullGrads(ps, step))
				o.Step(0.01)
			}
		})
		return ps
	}
	projRequireBitwise(t, run(1), run(2), "grass 1 vs 2 cores")
}

// TestGrassStateBytesGPT2Shape reports the state per weight on gpt2-shape's
// projected weights at r = m/8, where the two r×n moments are exactly
// 1 byte per weight and the indices and scales add 8r/(mn) = 1/n.
func TestGrassStateBytesGPT2Shape(t *testing.T) {
	c := mustPreset(t, "gpt2-shape")
	shapes := map[string][2]int{
		"q/k/v/o": {c.Dim, c.Dim}, "gate/up": {c.FFN, c.Dim}, "down": {c.Dim, c.FFN},
	}
	var state, weights int64
	for name, s := range shapes {
		cfg := DefaultGrassConfig()
		cfg.Rank = s[0] / 8
		b := GrassParamStateBytes(s[0], s[1], cfg)
		per := float64(b) / float64(s[0]*s[1])
		t.Logf("gpt2-shape %s [%d,%d] at r=%d: %d B, %.5f B/param", name, s[0], s[1], cfg.Rank, b, per)
		if want := 1 + 1/float64(s[1]); math.Abs(per-want) > 1e-12 {
			t.Errorf("%s: %.6f B/param, want %.6f", name, per, want)
		}
		mult := int64(4)
		if name != "q/k/v/o" {
			mult = map[string]int64{"gate/up": 2, "down": 1}[name]
		}
		state += mult * b
		weights += mult * int64(s[0]*s[1])
	}
	t.Logf("gpt2-shape, all projected weights of a block at r=m/8: %.5f B/param (AdamW: 8)", float64(state)/float64(weights))
}

// TestGradNormCountsSelectedRows: a weight whose gradient is row-selected
// (RowSel set, G nil) enters the global norm and the clipping through GSel.
func TestGradNormCountsSelectedRows(t *testing.T) {
	dense := &model.Param{Name: "a", Shape: []int{2}, G: []float32{3, 0}}
	sel := &model.Param{Name: "b", Shape: []int{4, 2}, RowSel: []int32{1, 3}, GSel: []float32{0, 4, 0, 0}}
	ps := []*model.Param{dense, sel}
	if n := GradNorm(ps); n != 5 {
		t.Fatalf("GradNorm %v, want 5", n)
	}
	ClipGradNorm(ps, 1)
	if n := GradNorm(ps); math.Abs(n-1) > 1e-6 {
		t.Fatalf("norm after clipping %v, want 1", n)
	}
	if math.Abs(float64(sel.GSel[1])-0.8) > 1e-6 {
		t.Fatalf("GSel not scaled: %v", sel.GSel)
	}
}
