package optim

import (
	"math"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

func apolloTestConfig(scaleType string, rank int) ApolloConfig {
	c := DefaultApolloConfig()
	c.Rank, c.ScaleType, c.UpdateProjGap, c.WeightDecay, c.Seed = rank, scaleType, 3, 0.1, 42
	if scaleType == ApolloTensor {
		c.Scale = 128
	}
	return c
}

func TestApolloConfigValidation(t *testing.T) {
	ps := projParams(1, [2]int{3, 4})
	cases := []struct {
		edit func(*ApolloConfig)
		want string
	}{
		{func(c *ApolloConfig) { c.Rank = -1 }, "optimizer.apollo.rank"},
		{func(c *ApolloConfig) { c.UpdateProjGap = 0 }, "optimizer.apollo.updateProjGap"},
		{func(c *ApolloConfig) { c.Scale = -2 }, "optimizer.apollo.scale"},
		{func(c *ApolloConfig) { c.ScaleType = "element" }, "optimizer.apollo.scaleType"},
		{func(c *ApolloConfig) { c.Beta1 = math.NaN() }, "optimizer.apollo.beta1"},
		{func(c *ApolloConfig) { c.Beta2 = 1 }, "optimizer.apollo.beta2"},
		{func(c *ApolloConfig) { c.Eps = -1 }, "optimizer.apollo.eps"},
		{func(c *ApolloConfig) { c.WeightDecay = -1 }, "optimizer.apollo.weightDecay"},
	}
	for _, tc := range cases {
		c := DefaultApolloConfig()
		tc.edit(&c)
		if _, err := NewApollo(ps, c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want error naming %s", err, tc.want)
		}
	}
	short := projParams(1, [2]int{3, 4})
	short[0].G = short[0].G[:5]
	if _, err := NewApollo(short, DefaultApolloConfig()); err == nil || !strings.Contains(err.Error(), "gradients") {
		t.Errorf("short gradient: got %v", err)
	}
	if got := mustApollo(t, ps, DefaultApolloMiniConfig()).Name(); got != "apollo-mini" {
		t.Errorf("mini name %q", got)
	}
}

func mustApollo(t *testing.T, ps []*model.Param, c ApolloConfig) *Apollo {
	t.Helper()
	o, err := NewApollo(ps, c)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestApolloFirstStepClosedForm checks step 1 with r = 1 against
// optimizers.md §13.3: channel-wise, ΔW = −lr·√scale·G/|R_c| per channel c
// of the kept side (columns when m < n, rows when m ≥ n); tensor-wise
// (APOLLO-Mini), ΔW = −lr·√scale·√numel(R)·G/‖R‖_F. Both hold up to the
// ε = 1e-6 of the inner Adam, at most ε/(√(1−β2)·min|R_c|) relative.
func TestApolloFirstStepClosedForm(t *testing.T) {
	for _, tc := range []struct {
		scaleType string
		m, n      int
	}{{ApolloChannel, 3, 5}, {ApolloChannel, 5, 3}, {ApolloTensor, 3, 5}, {ApolloTensor, 6, 4}} {
		ps := projParams(2, [2]int{tc.m, tc.n})
		projGrads(ps, 0, 1)
		p := ps[0]
		cfg := apolloTestConfig(tc.scaleType, 1)
		cfg.WeightDecay = 0
		o := mustApollo(t, ps, cfg)
		l := o.lay[0]
		q := make([]float32, l.qSize())
		o.gen(q, 0, 0)
		r := make([]float64, l.dd) // R, one value per channel since r = 1
		for i := 0; i < tc.m; i++ {
			for j := 0; j < tc.n; j++ {
				if l.left {
					r[j] += float64(q[i]) * float64(p.G[i*tc.n+j])
				} else {
					r[i] += float64(q[j]) * float64(p.G[i*tc.n+j])
				}
			}
		}
		rF, minR := 0.0, math.Inf(1)
		for _, x := range r {
			rF += x * x
			minR = min(minR, math.Abs(x))
		}
		rF = math.Sqrt(rF)
		// ε shifts each |N_c| by at most ε/(√(1−β2)·|R_c|) relative.
		relTol := 1e-6 + 2*cfg.Eps/(math.Sqrt(1-cfg.Beta2)*minR)
		w0 := projTo64(p.W)
		const lr = 0.01
		o.Step(lr)
		for i := 0; i < tc.m; i++ {
			for j := 0; j < tc.n; j++ {
				c := i
				if l.left {
					c = j
				}
				g := float64(p.G[i*tc.n+j])
				want := w0[i*tc.n+j] - lr*math.Sqrt(cfg.Scale)*g/math.Abs(r[c])
				if tc.scaleType == ApolloTensor {
					want = w0[i*tc.n+j] - lr*math.Sqrt(cfg.Scale)*math.Sqrt(float64(len(r)))*g/rF
				}
				got := float64(p.W[i*tc.n+j])
				if d := math.Abs(got - want); d > relTol*math.Abs(want-w0[i*tc.n+j])+1e-7 {
					t.Errorf("%s %d×%d W[%d,%d]: moved %g, want %g", tc.scaleType, tc.m, tc.n, i, j, got-w0[i*tc.n+j], want-w0[i*tc.n+j])
				}
			}
		}
	}
}

// apolloRef is a float64 transcription of apollo_torch/apollo.py AdamW.step
// for one weight, with the projection P taken from the optimizer's generator.
type apolloRef struct {
	cfg      ApolloConfig
	m, n     int
	mom, vel []float64
	prev     float64
	hasPrev  bool
	t        int
}

// step applies one update; q is the r×d projection in tern's layout, which
// it reads as the reference's P (r×n on the right, m×r = qᵀ on the left).
func (a *apolloRef) step(w []float64, g32 []float32, q []float32, lr float64) {
	g := projTo64(g32)
	m, n := a.m, a.n
	r := min(a.cfg.Rank, m, n)
	left := m < n
	var low []float64 // left: r×n; right: m×r
	if left {
		low = make([]float64, r*n)
		for k := 0; k < r; k++ {
			for j := 0; j < n; j++ {
				for i := 0; i < m; i++ {
					low[k*n+j] += float64(q[k*m+i]) * g[i*n+j]
				}
			}
		}
	} else {
		low = make([]float64, m*r)
		for i := 0; i < m; i++ {
			for k := 0; k < r; k++ {
				for j := 0; j < n; j++ {
					low[i*r+k] += g[i*n+j] * float64(q[k*n+j])
				}
			}
		}
	}
	if a.mom == nil {
		a.mom, a.vel = make([]float64, len(low)), make([]float64, len(low))
	}
	a.t++
	b1, b2 := a.cfg.Beta1, a.cfg.Beta2
	nrm := make([]float64, len(low))
	for k := range low {
		a.mom[k] = b1*a.mom[k] + (1-b1)*low[k]
		a.vel[k] = b2*a.vel[k] + (1-b2)*low[k]*low[k]
		nrm[k] = a.mom[k] / (math.Sqrt(a.vel[k]) + a.cfg.Eps)
	}
	stepSize := lr * math.Sqrt(1-math.Pow(b2, float64(a.t))) / (1 - math.Pow(b1, float64(a.t)))
	// Scaling factor per element of G.
	factor := make([]float64, m*n)
	if a.cfg.ScaleType == ApolloTensor {
		s := frob(nrm) / (frob(low) + 1e-8)
		for k := range factor {
			factor[k] = s
		}
	} else if left { // norm over dim 0 of the r×n matrices: one per column
		for j := 0; j < n; j++ {
			var sn, sr float64
			for k := 0; k < r; k++ {
				sn += nrm[k*n+j] * nrm[k*n+j]
				sr += low[k*n+j] * low[k*n+j]
			}
			for i := 0; i < m; i++ {
				factor[i*n+j] = math.Sqrt(sn) / (math.Sqrt(sr) + 1e-8)
			}
		}
	} else { // norm over dim 1 of the m×r matrices: one per row
		for i := 0; i < m; i++ {
			s := frob(nrm[i*r:(i+1)*r]) / (frob(low[i*r:(i+1)*r]) + 1e-8)
			for j := 0; j < n; j++ {
				factor[i*n+j] = s
			}
		}
	}
	sg := make([]float64, m*n)
	for k := range sg {
		sg[k] = g[k] * factor[k]
		if a.cfg.ScaleFront {
			sg[k] *= math.Sqrt(a.cfg.Scale)
		}
	}
	if !a.cfg.DisableNL {
		norm := frob(sg)
		if a.hasPrev {
			limiter := math.Max(norm/(a.prev+1e-8), 1.01) / 1.01
			for k := range sg {
				sg[k] /= limiter
			}
			a.prev = norm / limiter
		} else {
			a.prev, a.hasPrev = norm, true
		}
	}
	for k := range w {
		u := sg[k]
		if !a.cfg.ScaleFront {
			u *= math.Sqrt(a.cfg.Scale)
		}
		w[k] -= stepSize * u
		w[k] -= lr * a.cfg.WeightDecay * w[k]
	}
}

func frob(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v * v
	}
	return math.Sqrt(s)
}

func TestApolloMatchesFloat64Reference(t *testing.T) {
	for _, tc := range []struct {
		name       string
		scaleType  string
		rank       int
		scaleFront bool
	}{
		{"channel", ApolloChannel, 2, false},
		{"channel-front", ApolloChannel, 3, true},
		{"mini", ApolloTensor, 1, true},
		{"tensor-back", ApolloTensor, 2, false},
	} {
		cfg := apolloTestConfig(tc.scaleType, tc.rank)
		cfg.ScaleFront = tc.scaleFront
		ps := projParams(3, [2]int{4, 9}, [2]int{9, 4}, [2]int{6, 6})
		o := mustApollo(t, ps, cfg)
		refs := make([]*apolloRef, len(ps))
		w64 := make([][]float64, len(ps))
		for i, p := range ps {
			refs[i] = &apolloRef{cfg: cfg, m: p.Shape[0], n: p.Shape[1]}
			w64[i] = projTo64(p.W)
		}
		// 9 steps, new projections at t = 0, 3, 6; the gradient scale jumps
		// ×4 at step 5 so the limiter acts.
		for s := 0; s < 9; s++ {
			gain := 0.1
			if s >= 4 {
				gain = 0.4
			}
			projGrads(ps, s, gain)
			lr := 0.01 * (1 + 0.1*float64(s%3))
			qs := make([][]float32, len(ps))
			for i := range ps {
				qs[i] = make([]float32, o.lay[i].qSize())
				o.gen(qs[i], i, int64(s/cfg.UpdateProjGap))
			}
			o.Step(lr)
			for i, p := range ps {
				refs[i].step(w64[i], p.G, qs[i], lr)
			}
		}
		// O(1) weights moving by up to 9·lr·√scale ≈ 1 (Mini): float32
		// arithmetic gives a relative error of a few 1e-7 of the movement.
		if d, where := projMaxDiff(ps, w64); d > 2e-6*math.Sqrt(cfg.Scale) {
			t.Errorf("%s: max |W − W_ref| = %g (in %s), want ≤ %g", tc.name, d, where, 2e-6*math.Sqrt(cfg.Scale))
		}
		for i := range ps {
			if d := math.Abs(float64(o.prev[i])-refs[i].prev) / refs[i].prev; d > 1e-5 {
				t.Errorf("%s: limiter norm %v, reference %v", tc.name, o.prev[i], refs[i].prev)
			}
		}
	}
}

// TestApolloVectorIsAdamW is the limiting case where APOLLO's channel-wise
// scaling becomes Adam's element-wise one: a 1×n (or n×1) weight with r = 1
// and P = [1] has one element per channel and R = G, so
// G_c·‖N_c‖/‖R_c‖ = sign(G_c)·|N_c|, which is the Hugging Face AdamW update
// N_c whenever the moment has the gradient's sign (here: gradients of a
// fixed sign per element). With scale 1 and the limiter off, APOLLO then
// matches AdamW step for step.
func TestApolloVectorIsAdamW(t *testing.T) {
	for _, shape := range [][2]int{{1, 7}, {7, 1}} {
		cfg := apolloTestConfig(ApolloChannel, 1)
		cfg.Scale, cfg.DisableNL, cfg.UpdateProjGap = 1, true, 4
		ps := projParams(4, shape)
		adamPs := projClone(ps)
		o := mustApollo(t, ps, cfg)
		o.gen = func(q []float32, i int, refresh int64) { q[0] = 1 }
		adam, err := NewAdamW(adamPs, AdamWConfig{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.Eps, WeightDecay: cfg.WeightDecay, Convention: AdamWHF})
		if err != nil {
			t.Fatal(err)
		}
		ref := &hfAdamRef{b1: cfg.Beta1, b2: cfg.Beta2, eps: cfg.Eps, wd: cfg.WeightDecay}
		w64 := projTo64(ps[0].W)
		for s := 0; s < 12; s++ {
			projGrads(ps, s, 0.3)
			for j, g := range ps[0].G {
				ps[0].G[j] = float32(math.Abs(float64(g))+0.05) * float32(1-2*(j%2))
			}
			copy(adamPs[0].G, ps[0].G)
			o.Step(0.01)
			adam.Step(0.01)
			ref.step(w64, projTo64(ps[0].G), 0.01)
		}
		if d, _ := projMaxDiff(ps, [][]float64{w64}); d > 1e-6 {
			t.Errorf("%v: max |W_apollo − W_adamw(float64)| = %g, want ≤ 1e-6", shape, d)
		}
		for j := range ps[0].W {
			if d := math.Abs(float64(ps[0].W[j] - adamPs[0].W[j])); d > 1e-6 {
				t.Errorf("%v: W[%d] = %v, AdamW (hf) gives %v", shape, j, ps[0].W[j], adamPs[0].W[j])
			}
		}
	}
}

// TestApolloNormGrowthLimiter: with gradients growing ×3 per step, the
// update norm may grow by at most γ = 1.01 per step (Fira §4.2).
func TestApolloNormGrowthLimiter(t *testing.T) {
	cfg := apolloTestConfig(ApolloChannel, 2)
	cfg.WeightDecay = 0
	ps := projParams(5, [2]int{6, 10})
	o := mustApollo(t, ps, cfg)
	var prevUpdate float64
	for s := 0; s < 6; s++ {
		projGrads(ps, s, 0.01*math.Pow(3, float64(s)))
		before := projTo64(ps[0].W)
		o.Step(0.01)
		bc1 := 1 - math.Pow(cfg.Beta1, float64(s+1))
		bc2 := 1 - math.Pow(cfg.Beta2, float64(s+1))
		// ‖G̃‖ recovered from the update: ΔW = lr·√bc2/bc1·√scale·G̃.
		var u2 float64
		for j, w := range ps[0].W {
			d := before[j] - float64(w)
			u2 += d * d
		}
		update := math.Sqrt(u2) / (0.01 * math.Sqrt(bc2) / bc1 * math.Sqrt(cfg.Scale))
		if math.Abs(update-float64(o.prev[0])) > 1e-4*update {
			t.Errorf("step %d: update norm %g, limiter records %g", s+1, update, o.prev[0])
		}
		if s > 0 && update > apolloNLGamma*prevUpdate*(1+1e-4) {
			t.Errorf("step %d: update norm grew from %g to %g, more than ×1.01", s+1, prevUpdate, update)
		}
		prevUpdate = update
	}
}

// TestApolloScaleFrontOnlyMovesEpsilons: the limiter's ratio is invariant
// to a constant factor, so applying √scale before or after it differs only
// through the 1e-8 guards (optimizers.md §13.4).
func TestApolloScaleFrontOnlyMovesEpsilons(t *testing.T) {
	cfg := apolloTestConfig(ApolloTensor, 1)
	a := projParams(6, [2]int{5, 8}, [2]int{8, 5})
	b := projClone(a)
	oa := mustApollo(t, a, cfg)
	cfg.ScaleFront = !cfg.ScaleFront
	ob := mustApollo(t, b, cfg)
	for s := 0; s < 7; s++ {
		projGrads(a, s, 0.1*float64(1+s))
		projGrads(b, s, 0.1*float64(1+s))
		oa.Step(0.01)
		ob.Step(0.01)
	}
	for i := range a {
		for j := range a[i].W {
			if d := math.Abs(float64(a[i].W[j] - b[i].W[j])); d > 1e-6 {
				t.Fatalf("%s[%d]: %v vs %v", a[i].Name, j, a[i].W[j], b[i].W[j])
			}
		}
	}
}

// TestApolloProjectionSeeds: two optimizers built with the same job seed
// (two data-parallel ranks) draw identical projections for every parameter
// and refresh without communicating, and step to bitwise-identical weights;
// another seed, name or refresh index gives another projection.
func TestApolloProjectionSeeds(t *testing.T) {
	cfg := apolloTestConfig(ApolloChannel, 4)
	rank0 := projParams(7, [2]int{12, 20}, [2]int{20, 12})
	rank1 := projClone(rank0)
	o0, o1 := mustApollo(t, rank0, cfg), mustApollo(t, rank1, cfg)
	q0, q1 := make([]float32, o0.lay[0].qSize()), make([]float32, o0.lay[0].qSize())
	for refresh := int64(0); refresh < 3; refresh++ {
		o0.gen(q0, 0, refresh)
		o1.gen(q1, 0, refresh)
		for j := range q0 {
			if math.Float32bits(q0[j]) != math.Float32bits(q1[j]) {
				t.Fatalf("refresh %d: projections differ at %d", refresh, j)
			}
		}
	}
	for s := 0; s < 7; s++ {
		projGrads(rank0, s, 0.2)
		projGrads(rank1, s, 0.2)
		o0.Step(0.01)
		o1.Step(0.01)
	}
	projRequireBitwise(t, rank0, rank1, "same seed")

	draw := func(seed uint64, name string, refresh int64) []float32 {
		q := make([]float32, 64)
		fillGaussian(q, projectionSeed(seed, name, refresh), 1)
		return q
	}
	base := draw(42, "model.layers.0.mlp.up_proj.weight", 1)
	for _, other := range [][]float32{
		draw(43, "model.layers.0.mlp.up_proj.weight", 1),
		draw(42, "model.layers.1.mlp.up_proj.weight", 1),
		draw(42, "model.layers.0.mlp.up_proj.weight", 2),
	} {
		same := 0
		for j := range base {
			if base[j] == other[j] {
				same++
			}
		}
		if same > 0 {
			t.Errorf("%d of 64 projection entries repeat across seeds, names or refreshes", same)
		}
	}
}

// TestApolloProjectionIsGaussian: the entries are N(0, 1/r) as in the
// reference; over 2^16 draws the mean and variance sit within 5 standard
// errors.
func TestApolloProjectionIsGaussian(t *testing.T) {
	const n, r = 1 << 16, 4
	q := make([]float32, n)
	fillGaussian(q, projectionSeed(1, "w", 0), 1/math.Sqrt(r))
	var s, s2, s4 float64
	for _, x := range q {
		v := float64(x)
		s += v
		s2 += v * v
		s4 += v * v * v * v
	}
	mean, variance := s/n, s2/n
	if math.Abs(mean) > 5*math.Sqrt(1.0/r/n) {
		t.Errorf("mean %g", mean)
	}
	if math.Abs(variance-1.0/r) > 5*math.Sqrt(2.0/n)/r {
		t.Errorf("variance %g, want %g", variance, 1.0/r)
	}
	if k := s4 / n / (variance * variance); math.Abs(k-3) > 0.1 { // Gaussian kurtosis
		t.Errorf("kurtosis %g, want 3", k)
	}
}

func TestApolloStateRoundTrip(t *testing.T) {
	for _, cfg := range []ApolloConfig{apolloTestConfig(ApolloChannel, 3), apolloTestConfig(ApolloTensor, 1)} {
		a := projParams(8, [2]int{8, 12}, [2]int{12, 8})
		b := projClone(a)
		oa := mustApollo(t, a, cfg)
		other := cfg
		other.Seed = 7 // the state's seed must win
		ob := mustApollo(t, b, other)
		for s := 0; s < 4; s++ {
			projGrads(a, s, 0.3)
			oa.Step(0.02)
		}
		for i := range a {
			copy(b[i].W, a[i].W)
		}
		if err := ob.SetState(projCopyState(oa.State())); err != nil {
			t.Fatal(err)
		}
		for s := 4; s < 9; s++ { // crosses the refresh at t = 6
			projGrads(a, s, 0.3)
			projGrads(b, s, 0.3)
			oa.Step(0.02)
			ob.Step(0.02)
		}
		projRequireBitwise(t, a, b, "after restore")
		if got, want := oa.StateBytes(), 4*projStateFloats(oa.State()); got != want {
			t.Errorf("StateBytes = %d, exported state holds %d bytes", got, want)
		}
		r := int64(min(cfg.Rank, 8))
		if got, want := oa.StateBytes(), 2*4*(2*r*12+1)+24; got != want {
			t.Errorf("StateBytes = %d, want %d", got, want)
		}
		st := oa.State()
		bad := projCopyState(st)
		bad[len(bad)-1].Data[0] = 1.5
		if err := ob.SetState(bad); err == nil || !strings.Contains(err.Error(), "seed") {
			t.Errorf("bad seed: got %v", err)
		}
		if err := ob.SetState(st[1:]); err == nil {
			t.Error("missing tensor accepted")
		}
	}
}

func TestApolloDeterministicAcrossProcs(t *testing.T) {
	for _, cfg := range []ApolloConfig{apolloTestConfig(ApolloChannel, 48), apolloTestConfig(ApolloTensor, 1)} {
		base := projParams(9, [2]int{160, 700}, [2]int{700, 160})
		run := func(procs int) []*model.Param {
			ps := projClone(base)
			withProcs(procs, func() {
				o := mustApollo(t, ps, cfg)
				for s := 0; s < 4; s++ {
					projGrads(ps, s, 0.1)
					o.Step(0.01)
				}
			})
			return ps
		}
		projRequireBitwise(t, run(1), run(2), "GOMAXPROCS 1 vs 2")
	}
}

func TestSeedSplit(t *testing.T) {
	for _, s := range []uint64{0, 1, 42, 1<<63 + 12345, math.MaxUint64} {
		got, err := joinSeed(splitSeed(s))
		if err != nil || got != s {
			t.Errorf("%d: got %d, %v", s, got, err)
		}
	}
}
