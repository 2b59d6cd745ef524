package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ternml/tern/pkg/tensor"
)

// isBlockLinear reports whether p is one of the block weights whose backward
// honours Param.RowSel.
func isBlockLinear(p *Param) bool {
	switch p.Role {
	case RoleAttnQK, RoleAttnV, RoleAttnO, RoleMLP:
		return true
	}
	return false
}

// TestRowSelGradMatchesFullRows checks the structured-sparse gradient hook:
// with RowSel set, GSel holds exactly the selected rows of the full weight
// gradient (repeats included), G stays nil, every other gradient and the
// loss are unchanged, GSel accumulates over calls like G and ZeroGrad clears
// it. Equality is bitwise with the "asm" and "go" GEMM backends: the
// gathered product has the same depth (B·T) and therefore the same
// accumulation order per element as the full one (see linearBackwardParam);
// OpenBLAS makes no such promise, so under it the rows must agree to 1e-6
// relative to the row's largest entry.
func TestRowSelGradMatchesFullRows(t *testing.T) {
	c := testConfig()
	const b, tt = 2, 8
	tokens, targets := testBatch(c, b, tt, 3)
	full, err := New(c, 11, false)
	if err != nil {
		t.Fatal(err)
	}
	perturb(full.Params(), 5)
	sel, err := New(c, 11, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range sel.Params() {
		copy(p.W, full.Params()[i].W)
	}
	rng := rand.New(rand.NewPCG(8, 9))
	for _, p := range sel.Params() {
		if !isBlockLinear(p) {
			continue
		}
		m, n := p.Shape[0], p.Shape[1]
		r := 1 + rng.IntN(m)
		p.RowSel = make([]int32, r)
		for j := range p.RowSel {
			p.RowSel[j] = int32(rng.IntN(m)) // repeats allowed
		}
		p.RowSel[0] = int32(m - 1) // the last row, through a border tile
		p.GSel = make([]float32, r*n)
		p.G = nil
	}
	exact := tensor.GemmBackend() != "openblas"
	for call := 1; call <= 2; call++ { // the second call checks accumulation
		lf, nf := full.ForwardBackward(tokens, targets, b, tt, 0.25)
		ls, ns := sel.ForwardBackward(tokens, targets, b, tt, 0.25)
		if lf != ls || nf != ns {
			t.Fatalf("call %d: loss %v/%d with selected rows, %v/%d without", call, ls, ns, lf, nf)
		}
		for i, p := range sel.Params() {
			f := full.Params()[i]
			if p.RowSel == nil {
				for j := range p.G {
					if math.Float32bits(p.G[j]) != math.Float32bits(f.G[j]) {
						t.Fatalf("call %d: %s[%d] = %v, want %v: selecting rows elsewhere changed it", call, p.Name, j, p.G[j], f.G[j])
					}
				}
				continue
			}
			if p.G != nil {
				t.Fatalf("%s: G was allocated although rows are selected", p.Name)
			}
			n := p.Shape[1]
			for j, row := range p.RowSel {
				want := f.G[int(row)*n : int(row+1)*n]
				got := p.GSel[j*n : (j+1)*n]
				scale := 0.0
				for _, w := range want {
					scale = math.Max(scale, math.Abs(float64(w)))
				}
				for k := range got {
					if exact && math.Float32bits(got[k]) != math.Float32bits(want[k]) {
						t.Fatalf("call %d: %s selected row %d (row %d) col %d = %v, full gradient has %v", call, p.Name, j, row, k, got[k], want[k])
					}
					if d := math.Abs(float64(got[k] - want[k])); d > 1e-6*scale {
						t.Fatalf("call %d: %s row %d col %d differs by %g", call, p.Name, row, k, d)
					}
				}
			}
		}
	}
	sel.ZeroGrad()
	for _, p := range sel.Params() {
		for j, v := range p.GSel {
			if v != 0 {
				t.Fatalf("ZeroGrad left %s GSel[%d] = %v", p.Name, j, v)
			}
		}
	}
}

// BenchmarkLinearBackwardRowSel compares the weight-gradient work of a
// gpt2-shape MLP up projection (1024 tokens, [2048, 768]) computed in full
// with the row-selected gradient at r = 2048/8.
func BenchmarkLinearBackwardRowSel(b *testing.B) {
	const n, in, out = 1024, 768, 2048
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(k int) []float32 {
		s := make([]float32, k)
		for i := range s {
			s[i] = float32(rng.NormFloat64())
		}
		return s
	}
	x, dy, w, dx := fill(n*in), fill(n*out), fill(out*in), make([]float32, n*in)
	for _, r := range []int{0, out / 8} {
		p := &Param{Shape: []int{out, in}, W: w}
		name := "full"
		if r == 0 {
			p.G = make([]float32, out*in)
		} else {
			name = "r=m/8"
			p.RowSel = make([]int32, r)
			for j := range p.RowSel {
				p.RowSel[j] = int32(j * 8)
			}
			p.GSel = make([]float32, r*in)
		}
		var sel []float32
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				linearBackwardParam(tensor.CPU{}, dx, p, dy, x, n, in, out, 0, &sel)
			}
		})
	}
}
