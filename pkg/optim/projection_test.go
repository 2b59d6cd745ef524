package optim

import (
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// projShapes lists the projected weights' shapes of one block of c
// ([out, in]: q, k, v, o, gate, up, down), for the state accounting.
func projShapes(c model.Config) [][2]int {
	d, kv := c.Dim, c.KVHeads*c.HeadDim()
	return [][2]int{{d, d}, {kv, d}, {kv, d}, {d, d}, {c.FFN, d}, {c.FFN, d}, {d, c.FFN}}
}

// projAccount returns the state bytes of GaLore and APOLLO over the
// projected weights of c, with rank(m, n) choosing each weight's rank, and
// the number of projected weights' values.
func projAccount(c model.Config, rank func(m, n int) int) (galore, apollo, values int64) {
	galore, apollo = 8, 8+16
	for l := 0; l < c.Layers; l++ {
		for _, s := range projShapes(c) {
			lay := newProjLayout(s[0], s[1], rank(s[0], s[1]), false)
			galore += galoreParamStateBytes(lay)
			apollo += apolloParamStateBytes(lay)
			values += int64(s[0] * s[1])
		}
	}
	return galore, apollo, values
}

// TestProjectionStateBytesAccounting checks the accounting against real
// optimizers on the tiny preset, then reports it for gpt2-shape at the
// papers' ranks and at r = rows/8, and holds APOLLO-Mini to its goal of
// under 1 byte per projected value.
func TestProjectionStateBytesAccounting(t *testing.T) {
	tiny := mustPreset(t, "tiny")
	m, err := model.New(tiny, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	proj, _ := SplitProjected(m.Params())
	want := projShapes(tiny)
	for i, p := range proj {
		if s := want[i%len(want)]; p.Shape[0] != s[0] || p.Shape[1] != s[1] {
			t.Fatalf("%s has shape %v, accounting assumes %v", p.Name, p.Shape, s)
		}
	}
	for _, rank := range []int{1, 8, 100} {
		gc := DefaultGaLoreConfig()
		gc.Rank = rank
		g, err := NewGaLore(proj, gc)
		if err != nil {
			t.Fatal(err)
		}
		ac := DefaultApolloConfig()
		ac.Rank = rank
		a, err := NewApollo(proj, ac)
		if err != nil {
			t.Fatal(err)
		}
		wg, wa, _ := projAccount(tiny, func(int, int) int { return rank })
		if g.StateBytes() != wg || a.StateBytes() != wa {
			t.Errorf("rank %d: StateBytes galore %d apollo %d, accounting %d %d", rank, g.StateBytes(), a.StateBytes(), wg, wa)
		}
		if g.StateBytes() != 4*projStateFloats(g.State()) || a.StateBytes() != 4*projStateFloats(a.State()) {
			t.Errorf("rank %d: StateBytes differs from the exported state", rank)
		}
	}

	gpt2 := mustPreset(t, "gpt2-shape")
	per := func(b, n int64) float64 { return float64(b) / float64(n) }
	for _, tc := range []struct {
		what string
		rank func(m, n int) int
	}{
		{"r=1 (APOLLO-Mini)", func(int, int) int { return 1 }},
		{"r=192 (APOLLO 130M script, d/4)", func(int, int) int { return 192 }},
		{"r=256 (GaLore 130M/350M, APOLLO README)", func(int, int) int { return 256 }},
		{"r=rows/8", func(m, _ int) int { return m / 8 }},
		{"r=d/8=96", func(int, int) int { return gpt2.Dim / 8 }},
	} {
		g, a, n := projAccount(gpt2, tc.rank)
		t.Logf("gpt2-shape %-40s %d projected values: GaLore %.3f B/value (%d B), APOLLO %.3f B/value (%d B)",
			tc.what, n, per(g, n), g, per(a, n), a)
		if strings.Contains(tc.what, "Mini") && per(a, n) >= 1 {
			t.Errorf("APOLLO-Mini holds %.3f B per projected value, want < 1", per(a, n))
		}
	}
}

// TestRoutedOptimizers: the routed constructors give the 2-D attention and
// MLP weights to the projection optimizer and the rest to AdamW, and their
// state round-trips through the composite.
func TestRoutedOptimizers(t *testing.T) {
	adam := AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-6, Convention: AdamWHF}
	gc := DefaultGaLoreConfig()
	gc.Rank, gc.UpdateProjGap = 8, 2
	ac := DefaultApolloMiniConfig()
	ac.UpdateProjGap = 2
	for _, tc := range []struct {
		name  string
		slot  string // a state slot only the projection optimizer has
		build func([]*model.Param) (Optimizer, error)
	}{
		{"galore", "galore_proj", func(ps []*model.Param) (Optimizer, error) { return NewGaLoreRouted(ps, gc, adam) }},
		{"apollo-mini", "nl_norm", func(ps []*model.Param) (Optimizer, error) { return NewApolloRouted(ps, ac, adam) }},
	} {
		build := func() (*model.Model, Optimizer) {
			m, err := model.New(mustPreset(t, "tiny"), 3, false)
			if err != nil {
				t.Fatal(err)
			}
			o, err := tc.build(m.Params())
			if err != nil {
				t.Fatal(err)
			}
			return m, o
		}
		ma, oa := build()
		mb, ob := build()
		if oa.Name() != tc.name {
			t.Errorf("name %q, want %q", oa.Name(), tc.name)
		}
		names := map[string]bool{}
		for _, s := range oa.State() {
			names[s.Name] = true
		}
		proj, rest := SplitProjected(ma.Params())
		for _, p := range proj {
			if !names[stateName(p, tc.slot)] {
				t.Errorf("%s: projected %s has no %s state", tc.name, p.Name, tc.slot)
			}
		}
		for _, p := range rest {
			if names[stateName(p, tc.slot)] || !names[stateName(p, "exp_avg")] {
				t.Errorf("%s: %s (%s) is not with AdamW", tc.name, p.Name, p.Role)
			}
		}
		grads := func(m *model.Model, s int) { projGrads(m.Params(), s, 0.05) }
		for s := 0; s < 3; s++ {
			grads(ma, s)
			oa.Step(0.01)
		}
		for i, p := range ma.Params() {
			copy(mb.Params()[i].W, p.W)
		}
		if err := ob.SetState(projCopyState(oa.State())); err != nil {
			t.Fatal(err)
		}
		for s := 3; s < 6; s++ {
			grads(ma, s)
			grads(mb, s)
			oa.Step(0.01)
			ob.Step(0.01)
		}
		projRequireBitwise(t, ma.Params(), mb.Params(), tc.name+" after restore")
	}
}
