package optim

import (
	"fmt"
	"hash/fnv"
	"math"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// projLayout is how a projection optimizer (GaLore, APOLLO) sees one m×n
// weight. Both reference implementations compress the smaller side (GaLore
// galore_projector.py and APOLLO random_projector.py, proj_type "std"):
//
//	m ≥ n ("right"): R = G·Pᵀ is m×r, P is r×n
//	m < n ("left"):  R = Pᵀ·G is r×n, P is m×r
//
// tern keeps the projection in one layout for both sides, Q (r×d) with d the
// projected dimension: Q = P on the right and Q = Pᵀ on the left. The other
// dimension D is kept; it indexes APOLLO's channels.
type projLayout struct {
	m, n int
	left bool // project the row side: R = Q·G (r×n); otherwise R = G·Qᵀ (m×r)
	r    int  // effective rank, min(rank, m, n)
	d    int  // projected dimension: m when left, n otherwise
	dd   int  // kept dimension: n when left, m otherwise
}

func newProjLayout(m, n, rank int, reverse bool) projLayout {
	l := projLayout{m: m, n: n, left: m < n, r: min(rank, m, n)}
	if reverse {
		l.left = !l.left
	}
	if l.left {
		l.d, l.dd = m, n
	} else {
		l.d, l.dd = n, m
	}
	return l
}

// rSize is the number of values of the projected gradient (and of each
// Adam moment): r·D.
func (l projLayout) rSize() int { return l.r * l.dd }

// qSize is the number of values of the projection: r·d.
func (l projLayout) qSize() int { return l.r * l.d }

// rShape and qShape are the exported state shapes, in the layouts above.
func (l projLayout) rShape() []int {
	if l.left {
		return []int{l.r, l.n}
	}
	return []int{l.m, l.r}
}

func (l projLayout) qShape() []int { return []int{l.r, l.d} }

// project writes the projected gradient R of g into dst.
func (l projLayout) project(dst, q, g []float32) {
	if l.left {
		tensor.Gemm(false, false, l.r, l.n, l.m, 1, q, l.m, g, l.n, 0, dst, l.n)
		return
	}
	tensor.Gemm(false, true, l.m, l.r, l.n, 1, g, l.n, q, l.n, 0, dst, l.r)
}

// addBack adds alpha·back(x) to w, where back maps an R-shaped x back to
// m×n: Qᵀ·x on the left, x·Q on the right.
func (l projLayout) addBack(w []float32, alpha float32, q, x []float32) {
	if l.left {
		tensor.Gemm(true, false, l.m, l.n, l.r, alpha, q, l.m, x, l.n, 1, w, l.n)
		return
	}
	tensor.Gemm(false, false, l.m, l.n, l.r, alpha, x, l.r, q, l.n, 1, w, l.n)
}

// projectedParams checks that every parameter is a distinct-named 2-D matrix
// whose buffers match its shape, and returns its layout.
func projectedParams(opt string, params []*model.Param, rank int, reverse bool) ([]projLayout, error) {
	lays := make([]projLayout, len(params))
	seen := make(map[string]bool, len(params))
	for i, p := range params {
		if p == nil {
			return nil, fmt.Errorf("optimizer.%s: parameter %d is nil", opt, i)
		}
		if len(p.Shape) != 2 || p.Shape[0] < 1 || p.Shape[1] < 1 {
			return nil, fmt.Errorf("optimizer.%s: parameter %q has shape %v; only 2-D weights are projected (route the rest to AdamW, e.g. with SplitProjected)", opt, p.Name, p.Shape)
		}
		m, n := p.Shape[0], p.Shape[1]
		if len(p.W) != m*n || len(p.G) != m*n {
			return nil, fmt.Errorf("optimizer.%s: parameter %q of shape %v has %d weights and %d gradients, want %d each", opt, p.Name, p.Shape, len(p.W), len(p.G), m*n)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("optimizer.%s: parameter name %q given twice; state names would collide", opt, p.Name)
		}
		seen[p.Name] = true
		lays[i] = newProjLayout(m, n, rank, reverse)
	}
	return lays, nil
}

// hfMoments is the inner Adam of the GaLore and APOLLO reference code (the
// Hugging Face transformers AdamW they copy): it updates the moments m and v
// with the projected gradient x and overwrites x with N = m/(√v + ε). The
// bias corrections are folded into the caller's step size, lr·√(1−β2ᵗ)/(1−β1ᵗ).
func hfMoments(x, m, v []float32, b1, b2, eps float32) {
	tensor.ParallelFor(len(x), adamGrain, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			g := x[j]
			mj := b1*m[j] + (1-b1)*g
			vj := b2*v[j] + (1-b2)*g*g
			m[j], v[j] = mj, vj
			x[j] = mj / (float32(math.Sqrt(float64(vj))) + eps)
		}
	})
}

// decayAfter is the reference code's decoupled weight decay, applied after
// the update to the updated weights: w ← w − lr·λ·w.
func decayAfter(w []float32, lrDecay float32) {
	if lrDecay == 0 {
		return
	}
	tensor.ParallelFor(len(w), adamGrain, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			w[j] -= lrDecay * w[j]
		}
	})
}

// splitmix64 constants (Steele, Lea & Flood, "Fast Splittable Pseudorandom
// Number Generators", OOPSLA 2014).
const projGamma = 0x9e3779b97f4a7c15

func projMix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// projectionSeed is the seed of one parameter's random projection between two
// refreshes. It depends only on the job seed, the parameter name and the
// refresh index, so data-parallel ranks (and a run resumed from a checkpoint)
// draw the same projection without exchanging anything.
func projectionSeed(job uint64, name string, refresh int64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	s := projMix(job + projGamma)
	s = projMix(s ^ h.Sum64())
	return projMix(s ^ (uint64(refresh) + projGamma))
}

// gaussGrain is the number of Box–Muller pairs per parallel chunk.
const gaussGrain = 1 << 12

// fillGaussian sets dst[i] = scale·z_i with z_i standard normal. Values come
// in Box–Muller pairs (2k, 2k+1) built from the splitmix64 outputs 2k and
// 2k+1 of seed; splitmix64's k-th output is a pure function of (seed, k), so
// chunks are generated in parallel with the same result on any core count.
func fillGaussian(dst []float32, seed uint64, scale float64) {
	pairs := (len(dst) + 1) / 2
	tensor.ParallelFor(pairs, gaussGrain, func(lo, hi int) {
		for k := lo; k < hi; k++ {
			a := projMix(seed + (2*uint64(k)+1)*projGamma)
			b := projMix(seed + (2*uint64(k)+2)*projGamma)
			u1 := (float64(a>>11) + 1) / (1 << 53) // (0, 1]: the log stays finite
			u2 := float64(b>>11) / (1 << 53)
			rad := scale * math.Sqrt(-2*math.Log(u1))
			s, c := math.Sincos(2 * math.Pi * u2)
			dst[2*k] = float32(rad * c)
			if 2*k+1 < len(dst) {
				dst[2*k+1] = float32(rad * s)
			}
		}
	})
}

// splitSeed stores a 64-bit seed as four 16-bit halves, each exact in float32.
func splitSeed(s uint64) []float32 {
	return []float32{float32(s >> 48), float32(s >> 32 & 0xffff), float32(s >> 16 & 0xffff), float32(s & 0xffff)}
}

func joinSeed(v []float32) (uint64, error) {
	var s uint64
	for _, x := range v {
		if !(x >= 0 && x <= 0xffff) || x != float32(int64(x)) {
			return 0, fmt.Errorf("not a seed: %v", v)
		}
		s = s<<16 | uint64(x)
	}
	return s, nil
}

// checkAdamHyper validates the inner Adam's hyperparameters, naming the
// field as optimizer.<opt>.<field>.
func checkAdamHyper(opt string, b1, b2, eps, wd float64) error {
	if !(b1 >= 0 && b1 < 1) {
		return fmt.Errorf("optimizer.%s.beta1 must be in [0, 1), got %g", opt, b1)
	}
	if !(b2 >= 0 && b2 < 1) {
		return fmt.Errorf("optimizer.%s.beta2 must be in [0, 1), got %g", opt, b2)
	}
	if !(eps > 0) || math.IsInf(eps, 1) {
		return fmt.Errorf("optimizer.%s.eps must be a finite number > 0, got %g", opt, eps)
	}
	if !(wd >= 0) || math.IsInf(wd, 1) {
		return fmt.Errorf("optimizer.%s.weightDecay must be a finite number >= 0, got %g", opt, wd)
	}
	return nil
}

// checkProjHyper validates the settings GaLore and APOLLO share.
func checkProjHyper(opt string, rank, gap int, scale float64) error {
	if rank < 1 {
		return fmt.Errorf("optimizer.%s.rank must be >= 1, got %d", opt, rank)
	}
	if gap < 1 {
		return fmt.Errorf("optimizer.%s.updateProjGap must be >= 1 step, got %d", opt, gap)
	}
	if !(scale > 0) || math.IsInf(scale, 1) {
		return fmt.Errorf("optimizer.%s.scale must be a finite number > 0, got %g", opt, scale)
	}
	return nil
}
