package optim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/ternml/tern/pkg/compress"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

func demoTestConfig(values string) DemoConfig {
	return DemoConfig{TopK: 5, Chunk: 8, Decay: 0.9, Values: values, WeightDecay: 0.1}
}

// TestDemoSingleRankMatchesReference: with one rank, five steps of Demo
// follow the float64 transcription of the reference step (tolerances in
// demoCheckAgainstRef).
func TestDemoSingleRankMatchesReference(t *testing.T) {
	for _, values := range []string{"bf16", "sign"} {
		cfg := demoTestConfig(values)
		ps := demoParams(1)
		ref := newDemoRef(cfg, ps, 1)
		o, err := NewDemo(ps, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		for step := 0; step < 5; step++ {
			grads := demoGrads(ps, step, 0)
			lr := 0.01 * float64(step+1)
			o.Step(lr)
			us := ref.step(t, [][][]float64{grads}, lr, [][]compress.Tensor{o.sentDec})
			demoCheckAgainstRef(t, fmt.Sprintf("%s step %d", values, step), ps, o, ref, 0, us)
		}
		if o.Steps() != 5 {
			t.Errorf("Steps() = %d, want 5", o.Steps())
		}
	}
}

// TestDemoRanksAgreeAndMatchReference runs three ranks as goroutines that
// all-gather through channels. Their parameters start equal and their
// gradients differ; after every step all ranks must hold bitwise the same
// parameters, equal to the float64 reference of the combined (scatter-mean)
// update, and each rank must have sent exactly the formula's bytes.
func TestDemoRanksAgreeAndMatchReference(t *testing.T) {
	const world, steps = 3, 4
	for _, values := range []string{"bf16", "sign"} {
		cfg := demoTestConfig(values)
		group := newChanGroup(world)
		ranks := make([][]*model.Param, world)
		opts := make([]*Demo, world)
		for w := range ranks {
			ranks[w] = demoParams(1) // the same weights on every rank
			o, err := NewDemo(ranks[w], cfg, chanRank{group, w})
			if err != nil {
				t.Fatal(err)
			}
			opts[w] = o
		}
		ref := newDemoRef(cfg, ranks[0], world)
		want := demoFormulaBytes(ranks[0], cfg)
		if got, err := DemoPayloadBytes(ShapesOf(ranks[0]), cfg); err != nil || got != want || int64(opts[0].PayloadBytes()) != want {
			t.Fatalf("%s: DemoPayloadBytes = %d (%v), PayloadBytes = %d, formula %d", values, got, err, opts[0].PayloadBytes(), want)
		}
		for step := 0; step < steps; step++ {
			lr := 0.02
			grads := make([][][]float64, world)
			for w := range ranks {
				grads[w] = demoGrads(ranks[w], step, w)
			}
			errs := make([]error, world)
			var wg sync.WaitGroup
			for w := range ranks {
				wg.Go(func() { errs[w] = opts[w].StepContext(context.Background(), lr) })
			}
			wg.Wait()
			for w, err := range errs {
				if err != nil {
					t.Fatalf("%s step %d rank %d: %v", values, step, w, err)
				}
			}
			for w := 1; w < world; w++ {
				projRequireBitwise(t, ranks[0], ranks[w], fmt.Sprintf("%s step %d: rank %d vs rank 0", values, step, w))
			}
			sent := make([][]compress.Tensor, world)
			for w := range opts {
				sent[w] = opts[w].sentDec
			}
			us := ref.step(t, grads, lr, sent)
			for w := range ranks {
				// The parameters were compared bitwise; check each rank's
				// momentum (its own) and the shared parameters.
				demoCheckAgainstRef(t, fmt.Sprintf("%s step %d rank %d", values, step, w), ranks[w], opts[w], ref, w, us)
				sent, recv := opts[w].LastStepBytes()
				if sent != want || recv != (world-1)*want {
					t.Fatalf("%s step %d rank %d: sent %d and received %d bytes, want %d and %d", values, step, w, sent, recv, want, (world-1)*want)
				}
			}
		}
	}
}

// TestDemoStateRoundTrip: stopping after three steps, exporting the state
// and the weights, and continuing in a fresh optimizer gives bitwise the
// run that never stopped.
func TestDemoStateRoundTrip(t *testing.T) {
	cfg := demoTestConfig("sign")
	full := demoParams(2)
	a, err := NewDemo(full, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	part := projClone(full)
	b, err := NewDemo(part, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	for step := 0; step < 6; step++ {
		demoGrads(full, step, 0)
		a.Step(0.01)
		if step < 3 {
			demoGrads(part, step, 0)
			b.Step(0.01)
		}
	}
	saved := projCopyState(b.State())
	if got, want := 4*projStateFloats(saved), b.StateBytes(); got != want {
		t.Fatalf("exported state is %d bytes, StateBytes says %d", got, want)
	}
	if got := DemoStateBytes(ShapesOf(part)); got != b.StateBytes() {
		t.Fatalf("DemoStateBytes = %d, StateBytes = %d", got, b.StateBytes())
	}
	resumed := projClone(part)
	c, err := NewDemo(resumed, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetState(saved); err != nil {
		t.Fatal(err)
	}
	if c.Steps() != 3 {
		t.Fatalf("restored step count %d, want 3", c.Steps())
	}
	for step := 3; step < 6; step++ {
		demoGrads(resumed, step, 0)
		c.Step(0.01)
	}
	projRequireBitwise(t, full, resumed, "resumed run")
}

func TestDemoStateNames(t *testing.T) {
	ps := demoParams(3)
	o, err := NewDemo(ps, DefaultDemoConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range o.State() {
		names = append(names, s.Name)
	}
	want := []string{"optim.mlp.demo_delta", "optim.norm.demo_delta", "optim.padded.demo_delta", "optim.small.demo_delta", "optim.demo.step"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("state names %v, want %v (the 1-D norm keeps its bf16 residual)", names, want)
	}
	bad := projCopyState(o.State())
	bad[0].Data[3] = float32(math.NaN())
	if err := o.SetState(bad); err == nil || !strings.Contains(err.Error(), "optim.mlp.demo_delta: value 3 is NaN") {
		t.Errorf("SetState with a NaN momentum: %v", err)
	}
	if err := o.StepContext(context.Background(), 0.01); err == nil || !strings.Contains(err.Error(), "restore the state") {
		t.Errorf("stepping after a failed restore: %v", err)
	}
	if err := o.SetState(projCopyState(bad[:len(bad)-1])); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("SetState without the step counter: %v", err)
	}
}

// TestDemoDenseResidual: a 1-D parameter's Δ = β·Δ + η·g travels as
// bf16(Δ), Δ − bf16(Δ) stays behind bitwise, the next step decays it, and
// the weight moves by −η·sign(bf16(Δ)). Values are chosen so that the
// residual is nonzero and one Δ rounds to a bfloat16 tie.
func TestDemoDenseResidual(t *testing.T) {
	for _, values := range []string{"bf16", "sign"} {
		cfg := demoTestConfig(values)
		const lr = 0.5
		g := []float32{1 + 1.0/256, 0.3, -0.7, 1e-3, 0}
		// 0.5·(1+2⁻⁸) is the midpoint between two bfloat16s, so Δ[0] at
		// step 0 is a tie: it goes to the even 0.5 and leaves 2⁻⁹ behind.
		if d := float32(lr * g[0]); d-tensor.ToBF16(d).Float32() != 1.0/512 {
			t.Fatalf("test values: Δ[0] at step 0 is %v, not a bfloat16 tie", d)
		}
		p := &model.Param{Name: "norm", Role: model.RoleNorm, Shape: []int{len(g)}, GlobalShape: []int{len(g)},
			W: []float32{1, 1, 1, 1, 1}, G: make([]float32, len(g))}
		o, err := NewDemo([]*model.Param{p}, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		prev := make([]float32, len(g))
		for step := 0; step < 3; step++ {
			w0 := append([]float32(nil), p.W...)
			for j := range g {
				p.G[j] = g[j] * float32(step+1)
			}
			o.Step(lr)
			for j := range g {
				d := float32(float32(cfg.Decay)*prev[j]) + float32(lr*p.G[j])
				q := tensor.ToBF16(d).Float32()
				if got := o.sentDec[0].Val[j]; math.Float32bits(got) != math.Float32bits(q) {
					t.Fatalf("%s step %d: sent %v for Δ = %v, want bf16(Δ) = %v", values, step, got, d, q)
				}
				if got := o.delta[0][j]; math.Float32bits(got) != math.Float32bits(d-q) {
					t.Fatalf("%s step %d: residual %v for Δ = %v, want Δ − bf16(Δ) = %v", values, step, got, d, d-q)
				}
				if want := w0[j] - lr*sign32(q); p.W[j] != want {
					t.Fatalf("%s step %d: weight %d = %v, want %v", values, step, j, p.W[j], want)
				}
				prev[j] = d - q
			}
		}
	}
}

func TestDemoConfigValidate(t *testing.T) {
	if err := DefaultDemoConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cases := []struct {
		edit func(*DemoConfig)
		want string
	}{
		{func(c *DemoConfig) { c.TopK = 0 }, "optimizer.demo.topK must be in [1, chunk² = 4096], got 0"},
		{func(c *DemoConfig) { c.TopK = 4097 }, "optimizer.demo.topK must be in [1, chunk² = 4096], got 4097"},
		{func(c *DemoConfig) { c.Chunk = 0 }, "optimizer.demo.chunk must be in [1, 256], got 0"},
		{func(c *DemoConfig) { c.Chunk = 512 }, "optimizer.demo.chunk must be in [1, 256], got 512"},
		{func(c *DemoConfig) { c.Decay = 1 }, "optimizer.demo.decay must be in [0, 1), got 1"},
		{func(c *DemoConfig) { c.Decay = math.NaN() }, "optimizer.demo.decay must be in [0, 1), got NaN"},
		{func(c *DemoConfig) { c.WeightDecay = -0.1 }, "optimizer.demo.weightDecay must be a finite number >= 0, got -0.1"},
		{func(c *DemoConfig) { c.Values = "fp32" }, `optimizer.demo.values: value format must be "bf16" or "sign", got "fp32"`},
	}
	for _, c := range cases {
		cfg := DefaultDemoConfig()
		c.edit(&cfg)
		if err := cfg.Validate(); err == nil || err.Error() != c.want {
			t.Errorf("error %v, want %q", err, c.want)
		}
		if _, err := NewDemo(demoParams(1), cfg, nil); err == nil {
			t.Errorf("NewDemo accepted %+v", cfg)
		}
	}
}

func TestNewDemoRejects(t *testing.T) {
	cases := []struct {
		name string
		edit func([]*model.Param) []*model.Param
		want string
	}{
		{"nil", func(ps []*model.Param) []*model.Param { return append(ps, nil) }, "parameter 4 is nil"},
		{"duplicate", func(ps []*model.Param) []*model.Param { ps[1].Name = "mlp"; return ps }, `parameter name "mlp" given twice`},
		{"3-D", func(ps []*model.Param) []*model.Param {
			ps[0].Shape = []int{4, 4, 24}
			return ps
		}, "tensor 0 (mlp) has shape [4 4 24]: only 1-D (sent dense) and 2-D (compressed)"},
		{"size", func(ps []*model.Param) []*model.Param { ps[2].W = ps[2].W[:7]; return ps }, `parameter "padded" of shape [13 20] has 7 weights, want 260`},
		{"row-selected", func(ps []*model.Param) []*model.Param { ps[0].RowSel = []int32{0}; return ps }, "another optimizer owns it"},
	}
	for _, c := range cases {
		_, err := NewDemo(c.edit(demoParams(1)), DefaultDemoConfig(), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
		}
	}
}

// TestDemoRejectsBadGradientsWithoutChange: errors found before the
// momentum moves leave parameters and state untouched, and the optimizer
// usable.
func TestDemoRejectsBadGradientsWithoutChange(t *testing.T) {
	ps := demoParams(4)
	o, err := NewDemo(ps, demoTestConfig("bf16"), nil)
	if err != nil {
		t.Fatal(err)
	}
	demoGrads(ps, 0, 0)
	o.Step(0.01)
	before, weights := projCopyState(o.State()), projClone(ps)
	cases := []struct {
		name string
		edit func()
		lr   float64
		want string
	}{
		{"NaN gradient", func() { ps[2].G[7] = float32(math.NaN()) }, 0.01, `parameter "padded": gradient 7 is NaN`},
		{"Inf gradient", func() { ps[1].G[0] = float32(math.Inf(-1)) }, 0.01, `parameter "norm": gradient 0 is -Inf`},
		{"no gradient", func() { ps[0].G = nil }, 0.01, `parameter "mlp" has 0 gradient values, want 384`},
		{"negative lr", func() {}, -1, "learning rate must be a finite number >= 0, got -1"},
		{"NaN lr", func() {}, math.NaN(), "learning rate must be a finite number >= 0, got NaN"},
	}
	for _, c := range cases {
		demoGrads(ps, 1, 0)
		c.edit()
		err := o.StepContext(context.Background(), c.lr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
		}
		if ps[0].G == nil {
			ps[0].G = make([]float32, len(ps[0].W))
		}
		projRequireBitwise(t, weights, ps, c.name)
		for i, s := range o.State() {
			for j, v := range s.Data {
				if math.Float32bits(v) != math.Float32bits(before[i].Data[j]) {
					t.Fatalf("%s: state %s changed", c.name, s.Name)
				}
			}
		}
	}
	demoGrads(ps, 1, 0)
	if err := o.StepContext(context.Background(), 0.01); err != nil {
		t.Fatalf("a good step after rejected ones: %v", err)
	}
}

// TestDemoExchangeFailures: a failed all-gather or an invalid peer payload
// is reported, applies nothing to the parameters, and blocks further steps
// until the state is restored.
func TestDemoExchangeFailures(t *testing.T) {
	netErr := errors.New("connection reset")
	cases := []struct {
		name   string
		gather gatherFunc
		want   string
	}{
		{"network", func(ctx context.Context, p []byte) ([][]byte, error) { return nil, netErr }, "all-gather of"},
		{"corrupt peer", func(ctx context.Context, p []byte) ([][]byte, error) {
			bad := append([]byte(nil), p...)
			bad[20+9*4+1] = 0xff // the first index of "mlp": 65280 or more, out of range
			return [][]byte{p, bad}, nil
		}, "payload of rank 1: invalid compressed payload"},
		{"truncated peer", func(ctx context.Context, p []byte) ([][]byte, error) {
			return [][]byte{p[:len(p)-3], p}, nil
		}, "payload of rank 0: invalid compressed payload"},
		{"own payload lost", func(ctx context.Context, p []byte) ([][]byte, error) {
			return [][]byte{append([]byte(nil), p[:len(p)-1]...)}, nil
		}, "this rank's payload is not among the gathered ones"},
		{"no payloads", func(ctx context.Context, p []byte) ([][]byte, error) { return nil, nil }, "returned no payloads"},
	}
	for _, c := range cases {
		ps := demoParams(5)
		o, err := NewDemo(ps, demoTestConfig("bf16"), c.gather)
		if err != nil {
			t.Fatal(err)
		}
		demoGrads(ps, 0, 0)
		weights := projClone(ps)
		err = o.StepContext(context.Background(), 0.01)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
			continue
		}
		if c.name == "network" && !errors.Is(err, netErr) {
			t.Errorf("network: error %v does not wrap the gatherer's", err)
		}
		projRequireBitwise(t, weights, ps, c.name)
		if err := o.StepContext(context.Background(), 0.01); err == nil || !strings.Contains(err.Error(), "restore the state with SetState") {
			t.Errorf("%s: a step after the failure: %v", c.name, err)
		}
		fresh, _ := NewDemo(demoParams(5), demoTestConfig("bf16"), nil)
		if err := o.SetState(fresh.State()); err != nil {
			t.Fatal(err)
		}
		o.gather = nil
		if err := o.StepContext(context.Background(), 0.01); err != nil {
			t.Errorf("%s: a step after SetState: %v", c.name, err)
		}
	}
}

func TestDemoStepWithGathererPanics(t *testing.T) {
	o, err := NewDemo(demoParams(1), DefaultDemoConfig(), newChanGroup(1).rank(0))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "call StepContext") {
			t.Errorf("recovered %v, want a panic pointing to StepContext", r)
		}
	}()
	o.Step(0.01)
}

func (g *chanGroup) rank(r int) chanRank { return chanRank{g, r} }

// TestDemoIndependentOfProcs: the same steps on 1 and 4 cores give bitwise
// the same weights and momentum.
func TestDemoIndependentOfProcs(t *testing.T) {
	run := func(procs int) ([]*model.Param, []NamedTensor) {
		ps := projParams(6, [2]int{200, 130}, [2]int{64, 64})
		var st []NamedTensor
		withProcs(procs, func() {
			o, err := NewDemo(ps, DefaultDemoConfig(), nil)
			if err != nil {
				t.Fatal(err)
			}
			for step := 0; step < 3; step++ {
				projGrads(ps, step, 1)
				o.Step(0.01)
			}
			st = projCopyState(o.State())
		})
		return ps, st
	}
	p1, s1 := run(1)
	p4, s4 := run(4)
	projRequireBitwise(t, p1, p4, "1 vs 4 procs")
	for i := range s1 {
		for j := range s1[i].Data {
			if math.Float32bits(s1[i].Data[j]) != math.Float32bits(s4[i].Data[j]) {
				t.Fatalf("%s[%d]: %v with 1 proc, %v with 4", s1[i].Name, j, s1[i].Data[j], s4[i].Data[j])
			}
		}
	}
}
