package optim

import (
	"math"
	"slices"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// refAdamMini is a naive float64 transcription of Adam-mini (Zhang et al.
// 2024, Algorithm 1, reference code v1.1.1): blocks are given as explicit
// element counts per parameter, computed by the test from the role rules.
type refAdamMini struct {
	cfg   AdamMiniConfig
	block []int
	m, v  [][]float64
	t     int
}

func (r *refAdamMini) step(ps []*model.Param, w, g [][]float64, lr float64) {
	r.t++
	if r.m == nil {
		for i, p := range ps {
			r.m = append(r.m, make([]float64, len(p.W)))
			r.v = append(r.v, make([]float64, len(p.W)/r.block[i]))
		}
	}
	c := r.cfg
	bc1 := 1 - math.Pow(c.Beta1, float64(r.t))
	bc2 := 1 - math.Pow(c.Beta2, float64(r.t))
	for i, p := range ps {
		bs := r.block[i]
		for b := range r.v[i] {
			var mean float64
			for j := b * bs; j < (b+1)*bs; j++ {
				mean += g[i][j] * g[i][j] / float64(bs)
			}
			r.v[i][b] = c.Beta2*r.v[i][b] + (1-c.Beta2)*mean
			h := math.Sqrt(r.v[i][b])/math.Sqrt(bc2) + c.Eps
			for j := b * bs; j < (b+1)*bs; j++ {
				if len(p.Shape) >= 2 {
					w[i][j] *= 1 - lr*c.WeightDecay
				}
				r.m[i][j] = c.Beta1*r.m[i][j] + (1-c.Beta1)*g[i][j]
				w[i][j] -= lr / bc1 * r.m[i][j] / h
			}
		}
	}
}

func newAdamMiniT(t *testing.T, cfg AdamMiniConfig) func([]*model.Param) Optimizer {
	return func(ps []*model.Param) Optimizer {
		o, err := NewAdamMini(ps, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
}

// miniParams covers every role: a grouped-query key (2 heads of 3 rows), a
// query (4 heads), value, output, MLP, embedding and head rows, and a norm.
func miniParams() ([]*model.Param, []int) {
	mk := func(name string, role model.Role, rows, cols int) *model.Param {
		shape := []int{rows, cols}
		if cols == 0 {
			shape = []int{rows}
			cols = 1
		}
		p := &model.Param{Name: name, Role: role, Shape: shape, GlobalShape: shape, W: make([]float32, rows*cols), G: make([]float32, rows*cols)}
		for j := range p.W {
			p.W[j] = float32(0.3 * math.Cos(float64(2*j+len(name))))
		}
		return p
	}
	ps := []*model.Param{
		mk("q", model.RoleAttnQK, 12, 5), mk("k", model.RoleAttnQK, 6, 5),
		mk("v", model.RoleAttnV, 6, 5), mk("o", model.RoleAttnO, 5, 12),
		mk("up", model.RoleMLP, 7, 5), mk("emb", model.RoleEmbedding, 9, 5),
		mk("head", model.RoleHead, 9, 5), mk("norm", model.RoleNorm, 5, 0),
	}
	// Expected block sizes: heads of 3 rows × 5 columns, rows, whole norm.
	return ps, []int{15, 15, 5, 12, 5, 5, 5, 5}
}

func miniConfig() AdamMiniConfig {
	c := DefaultAdamMiniConfig()
	c.Beta2, c.WeightDecay, c.HeadDim = 0.95, 0.1, 3
	return c
}

func miniConfigV10() AdamMiniConfig {
	c := miniConfig()
	c.Partition = AdamMiniV10
	return c
}

// miniBlocksV10 are miniParams' block sizes under the v1.0 partition: heads
// of 3 rows for q and k, single elements for the embedding and head, the
// whole tensor for v, o, up and the norm.
var miniBlocksV10 = []int{15, 15, 30, 60, 35, 1, 1, 5}

// refAdamMiniV10 transcribes in float64 the step of the reference code's
// releases up to 1.0.4 (zyushun/Adam-mini adam_mini.py, Adam_mini.step)
// branch by branch, without block sizes: the embedding and output layers
// are torch AdamW; query and key keep one v per head of headDim rows; every
// other tensor keeps one v, fed with Σg²/numel. Each branch decays
// matrices by (1 − lr·λ) before the update and adds ε after bias-correcting
// √v.
type refAdamMiniV10 struct {
	cfg  AdamMiniConfig
	m, v [][]float64
	t    int
}

func (r *refAdamMiniV10) step(ps []*model.Param, w, g [][]float64, lr float64) {
	c := r.cfg
	r.t++
	if r.m == nil {
		for _, p := range ps {
			r.m = append(r.m, make([]float64, len(p.W)))
			n := 1
			switch p.Role {
			case model.RoleEmbedding, model.RoleHead:
				n = len(p.W)
			case model.RoleAttnQK:
				n = p.Shape[0] / c.HeadDim
			}
			r.v = append(r.v, make([]float64, n))
		}
	}
	bc1 := 1 - math.Pow(c.Beta1, float64(r.t))
	bc2 := 1 - math.Pow(c.Beta2, float64(r.t))
	for i, p := range ps {
		wi, gi, mi, vi := w[i], g[i], r.m[i], r.v[i]
		if len(p.Shape) >= 2 {
			for j := range wi {
				wi[j] *= 1 - lr*c.WeightDecay
			}
		}
		for j := range mi {
			mi[j] += (1 - c.Beta1) * (gi[j] - mi[j]) // m.lerp_(g, 1−β1)
		}
		// v index of element j.
		var at func(j int) int
		switch p.Role {
		case model.RoleEmbedding, model.RoleHead:
			for j := range vi {
				vi[j] = c.Beta2*vi[j] + (1-c.Beta2)*gi[j]*gi[j]
			}
			at = func(j int) int { return j }
		case model.RoleAttnQK:
			headNumel := len(gi) / len(vi)
			for h := range vi {
				var mean float64
				for _, x := range gi[h*headNumel : (h+1)*headNumel] {
					mean += x * x
				}
				vi[h] = c.Beta2*vi[h] + (1-c.Beta2)*mean/float64(headNumel)
			}
			at = func(j int) int { return j / headNumel }
		default:
			var sum float64
			for _, x := range gi {
				sum += x * x
			}
			vi[0] = c.Beta2*vi[0] + (1-c.Beta2)*sum/float64(len(gi))
			at = func(int) int { return 0 }
		}
		for j := range wi {
			h := math.Sqrt(vi[at(j)])/math.Sqrt(bc2) + c.Eps
			wi[j] -= lr / bc1 * mi[j] / h
		}
	}
}

func TestAdamMiniBlocksByRole(t *testing.T) {
	ps, want := miniParams()
	o, err := NewAdamMini(ps, miniConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range o.Blocks() {
		if n*want[i] != len(ps[i].W) {
			t.Errorf("%s (%s): %d blocks, want %d", ps[i].Name, ps[i].Role, n, len(ps[i].W)/want[i])
		}
	}
	// On a grouped-query model built by pkg/model, ForModel gives one block
	// per query head, per key/value head, per row elsewhere, one per norm.
	mc := mustPreset(t, "tiny")
	mc.KVHeads = 2
	m, err := model.New(mc, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	om, err := NewAdamMini(m.Params(), DefaultAdamMiniConfig().ForModel(mc))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range om.Blocks() {
		p := m.Params()[i]
		want := p.Shape[0]
		switch {
		case p.Role == model.RoleNorm:
			want = 1
		case p.Role == model.RoleAttnQK && contains(p.Name, "q_proj"):
			want = mc.Heads
		case p.Role == model.RoleAttnQK:
			want = mc.KVHeads
		}
		if n != want {
			t.Errorf("%s: %d blocks, want %d", p.Name, n, want)
		}
	}
	if _, err := NewAdamMini(m.Params(), DefaultAdamMiniConfig()); err == nil || !contains(err.Error(), "optimizer.adam-mini.headDim") {
		t.Errorf("attn-qk without headDim: got %v", err)
	}
	c := miniConfig()
	c.HeadDim = 4
	if _, err := NewAdamMini(ps, c); err == nil || !contains(err.Error(), "not a multiple") {
		t.Errorf("12 rows in heads of 4 work, 6 must not: got %v", err)
	}
	// v1.0: per head for query and key, per element for the embedding and
	// head, one block for everything else.
	o10, err := NewAdamMini(ps, miniConfigV10())
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range o10.Blocks() {
		if n*miniBlocksV10[i] != len(ps[i].W) {
			t.Errorf("v1.0 %s (%s): %d blocks, want %d", ps[i].Name, ps[i].Role, n, len(ps[i].W)/miniBlocksV10[i])
		}
	}
	om10, err := NewAdamMini(m.Params(), DefaultAdamMiniConfig().ForModel(mc).withPartition(AdamMiniV10))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range om10.Blocks() {
		p := m.Params()[i]
		want := 1
		switch {
		case p.Role == model.RoleEmbedding || p.Role == model.RoleHead:
			want = len(p.W)
		case p.Role == model.RoleAttnQK && contains(p.Name, "q_proj"):
			want = mc.Heads
		case p.Role == model.RoleAttnQK:
			want = mc.KVHeads
		}
		if n != want {
			t.Errorf("v1.0 %s: %d blocks, want %d", p.Name, n, want)
		}
	}
}

func (c AdamMiniConfig) withPartition(p string) AdamMiniConfig {
	c.Partition = p
	return c
}

func TestAdamMiniV10MatchesFloat64Reference(t *testing.T) {
	// miniParams has every role; adaptiveParams(true) adds value and norm
	// tensors of 76 800 elements, one block each, whose Σg² is split over
	// goroutines.
	cfg := miniConfigV10()
	for name, ps := range map[string][]*model.Param{"roles": must(miniParams), "large": adaptiveParams(true)} {
		t.Run(name, func(t *testing.T) {
			o := newAdamMiniT(t, cfg)(ps)
			ref := &refAdamMiniV10{cfg: cfg}
			w := adaWeights64(ps)
			for s := 0; s < 20; s++ {
				adaSetGrads(ps, s)
				lr := 1e-2 * (1 + 0.1*float64(s%3))
				o.Step(lr)
				ref.step(ps, w, adaGrads64(ps), lr)
			}
			// Same bound as the v1.1 reference test (20 steps ≤ 1.3e-2 each).
			if d := adaMaxDiff(ps, w); d > 1e-5 {
				t.Errorf("max |float32 − float64| = %g", d)
			}
		})
	}
}

func must[T, U any](f func() (T, U)) T {
	v, _ := f()
	return v
}

func TestAdamMiniOneElementBlocksEqualAdamW(t *testing.T) {
	// optimizers.md §13.4: with one element per block the block mean of g²
	// is g², so Adam-mini is torch AdamW. Shapes [k,1] make every per-row
	// and per-head block one element; a one-element norm is one block.
	mk := func(name string, role model.Role, shape ...int) *model.Param {
		n := shape[0]
		return &model.Param{Name: name, Role: role, Shape: shape, W: make([]float32, n), G: make([]float32, n)}
	}
	build := func() []*model.Param {
		ps := []*model.Param{mk("q", model.RoleAttnQK, 4, 1), mk("v", model.RoleAttnV, 3, 1), mk("mlp", model.RoleMLP, 5, 1),
			mk("emb", model.RoleEmbedding, 6, 1), mk("head", model.RoleHead, 6, 1), mk("norm", model.RoleNorm, 1)}
		for i, p := range ps {
			for j := range p.W {
				p.W[j] = float32(math.Sin(float64(i*7 + j)))
			}
		}
		return ps
	}
	a, b := build(), build()
	cfg := miniConfig()
	cfg.HeadDim = 1
	om, err := NewAdamMini(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	oa, _ := NewAdamW(b, AdamWConfig{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.Eps, WeightDecay: cfg.WeightDecay})
	for s := 0; s < 20; s++ {
		adaSetGrads(a, s)
		adaSetGrads(b, s)
		lr := 1e-2 * (1 + 0.1*float64(s%3))
		om.Step(lr)
		oa.Step(lr)
	}
	// Same float32 operations in the same order: equal to within an ulp or
	// two of the O(1) weights (2.4e-7).
	if d := adaMaxDiff(a, adaWeights64(b)); d > 2.4e-7 {
		t.Errorf("Adam-mini with one-element blocks differs from AdamW by %g", d)
	}
}

func TestAdamMiniEqualMagnitudeBlocksEqualAdamW(t *testing.T) {
	// optimizers.md §13.3: if |g| is constant within every block, the block
	// mean of g² equals each g², so Adam-mini equals AdamW at any block size.
	a, _ := miniParams()
	b, _ := miniParams()
	om, err := NewAdamMini(a, miniConfig())
	if err != nil {
		t.Fatal(err)
	}
	cfg := miniConfig()
	oa, _ := NewAdamW(b, AdamWConfig{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.Eps, WeightDecay: cfg.WeightDecay})
	_, blocks := miniParams()
	for s := 0; s < 10; s++ {
		for _, ps := range [][]*model.Param{a, b} {
			for i, p := range ps {
				for j := range p.G {
					mag := 0.01 * float32(1+(j/blocks[i]+s)%5)
					p.G[j] = mag * float32(1-2*((j*j+s)%2))
				}
			}
		}
		om.Step(1e-2)
		oa.Step(1e-2)
	}
	if d := adaMaxDiff(a, adaWeights64(b)); d > 2.4e-7 {
		t.Errorf("equal-magnitude blocks differ from AdamW by %g", d)
	}
}

func TestAdamMiniGolden(t *testing.T) {
	// optimizers.md §13.5: per-row blocks, lr 1e-3, ε 1e-8, λ 0, two steps.
	p := &model.Param{Name: "w", Role: model.RoleMLP, Shape: []int{2, 2}, W: []float32{0.1, 0.2, 0.3, 0.4}, G: make([]float32, 4)}
	o, err := NewAdamMini([]*model.Param{p}, DefaultAdamMiniConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range [][]float32{{1, -2, 0.5, 0.25}, {-0.5, 1, 2, -1}} {
		copy(p.G, g)
		o.Step(1e-3)
	}
	want := []float64{0.0991990981391954, 0.201601803721609, 0.297616431369907, 0.399721405560893}
	for j := range want {
		if d := math.Abs(float64(p.W[j]) - want[j]); d > 1e-7 {
			t.Errorf("W2[%d] = %v, want %v", j, p.W[j], want[j])
		}
	}
}

func TestAdamMiniMatchesFloat64Reference(t *testing.T) {
	ps, blocks := miniParams()
	cfg := miniConfig()
	o := newAdamMiniT(t, cfg)(ps)
	ref := &refAdamMini{cfg: cfg, block: blocks}
	w := adaWeights64(ps)
	for s := 0; s < 20; s++ {
		adaSetGrads(ps, s)
		lr := 1e-2 * (1 + 0.1*float64(s%3))
		o.Step(lr)
		ref.step(ps, w, adaGrads64(ps), lr)
	}
	// Same bound as the AdamW reference test (20 steps ≤ 1.3e-2 each).
	if d := adaMaxDiff(ps, w); d > 1e-5 {
		t.Errorf("max |float32 − float64| = %g", d)
	}
}

func TestAdamMiniStateAndBytes(t *testing.T) {
	_, blocksV11 := miniParams()
	for _, c := range []struct {
		cfg    AdamMiniConfig
		blocks []int
	}{{miniConfig(), blocksV11}, {miniConfigV10(), miniBlocksV10}} {
		t.Run(c.cfg.Partition, func(t *testing.T) {
			adaCheckRoundTrip(t, newAdamMiniT(t, c.cfg))
			adaCheckDeterministic(t, newAdamMiniT(t, c.cfg))
			ps, _ := miniParams()
			o := newAdamMiniT(t, c.cfg)(ps)
			want := int64(2)
			for i, p := range ps {
				want += int64(len(p.W) + len(p.W)/c.blocks[i])
			}
			if got := o.StateBytes(); got != 4*want || adaStateFloats(o) != want {
				t.Errorf("StateBytes %d (exported %d floats), want %d bytes", got, adaStateFloats(o), 4*want)
			}
		})
	}
	// State of one partition does not load into the other.
	a, _ := miniParams()
	b, _ := miniParams()
	if err := newAdamMiniT(t, miniConfigV10())(b).SetState(newAdamMiniT(t, miniConfig())(a).State()); err == nil {
		t.Error("v1.1 state loaded into a v1.0 optimizer")
	}
	// An unset partition is v1.1.
	c := miniConfig()
	c.Partition = ""
	ps, _ := miniParams()
	blocks := func(c AdamMiniConfig) []int {
		o, err := NewAdamMini(ps, c)
		if err != nil {
			t.Fatal(err)
		}
		return o.Blocks()
	}
	if got := blocks(c); !slices.Equal(got, blocks(miniConfig())) {
		t.Errorf("partition \"\" gives blocks %v, not v1.1's", got)
	}
	// A whole-tensor block of a row shard is refused (its mean needs the
	// other shards); per-row blocks of the same shard are not.
	shard := &model.Param{Name: "up", Role: model.RoleMLP, Shape: []int{2, 4}, GlobalShape: []int{6, 4}, W: make([]float32, 8), G: make([]float32, 8)}
	if _, err := NewAdamMini([]*model.Param{shard}, miniConfigV10()); err == nil || !contains(err.Error(), "shard") {
		t.Errorf("v1.0 on a shard of an MLP weight: got %v", err)
	}
	if _, err := NewAdamMini([]*model.Param{shard}, miniConfig()); err != nil {
		t.Errorf("v1.1 on a shard of an MLP weight: %v", err)
	}
	ps, _ = miniParams()
	for field, mut := range map[string]func(*AdamMiniConfig){
		"beta1":       func(c *AdamMiniConfig) { c.Beta1 = 1 },
		"beta2":       func(c *AdamMiniConfig) { c.Beta2 = -0.5 },
		"eps":         func(c *AdamMiniConfig) { c.Eps = 0 },
		"weightDecay": func(c *AdamMiniConfig) { c.WeightDecay = math.NaN() },
		"headDim":     func(c *AdamMiniConfig) { c.HeadDim = -3 },
		"partition":   func(c *AdamMiniConfig) { c.Partition = "v2" },
	} {
		c := miniConfig()
		mut(&c)
		if _, err := NewAdamMini(ps, c); err == nil || !contains(err.Error(), "optimizer.adam-mini."+field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
	if _, err := NewAdamMini(ps, miniConfig().withPartition("paper")); err == nil || !contains(err.Error(), `must be one of v1.1, v1.0, got "paper"`) {
		t.Errorf("unknown partition: got %v", err)
	}
}

func TestAdamMiniTrainsTiny(t *testing.T) {
	if raceEnabled {
		t.Skip("training run: covered by the plain (non-race) pass of make test")
	}
	// The README asks for AdamW's hyperparameters; at AdamW's lr 1e-2 and
	// schedule Adam-mini reaches ≈0.07 against AdamW's ≈0.06 (see
	// TestAdafactorTrainsTiny), so the same 0.5 bound applies.
	mc := mustPreset(t, "tiny")
	cfg := AdamMiniConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}.ForModel(mc)
	sched, _ := NewSchedule("cosine", 1e-2, 1e-3, 20, 200)
	loss := adaTrainTiny(t, 200, sched, newAdamMiniT(t, cfg))
	t.Logf("tiny, 200 steps, lr 1e-2 cosine: adam-mini %.3f", loss)
	if loss > 0.5 {
		t.Errorf("train loss %.3f, want < 0.5", loss)
	}
}
