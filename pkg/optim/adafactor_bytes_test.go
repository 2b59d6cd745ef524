package optim

import (
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// adaptiveShape is one parameter's shape and role as pkg/model lays it out.
type adaptiveShape struct {
	role  model.Role
	shape []int
}

// adaptiveShapes lists a full model's parameters from its configuration
// alone (the layout of model.NewStage), so the state size of a large preset
// can be computed without allocating it.
func adaptiveShapes(c model.Config) []adaptiveShape {
	d, hd, f := c.Dim, c.HeadDim(), c.FFN
	out := []adaptiveShape{{model.RoleEmbedding, []int{c.Vocab, d}}}
	for l := 0; l < c.Layers; l++ {
		out = append(out,
			adaptiveShape{model.RoleNorm, []int{d}},
			adaptiveShape{model.RoleAttnQK, []int{c.Heads * hd, d}},
			adaptiveShape{model.RoleAttnQK, []int{c.KVHeads * hd, d}},
			adaptiveShape{model.RoleAttnV, []int{c.KVHeads * hd, d}},
			adaptiveShape{model.RoleAttnO, []int{d, c.Heads * hd}},
			adaptiveShape{model.RoleNorm, []int{d}},
			adaptiveShape{model.RoleMLP, []int{f, d}},
			adaptiveShape{model.RoleMLP, []int{f, d}},
			adaptiveShape{model.RoleMLP, []int{d, f}})
	}
	return append(out, adaptiveShape{model.RoleNorm, []int{d}}, adaptiveShape{model.RoleHead, []int{c.Vocab, d}})
}

// adaptiveStateBytes is the state size of each optimizer by formula:
// Adafactor (no β1) rows+cols per matrix and n per vector; CAME adds the
// full first moment and a second rows+cols pair per matrix; Adam-mini the
// full first moment plus one float per block (heads for q/k, rows, one per
// norm); each has an 8-byte step counter.
func adaptiveStateBytes(c model.Config) (params, adafactor, came, adamMini int64) {
	for _, s := range adaptiveShapes(c) {
		n := int64(1)
		for _, d := range s.shape {
			n *= int64(d)
		}
		params += n
		came += n
		adamMini += n
		if len(s.shape) == 2 {
			rc := int64(s.shape[0] + s.shape[1])
			adafactor += rc
			came += 2 * rc
		} else {
			adafactor += n
			came += n
		}
		switch s.role {
		case model.RoleNorm:
			adamMini++
		case model.RoleAttnQK:
			adamMini += int64(s.shape[0] / c.HeadDim())
		default:
			adamMini += int64(s.shape[0])
		}
	}
	return params, 4*adafactor + 8, 4*came + 8, 4*adamMini + 8
}

func TestAdaptiveStateBytesFormula(t *testing.T) {
	// The formula must match the optimizers' own StateBytes on a real
	// (grouped-query) tiny model before it is trusted for gpt2-shape.
	mc := mustPreset(t, "tiny")
	mc.KVHeads = 2
	m, err := model.New(mc, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	n, af, ca, am := adaptiveStateBytes(mc)
	if n != mc.NumParams() {
		t.Fatalf("shape list has %d parameters, model.Config says %d", n, mc.NumParams())
	}
	oa, _ := NewAdafactor(m.Params(), DefaultAdafactorConfig())
	oc, _ := NewCAME(m.Params(), DefaultCAMEConfig())
	om, err := NewAdamMini(m.Params(), DefaultAdamMiniConfig().ForModel(mc))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want int64
	}{{"adafactor", oa.StateBytes(), af}, {"came", oc.StateBytes(), ca}, {"adam-mini", om.StateBytes(), am}} {
		if c.got != c.want {
			t.Errorf("%s on tiny: StateBytes %d, formula %d", c.name, c.got, c.want)
		}
	}
	g := mustPreset(t, "gpt2-shape")
	n, af, ca, am = adaptiveStateBytes(g)
	if n != g.NumParams() {
		t.Fatalf("gpt2-shape: shape list has %d parameters, model.Config says %d", n, g.NumParams())
	}
	per := func(b int64) float64 { return float64(b) / float64(n) }
	t.Logf("gpt2-shape (%d params) state bytes/param: adamw %.4f, adafactor %.5f (%d B), came %.4f (%d B), adam-mini %.4f (%d B)",
		n, per(8*n+8), per(af), af, per(ca), ca, per(am), am)
	// Sanity bounds from optimizers.md §2: Adafactor ≪ 0.1, CAME and
	// Adam-mini just above 4.
	if per(af) > 0.01 || per(ca) < 4 || per(ca) > 4.02 || per(am) < 4 || per(am) > 4.01 {
		t.Errorf("bytes/param out of the expected ranges: %.5f %.4f %.4f", per(af), per(ca), per(am))
	}
}
