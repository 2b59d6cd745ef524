package optim

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ternml/tern/pkg/compress"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// demoRef is a float64 transcription of DeMo's step
// (research/demo-and-decentralized.md §1.1) for W ranks that hold the same
// parameters, written from the equations:
// the DCT from its definition, top-k by sorting, scatter-mean by counting.
// It shares only the value rounding to bfloat16 (tensor.ToBF16) with the
// code under test, since that rounding is what the wire format is.
type demoRef struct {
	cfg     DemoConfig
	chunk   int
	shapes  [][]int
	decayed []bool
	x       [][]float64   // parameters, shared by all ranks
	delta   [][][]float64 // [rank][param] momentum (of a 1-D parameter, its bf16 residual)
	// scale[rank][param] is max|Δ| before the last error feedback: the
	// magnitude the float32 momentum's rounding error is relative to.
	scale [][]float64
}

func newDemoRef(cfg DemoConfig, ps []*model.Param, world int) *demoRef {
	r := &demoRef{cfg: cfg, chunk: cfg.Chunk, delta: make([][][]float64, world), scale: make([][]float64, world)}
	for _, p := range ps {
		r.shapes = append(r.shapes, p.Shape)
		r.decayed = append(r.decayed, len(p.Shape) == 2)
		r.x = append(r.x, projTo64(p.W))
	}
	for w := range r.delta {
		r.scale[w] = make([]float64, len(ps))
		r.delta[w] = make([][]float64, len(ps))
		for i, p := range ps {
			r.delta[w][i] = make([]float64, len(p.W))
		}
	}
	return r
}

// refDCTMatrix is D[k][i] = s_k cos(π(2i+1)k/2n).
func refDCTMatrix(n int) [][]float64 {
	d := make([][]float64, n)
	for k := range d {
		d[k] = make([]float64, n)
		s := math.Sqrt(2 / float64(n))
		if k == 0 {
			s = math.Sqrt(1 / float64(n))
		}
		for i := range d[k] {
			d[k][i] = s * math.Cos(math.Pi*float64(2*i+1)*float64(k)/float64(2*n))
		}
	}
	return d
}

// refGrid is the chunking rule: side min(dim, chunk), padded up to a
// multiple.
type refGrid struct{ rows, cols, n1, n2, pr, pc int }

func newRefGrid(rows, cols, chunk int) refGrid {
	g := refGrid{rows: rows, cols: cols, n1: min(rows, chunk), n2: min(cols, chunk)}
	g.pr = (rows + g.n1 - 1) / g.n1 * g.n1
	g.pc = (cols + g.n2 - 1) / g.n2 * g.n2
	return g
}

// forward returns the per-chunk coefficients, chunk-major, each chunk
// row-major: Y = D1·B·D2ᵀ with B the zero-padded block.
func (g refGrid) forward(x []float64) [][]float64 {
	d1, d2 := refDCTMatrix(g.n1), refDCTMatrix(g.n2)
	var out [][]float64
	for r0 := 0; r0 < g.pr; r0 += g.n1 {
		for c0 := 0; c0 < g.pc; c0 += g.n2 {
			y := make([]float64, g.n1*g.n2)
			for a := 0; a < g.n1; a++ {
				for b := 0; b < g.n2; b++ {
					var s float64
					for i := 0; i < g.n1; i++ {
						for j := 0; j < g.n2; j++ {
							if r0+i < g.rows && c0+j < g.cols {
								s += d1[a][i] * x[(r0+i)*g.cols+c0+j] * d2[b][j]
							}
						}
					}
					y[a*g.n2+b] = s
				}
			}
			out = append(out, y)
		}
	}
	return out
}

// inverse is X = D1ᵀ·Y·D2 per chunk, cropped.
func (g refGrid) inverse(ys [][]float64) []float64 {
	d1, d2 := refDCTMatrix(g.n1), refDCTMatrix(g.n2)
	x := make([]float64, g.rows*g.cols)
	c := 0
	for r0 := 0; r0 < g.pr; r0 += g.n1 {
		for c0 := 0; c0 < g.pc; c0 += g.n2 {
			y := ys[c]
			c++
			for i := 0; i < g.n1 && r0+i < g.rows; i++ {
				for j := 0; j < g.n2 && c0+j < g.cols; j++ {
					var s float64
					for a := 0; a < g.n1; a++ {
						for b := 0; b < g.n2; b++ {
							s += d1[a][i] * y[a*g.n2+b] * d2[b][j]
						}
					}
					x[(r0+i)*g.cols+c0+j] = s
				}
			}
		}
	}
	return x
}

// refTopK returns the k indices of largest |y| (ties: smaller index).
func refTopK(y []float64, k int) []int {
	order := make([]int, len(y))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch ma, mb := math.Abs(y[a]), math.Abs(y[b]); {
		case ma > mb:
			return -1
		case ma < mb:
			return 1
		}
		return a - b
	})
	return order[:k]
}

// refQuantize is what the wire carries for the selected values of one
// chunk: bf16(v), or ±bf16(mean|v|) for signs. Rounding from float64 and
// from the implementation's float32 can legitimately differ where a value
// lies within float32 error of a bfloat16 rounding midpoint, so sent (the
// values the implementation sent for this chunk) is accepted where it is
// one of the two roundings of v·(1±1e-5), and then used; anything else
// fails the test.
func refQuantize(t *testing.T, vals []float64, values string, sent []float32) []float64 {
	t.Helper()
	round := func(v float64) (float64, float64) {
		a := float64(tensor.ToBF16(float32(v * (1 - 1e-5))).Float32())
		b := float64(tensor.ToBF16(float32(v * (1 + 1e-5))).Float32())
		return a, b
	}
	out := make([]float64, len(vals))
	var m float64
	for _, v := range vals {
		m += math.Abs(v)
	}
	m /= float64(len(vals))
	for j, v := range vals {
		var a, b float64
		if values == "sign" {
			a, b = round(m)
			a, b = math.Copysign(a, v), math.Copysign(b, v)
		} else {
			a, b = round(v)
		}
		got := float64(sent[j])
		if got != a && got != b {
			t.Fatalf("value %d of a chunk: sent %v for %v, want %v or %v", j, got, v, a, b)
		}
		out[j] = got
	}
	return out
}

// step applies one DeMo step with rank w's gradients grads[w] and returns
// the combined pre-sign update of every parameter. sent[w] is what rank w's
// optimizer sent in the same step (its decoded payload): the selection must
// equal the reference's, and the values are checked by refQuantize.
//
// A 1-D parameter follows the same rule with the identity for the
// transform and every coefficient selected: Δ ← β·Δ + η·g, Δ is sent as
// bf16(Δ), the error feedback leaves Δ − bf16(Δ), and the update is the
// mean over ranks of bf16(Δ).
func (r *demoRef) step(t *testing.T, grads [][][]float64, lr float64, sent [][]compress.Tensor) [][]float64 {
	t.Helper()
	world := len(grads)
	us := make([][]float64, len(r.shapes))
	for i, shape := range r.shapes {
		if len(shape) == 1 {
			u := make([]float64, shape[0])
			for w := 0; w < world; w++ {
				d := r.delta[w][i]
				for j := range d {
					d[j] = r.cfg.Decay*d[j] + lr*grads[w][i][j]
				}
				r.scale[w][i] = refMaxAbs(d)
				if n := len(sent[w][i].Idx); n != 0 {
					t.Fatalf("rank %d parameter %d: a dense tensor sent %d indices", w, i, n)
				}
				q := refQuantize(t, d, compress.FormatNameBF16, sent[w][i].Val)
				for j := range d {
					u[j] += q[j]
					d[j] -= q[j]
				}
			}
			for j := range u {
				u[j] /= float64(world)
			}
			us[i] = u
			continue
		}
		g := newRefGrid(shape[0], shape[1], r.chunk)
		ce := g.n1 * g.n2
		k := min(r.cfg.TopK, ce)
		var sum, cnt [][]float64
		for w := 0; w < world; w++ {
			d := r.delta[w][i]
			for j := range d {
				d[j] = r.cfg.Decay*d[j] + lr*grads[w][i][j]
			}
			r.scale[w][i] = refMaxAbs(d)
			ys := g.forward(d)
			if sum == nil {
				sum, cnt = make([][]float64, len(ys)), make([][]float64, len(ys))
				for c := range ys {
					sum[c], cnt[c] = make([]float64, ce), make([]float64, ce)
				}
			}
			own := make([][]float64, len(ys))
			for c, y := range ys {
				idx := refTopK(y, k)
				slices.Sort(idx)
				vals := make([]float64, k)
				for j, ix := range idx {
					vals[j] = y[ix]
					if got := sent[w][i].Idx[c*k+j]; int(got) != ix {
						t.Fatalf("rank %d parameter %d chunk %d: selected %v, reference %v", w, i, c, sent[w][i].Idx[c*k:(c+1)*k], idx)
					}
				}
				q := refQuantize(t, vals, r.cfg.Values, sent[w][i].Val[c*k:(c+1)*k])
				own[c] = make([]float64, ce)
				for j, ix := range idx {
					own[c][ix] = q[j]
					sum[c][ix] += q[j]
					cnt[c][ix]++
				}
			}
			for j, v := range g.inverse(own) {
				d[j] -= v
			}
		}
		for c := range sum {
			for j := range sum[c] {
				if cnt[c][j] > 0 {
					sum[c][j] /= cnt[c][j]
				}
			}
		}
		us[i] = g.inverse(sum)
	}
	for i, u := range us {
		decay := 1.0
		if r.decayed[i] {
			decay = 1 - lr*r.cfg.WeightDecay
		}
		for j := range u {
			r.x[i][j] = r.x[i][j]*decay - lr*refSign(u[j])
		}
	}
	return us
}

func refMaxAbs(x []float64) float64 {
	var m float64
	for _, v := range x {
		m = max(m, math.Abs(v))
	}
	return m
}

func refSign(v float64) float64 {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

// demoParams builds small parameters that exercise every chunking case at
// chunk 8: divisible, padded in both dimensions, smaller than a chunk, and
// a 1-D norm gain.
func demoParams(seed uint64) []*model.Param {
	rng := rand.New(rand.NewPCG(seed, 1))
	mk := func(name string, role model.Role, shape ...int) *model.Param {
		n := 1
		for _, d := range shape {
			n *= d
		}
		p := &model.Param{Name: name, Role: role, Shape: shape, GlobalShape: shape,
			W: make([]float32, n), G: make([]float32, n)}
		for j := range p.W {
			p.W[j] = float32(0.5 * rng.NormFloat64())
		}
		return p
	}
	return []*model.Param{
		mk("mlp", model.RoleMLP, 16, 24),
		mk("norm", model.RoleNorm, 10),
		mk("padded", model.RoleAttnQK, 13, 20),
		mk("small", model.RoleHead, 5, 3),
	}
}

// demoGrads fills the gradients of rank w at step s deterministically.
func demoGrads(ps []*model.Param, step, w int) [][]float64 {
	out := make([][]float64, len(ps))
	for i, p := range ps {
		rng := rand.New(rand.NewPCG(uint64(step), uint64(100*w+i)))
		out[i] = make([]float64, len(p.G))
		for j := range p.G {
			p.G[j] = float32(rng.NormFloat64())
			out[i][j] = float64(p.G[j])
		}
	}
	return out
}

// demoCheckAgainstRef compares parameters and rank w's momentum with the
// reference after a step, then copies the parameters into the reference
// so that an element whose update sign is ambiguous in float32 cannot
// make the two drift apart.
//
// Tolerances. The momentum update rounds to float32 three times and the
// transform twice per pass pair after exact float64 sums, so Δ and the
// pre-sign update u agree with float64 to a few 2^-24 of the largest
// magnitude of Δ before the error feedback (ref.scale) and of u; 1e-5 of
// it is a wide margin that a wrong selection, quantisation or combine
// (errors of order 2^-8 or more) cannot hide in. After the feedback a 1-D
// parameter's Δ is only its bf16 residual, at most 2^-8 of that scale, so
// the scale is taken before the feedback: relative to the residual itself
// 1e-5 would be below the float32 error; relative to the scale, a residual
// dropped or not decayed (of order 2^-9 of it) still fails. The sign of u is compared only where |u| exceeds that
// bound; a parameter, once its update's sign agrees, differs from the
// float64 one by its float32 rounding (|x|·2^-24 per step), checked at 1e-6.
func demoCheckAgainstRef(t *testing.T, what string, ps []*model.Param, o *Demo, ref *demoRef, w int, us [][]float64) {
	t.Helper()
	for i, p := range ps {
		u := us[i]
		var umax float64
		for _, v := range u {
			umax = max(umax, math.Abs(v))
		}
		for j := range p.W {
			if math.Abs(u[j]) <= 1e-5*umax {
				continue
			}
			if d := math.Abs(float64(p.W[j]) - ref.x[i][j]); d > 1e-6 {
				t.Fatalf("%s: %s[%d] = %v, reference %v (update %v)", what, p.Name, j, p.W[j], ref.x[i][j], u[j])
			}
		}
		d, scale := ref.delta[w][i], ref.scale[w][i]
		for j, v := range o.delta[i] {
			if math.Abs(float64(v)-d[j]) > 1e-5*scale {
				t.Fatalf("%s: momentum of %s[%d] = %v, reference %v", what, p.Name, j, v, d[j])
			}
		}
		ref.x[i] = projTo64(p.W)
	}
}

// chanGroup is an in-process all-gather: one buffered channel per ordered
// pair of ranks, like a transport's per-peer stream. Payloads are passed
// by reference, as a transport may, so the race detector sees any write to
// a payload after it was handed over. Two slots per link suffice: a rank
// can be at most one all-gather ahead of a peer.
type chanGroup struct {
	world int
	links [][]chan []byte // links[to][from]
}

func newChanGroup(world int) *chanGroup {
	g := &chanGroup{world: world, links: make([][]chan []byte, world)}
	for to := range g.links {
		g.links[to] = make([]chan []byte, world)
		for from := range g.links[to] {
			g.links[to][from] = make(chan []byte, 2)
		}
	}
	return g
}

// chanRank is one rank's view of a chanGroup; it implements Gatherer.
type chanRank struct {
	g    *chanGroup
	rank int
}

func (c chanRank) AllGather(ctx context.Context, payload []byte) ([][]byte, error) {
	for to := 0; to < c.g.world; to++ {
		if to == c.rank {
			continue
		}
		select {
		case c.g.links[to][c.rank] <- payload:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out := make([][]byte, c.g.world)
	out[c.rank] = payload
	for from := 0; from < c.g.world; from++ {
		if from == c.rank {
			continue
		}
		select {
		case out[from] = <-c.g.links[c.rank][from]:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// gatherFunc adapts a function to Gatherer.
type gatherFunc func(ctx context.Context, payload []byte) ([][]byte, error)

func (f gatherFunc) AllGather(ctx context.Context, payload []byte) ([][]byte, error) {
	return f(ctx, payload)
}

// demoFormulaBytes is the payload length written out from the wire
// format's definition (package compress doc): a 20-byte header plus 9 per
// tensor; per chunk of a 2-D tensor k·2 index bytes plus k·2 (bf16) or
// ⌈k/8⌉+2 (sign); 2 bytes (a bfloat16) per element of a 1-D tensor in
// either format.
func demoFormulaBytes(ps []*model.Param, cfg DemoConfig) int64 {
	n := int64(20 + 9*len(ps))
	for _, p := range ps {
		if len(p.Shape) == 1 {
			n += int64(2 * p.Shape[0])
			continue
		}
		g := newRefGrid(p.Shape[0], p.Shape[1], cfg.Chunk)
		k := min(cfg.TopK, g.n1*g.n2)
		per := 2*k + 2*k
		if cfg.Values == "sign" {
			per = 2*k + (k+7)/8 + 2
		}
		n += int64((g.pr / g.n1) * (g.pc / g.n2) * per)
	}
	return n
}
