package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/tensor"
)

// testConfig is small enough for finite differences on the float64
// reference yet exercises every feature: several heads, grouped-query
// attention (KVHeads < Heads), two blocks.
func testConfig() Config {
	return Config{Vocab: 40, Dim: 16, Layers: 2, Heads: 4, KVHeads: 2, FFN: 24, SeqLen: 16, RopeTheta: 10000, NormEps: 1e-5, Tokenizer: "byte"}
}

// testBatch returns B×T tokens and next-token targets with one ignored target.
func testBatch(c Config, b, t int, seed uint64) (tokens, targets []int32) {
	r := rand.New(rand.NewPCG(seed, 99))
	tokens, targets = make([]int32, b*t), make([]int32, b*t)
	for i := range tokens {
		tokens[i] = int32(r.IntN(c.Vocab))
		targets[i] = int32(r.IntN(c.Vocab))
	}
	targets[3] = -1
	return tokens, targets
}

// perturb replaces the initial weights with larger random ones (and norm
// gains away from 1) so every nonlinearity is exercised by the checks.
func perturb(ps []*Param, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 7))
	for _, p := range ps {
		for i := range p.W {
			if p.Role == RoleNorm {
				p.W[i] = float32(1 + 0.3*r.NormFloat64())
			} else {
				p.W[i] = float32(0.4 * r.NormFloat64())
			}
		}
	}
}

func weights64(ps []*Param) map[string][]float64 {
	m := map[string][]float64{}
	for _, p := range ps {
		m[p.Name] = to64(p.W)
	}
	return m
}

func grads(ps []*Param) map[string][]float32 {
	m := map[string][]float32{}
	for _, p := range ps {
		m[p.Name] = append([]float32(nil), p.G...)
	}
	return m
}

func TestModelMatchesFloat64Reference(t *testing.T) {
	tiny, err := Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	tiny.SeqLen = 16
	for _, tc := range []struct {
		name string
		c    Config
	}{{"gqa", testConfig()}, {"tiny", tiny}} {
		t.Run(tc.name, func(t *testing.T) { checkModelAgainstReference(t, tc.c) })
	}
}

func checkModelAgainstReference(t *testing.T, c Config) {
	const b, tt = 2, 16
	m, err := New(c, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	perturb(m.Params(), 2)
	tokens, targets := testBatch(c, b, tt, 3)
	const scale = 0.25
	m.ZeroGrad()
	loss, count := m.ForwardBackward(tokens, targets, b, tt, scale)
	if count != b*tt-1 {
		t.Fatalf("count %d, want %d", count, b*tt-1)
	}
	w := weights64(m.Params())
	ref := func() float64 { return scale * refModelLoss(c, w, tokens, targets, b, tt) }
	want := ref() / scale
	// The float32 forward pass rounds ~1e-7 per operation over a few dozen
	// sequential operations; 1e-5 relative is ample and still catches any
	// modelling difference (those move the loss by far more).
	if math.Abs(loss-want) > 1e-5*want {
		t.Fatalf("loss %.9g, float64 reference %.9g", loss, want)
	}
	if l2, c2 := m.Loss(tokens, targets, b, tt); l2 != loss || c2 != count {
		t.Fatalf("Loss() = %v,%d; ForwardBackward gave %v,%d", l2, c2, loss, count)
	}
	r := rand.New(rand.NewPCG(4, 5))
	for _, p := range m.Params() {
		// 12 random coordinates of every parameter; embedding rows of tokens
		// absent from the batch have zero gradient, so sample present ones.
		idx := sample(r, len(p.W), 12)
		if p.Role == RoleEmbedding {
			for j := range idx {
				idx[j] = int(tokens[r.IntN(len(tokens))])*c.Dim + r.IntN(c.Dim)
			}
		}
		gradCheck(t, p.Name, ref, w[p.Name], p.G, idx, 1e-4)
	}
}

func TestShardedStagesEqualSingleStage(t *testing.T) {
	c := testConfig()
	const b, tt, seed = 2, 16, 11
	tokens, targets := testBatch(c, b, tt, 12)
	n, d := b*tt, c.Dim

	full, err := New(c, seed, false)
	if err != nil {
		t.Fatal(err)
	}
	lossFull, countFull := full.ForwardBackward(tokens, targets, b, tt, 1)

	// Blocks cut in two pipeline stages; embedding in three row shards and
	// the head in two, spread over the stages as vocabulary parallelism does.
	specs := []StageSpec{
		{FirstLayer: 0, EndLayer: 1, Embed: RowRange{0, 13}, Head: RowRange{0, 0}},
		{FirstLayer: 1, EndLayer: 2, Embed: RowRange{13, 27}, Head: RowRange{0, 22}, FinalNorm: true},
		{Embed: RowRange{27, 40}, Head: RowRange{22, 40}},
	}
	st := make([]*Stage, len(specs))
	acts := make([]*Acts, len(specs))
	for i, sp := range specs {
		if st[i], err = NewStage(c, sp, seed); err != nil {
			t.Fatal(err)
		}
		acts[i] = st[i].NewActs(b, tt)
	}

	// Init is bitwise identical to the single stage.
	fullW := map[string]*Param{}
	for _, p := range full.Params() {
		fullW[p.Name] = p
	}
	for _, s := range st {
		for _, p := range s.Params() {
			fp := fullW[p.Name]
			cols := len(fp.W) / fp.Shape[0]
			want := fp.W[p.RowOffset*cols : p.RowOffset*cols+len(p.W)]
			for i := range p.W {
				if math.Float32bits(p.W[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s rows from %d: init differs at %d", p.Name, p.RowOffset, i)
				}
			}
		}
	}

	x, part := make([]float32, n*d), make([]float32, n*d)
	for _, s := range st {
		s.EmbedForward(tokens, part)
		tensor.Add(x, x, part)
	}
	h1 := st[0].BlocksForward(acts[0], x)
	h2 := st[1].BlocksForward(acts[1], h1)
	stats := []HeadStats{st[1].HeadForward(acts[1], h2, targets), st[2].HeadForward(acts[2], h2, targets)}
	gMax, gSum := make([]float32, n), make([]float32, n)
	loss, count := CombineHeadStats(stats, gMax, gSum)
	dh := make([]float32, n*d)
	st[1].HeadBackward(acts[1], h2, targets, gMax, gSum, 1, dh)
	st[2].HeadBackward(acts[2], h2, targets, gMax, gSum, 1, dh)
	dx1 := st[1].BlocksBackward(acts[1], dh)
	dx0 := st[0].BlocksBackward(acts[0], dx1)
	for _, s := range st {
		s.EmbedBackward(tokens, dx0)
	}

	// Not bitwise: the sharded head sums dh over two GEMMs instead of one
	// and rescales the sums of exponentials, which rounds differently in
	// float32; the differences are a few units in the last place.
	const tol = 1e-6
	if count != countFull || math.Abs(loss-lossFull) > tol*lossFull {
		t.Fatalf("sharded loss %.9g (%d tokens), single stage %.9g (%d)", loss, count, lossFull, countFull)
	}
	for _, s := range st {
		for _, p := range s.Params() {
			fp := fullW[p.Name]
			cols := len(fp.G) / fp.Shape[0]
			want := to64(fp.G[p.RowOffset*cols : p.RowOffset*cols+len(p.G)])
			checkClose(t, fmt.Sprintf("%s rows from %d", p.Name, p.RowOffset), p.G, want, tol)
		}
	}
}

func runGrads(t *testing.T, c Config, recompute bool, procs int) (float64, map[string][]float32) {
	t.Helper()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	m, err := New(c, 21, recompute)
	if err != nil {
		t.Fatal(err)
	}
	perturb(m.Params(), 22)
	tokens, targets := testBatch(c, 2, 16, 23)
	m.ZeroGrad()
	loss, _ := m.ForwardBackward(tokens, targets, 2, 16, 1)
	// A second call on reused buffers must give the same result again.
	m.ZeroGrad()
	loss2, _ := m.ForwardBackward(tokens, targets, 2, 16, 1)
	if loss2 != loss {
		t.Fatalf("second ForwardBackward loss %v != first %v", loss2, loss)
	}
	return loss, grads(m.Params())
}

func sameBits(t *testing.T, what string, la, lb float64, a, b map[string][]float32) {
	t.Helper()
	if math.Float64bits(la) != math.Float64bits(lb) {
		t.Fatalf("%s: loss %v != %v", what, la, lb)
	}
	for name, ga := range a {
		for i := range ga {
			if math.Float32bits(ga[i]) != math.Float32bits(b[name][i]) {
				t.Fatalf("%s: %s[%d] %v != %v", what, name, i, ga[i], b[name][i])
			}
		}
	}
}

func TestDeterminismAcrossProcsAndRecompute(t *testing.T) {
	c := testConfig()
	c.Layers = 3
	l1, g1 := runGrads(t, c, false, 1)
	l2, g2 := runGrads(t, c, false, 2)
	l4, g4 := runGrads(t, c, false, 4)
	lr, gr := runGrads(t, c, true, 2)
	sameBits(t, "GOMAXPROCS 1 vs 2", l1, l2, g1, g2)
	sameBits(t, "GOMAXPROCS 1 vs 4", l1, l4, g1, g4)
	sameBits(t, "recompute on vs off", l1, lr, g1, gr)
}

func TestSGDReducesLossOnRepeatedText(t *testing.T) {
	c := Config{Vocab: 256, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFN: 64, SeqLen: 32, RopeTheta: 10000, NormEps: 1e-5, Tokenizer: "byte"}
	m, err := New(c, 5, false)
	if err != nil {
		t.Fatal(err)
	}
	text := []byte("the cat sat on the mat. the cat sat on the mat. the cat sat on the mat. ")
	const b, tt = 2, 32
	tokens, targets := make([]int32, b*tt), make([]int32, b*tt)
	for s := 0; s < b; s++ {
		for i := 0; i < tt; i++ {
			tokens[s*tt+i] = int32(text[s*5+i])
			targets[s*tt+i] = int32(text[s*5+i+1])
		}
	}
	const steps, lr = 60, 1.0
	var first, last float64
	for step := 0; step < steps; step++ {
		m.ZeroGrad()
		loss, count := m.ForwardBackward(tokens, targets, b, tt, 1/float32(b*tt))
		mean := loss / float64(count)
		if step == 0 {
			first = mean
		}
		last = mean
		for _, p := range m.Params() {
			for i := range p.W {
				p.W[i] -= lr * p.G[i]
			}
		}
	}
	t.Logf("mean loss %.3f -> %.3f after %d SGD steps", first, last, steps)
	if math.Abs(first-math.Log(256)) > 0.1 {
		t.Errorf("initial loss %.3f, want about log(256) = %.3f for small random init", first, math.Log(256))
	}
	if last > 0.5*first {
		t.Errorf("loss only went from %.3f to %.3f", first, last)
	}
}

func TestActivationMemoryIsLinearInT(t *testing.T) {
	c := testConfig()
	for _, recompute := range []bool{false, true} {
		m, err := New(c, 1, recompute)
		if err != nil {
			t.Fatal(err)
		}
		s := m.Stage()
		a := s.NewActs(2, 40)
		if a.bytes != s.ActsBytes(2, 40) {
			t.Fatalf("NewActs allocated %d bytes, ActsBytes says %d", a.bytes, s.ActsBytes(2, 40))
		}
		acts, ws := StageActivationBytes(c, s.Spec(), 2, 40)
		if acts != a.bytes || ws != s.WorkspaceBytes(2, 40) {
			t.Fatalf("StageActivationBytes = %d, %d; the built stage says %d, %d", acts, ws, a.bytes, s.WorkspaceBytes(2, 40))
		}
		for _, tt := range []int{16, 64, 256} {
			if got, want := m.ActivationBytes(2, 2*tt), 2*m.ActivationBytes(2, tt); got != want {
				t.Errorf("recompute=%v: ActivationBytes(T=%d) = %d, want 2×(T=%d) = %d", recompute, 2*tt, got, tt, want)
			}
		}
	}
	g, _ := Preset("gpt2-shape")
	for _, recompute := range []bool{false, true} {
		spec := FullStage(g)
		spec.Recompute = recompute
		acts, ws := StageActivationBytes(g, spec, 4, 64)
		t.Logf("gpt2-shape B=4 T=64 recompute=%v: acts %.1f MiB, shared scratch %.1f MiB", recompute, float64(acts)/(1<<20), float64(ws)/(1<<20))
	}
	on, _ := New(c, 1, true)
	off, _ := New(c, 1, false)
	if on.ActivationBytes(2, 64) >= off.ActivationBytes(2, 64) {
		t.Errorf("recomputation does not save memory: %d vs %d bytes", on.ActivationBytes(2, 64), off.ActivationBytes(2, 64))
	}
}

func TestNewStageRejectsBadSpecs(t *testing.T) {
	c := testConfig()
	for _, sp := range []StageSpec{
		{FirstLayer: 1, EndLayer: 0},
		{FirstLayer: 0, EndLayer: 3},
		{Embed: RowRange{-1, 4}},
		{Head: RowRange{10, 41}},
		{Head: RowRange{5, 4}},
	} {
		if _, err := NewStage(c, sp, 1); err == nil {
			t.Errorf("NewStage(%+v) accepted a bad spec", sp)
		}
	}
	bad := c
	bad.KVHeads = 3
	if _, err := New(bad, 1, false); err == nil {
		t.Error("New accepted heads not divisible by kvHeads")
	}
	m, _ := New(c, 1, false)
	tokens, targets := testBatch(c, 1, 4, 1)
	tokens[2] = 40
	if err := m.CheckBatch(tokens, targets, 1, 4); err == nil {
		t.Error("CheckBatch accepted a token outside the vocabulary")
	}
	if err := m.CheckBatch(tokens[:3], targets, 1, 4); err == nil {
		t.Error("CheckBatch accepted a short batch")
	}
}

func TestParamsOrderRolesAndInit(t *testing.T) {
	c := testConfig()
	m, err := New(c, 3, false)
	if err != nil {
		t.Fatal(err)
	}
	ps := m.Params()
	if got := len(ps); got != 2+9*c.Layers+1 {
		t.Fatalf("%d params, want %d", got, 2+9*c.Layers+1)
	}
	var total int64
	for _, p := range ps {
		total += int64(len(p.W))
	}
	if total != c.NumParams() {
		t.Fatalf("params hold %d values, Config.NumParams says %d", total, c.NumParams())
	}
	want := []struct {
		name string
		role string
	}{
		{"model.embed_tokens.weight", "embedding"},
		{"model.layers.0.input_layernorm.weight", "norm"},
		{"model.layers.0.self_attn.q_proj.weight", "attn-qk"},
		{"model.layers.0.self_attn.k_proj.weight", "attn-qk"},
		{"model.layers.0.self_attn.v_proj.weight", "attn-v"},
		{"model.layers.0.self_attn.o_proj.weight", "attn-o"},
		{"model.layers.0.post_attention_layernorm.weight", "norm"},
		{"model.layers.0.mlp.gate_proj.weight", "mlp"},
	}
	for i, w := range want {
		if ps[i].Name != w.name || ps[i].Role.String() != w.role {
			t.Errorf("param %d = %s (%s), want %s (%s)", i, ps[i].Name, ps[i].Role, w.name, w.role)
		}
	}
	if ps[len(ps)-1].Name != "lm_head.weight" || ps[len(ps)-1].Role != RoleHead || ps[len(ps)-2].Name != "model.norm.weight" {
		t.Errorf("last params are %s, %s; want model.norm.weight, lm_head.weight", ps[len(ps)-2].Name, ps[len(ps)-1].Name)
	}
	// Standard deviations: 0.02 for embeddings and projections, scaled by
	// 1/sqrt(2·layers) for the residual projections; norms are 1.
	std := func(x []float32) float64 {
		var s float64
		for _, v := range x {
			s += float64(v) * float64(v)
		}
		return math.Sqrt(s / float64(len(x)))
	}
	for _, p := range ps {
		got := std(p.W)
		var exp float64
		switch {
		case p.Role == RoleNorm:
			exp = 1
		case p.Role == RoleAttnO || strings.HasSuffix(p.Name, "down_proj.weight"):
			exp = 0.02 / math.Sqrt(2*float64(c.Layers))
		default:
			exp = 0.02
		}
		if math.Abs(got-exp) > 0.1*exp {
			t.Errorf("%s: rms %.4g, want about %.4g", p.Name, got, exp)
		}
	}
	other, _ := New(c, 4, false)
	if other.Params()[0].W[0] == ps[0].W[0] {
		t.Error("different seeds gave the same initial weights")
	}
}

// microbatch drives one microbatch through a full stage in two halves, as a
// pipeline schedule does with F and B ops.
type microbatch struct {
	tokens, targets []int32
	a               *Acts
	x, h, dh        []float32
	gMax, gSum      []float32
	loss            float64
}

func newMicrobatch(s *Stage, b, t int, seed uint64) *microbatch {
	tokens, targets := testBatch(s.Config(), b, t, seed)
	n := b * t
	return &microbatch{tokens: tokens, targets: targets, a: s.NewActs(b, t),
		x: make([]float32, n*s.Config().Dim), dh: make([]float32, n*s.Config().Dim),
		gMax: make([]float32, n), gSum: make([]float32, n)}
}

func (mb *microbatch) forward(s *Stage) {
	s.EmbedForward(mb.tokens, mb.x)
	mb.h = s.BlocksForward(mb.a, mb.x)
	st := s.HeadForward(mb.a, mb.h, mb.targets)
	mb.loss, _ = CombineHeadStats([]HeadStats{st}, mb.gMax, mb.gSum)
}

func (mb *microbatch) backward(s *Stage) {
	clear(mb.dh)
	s.HeadBackward(mb.a, mb.h, mb.targets, mb.gMax, mb.gSum, 1, mb.dh)
	s.EmbedBackward(mb.tokens, s.BlocksBackward(mb.a, mb.dh))
}

// Several microbatches of different shapes in flight on one stage (forward,
// forward, backward, backward) give bitwise the results of running them one
// after the other: activations live in Acts, and the shared scratch only
// during a single operation.
func TestMicrobatchesInFlight(t *testing.T) {
	c := testConfig()
	for _, recompute := range []bool{false, true} {
		run := func(interleave bool) (float64, float64, map[string][]float32) {
			spec := FullStage(c)
			spec.Recompute = recompute
			s, err := NewStage(c, spec, 8)
			if err != nil {
				t.Fatal(err)
			}
			m1, m2 := newMicrobatch(s, 1, 8, 1), newMicrobatch(s, 2, 16, 2)
			if interleave {
				m1.forward(s)
				m2.forward(s)
				m1.backward(s)
				m2.backward(s)
			} else {
				m1.forward(s)
				m1.backward(s)
				m2.forward(s)
				m2.backward(s)
			}
			return m1.loss, m2.loss, grads(s.Params())
		}
		a1, a2, ga := run(false)
		b1, b2, gb := run(true)
		sameBits(t, fmt.Sprintf("recompute=%v microbatch 1", recompute), a1, b1, ga, gb)
		if a2 != b2 {
			t.Fatalf("recompute=%v: microbatch 2 loss %v != %v", recompute, a2, b2)
		}
	}
}

// HeadBackward consumes the logits it was given; a second call on the same
// Acts recomputes them and must give the same gradients.
func TestHeadBackwardRecomputesConsumedLogits(t *testing.T) {
	c := testConfig()
	s, err := NewStage(c, FullStage(c), 4)
	if err != nil {
		t.Fatal(err)
	}
	mb := newMicrobatch(s, 2, 8, 5)
	mb.forward(s)
	var dhs [2][]float32
	var gs [2]map[string][]float32
	for i := range dhs {
		s.ZeroGrad()
		clear(mb.dh)
		s.HeadBackward(mb.a, mb.h, mb.targets, mb.gMax, mb.gSum, 1, mb.dh)
		dhs[i], gs[i] = append([]float32(nil), mb.dh...), grads(s.Params())
	}
	sameBits(t, "second HeadBackward", 0, 0, gs[0], gs[1])
	for i := range dhs[0] {
		if dhs[0][i] != dhs[1][i] {
			t.Fatalf("dh[%d]: %v then %v", i, dhs[0][i], dhs[1][i])
		}
	}
}
