package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// gemmRef64 is the float64 oracle: C = alpha*op(A)*op(B) + beta*C, and it
// also returns, per element, Σ_p |op(A)[i,p]|·|op(B)[p,j]| for the error bound.
func gemmRef64(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) (want, mag []float64) {
	want = make([]float64, m*n)
	mag = make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, sa float64
			for p := 0; p < k; p++ {
				var av, bv float64
				if transA {
					av = float64(a[p*lda+i])
				} else {
					av = float64(a[i*lda+p])
				}
				if transB {
					bv = float64(b[j*ldb+p])
				} else {
					bv = float64(b[p*ldb+j])
				}
				s += av * bv
				sa += math.Abs(av * bv)
			}
			v := float64(alpha) * s
			mg := math.Abs(float64(alpha)) * sa
			if beta != 0 {
				v += float64(beta) * float64(c[i*ldc+j])
				mg += math.Abs(float64(beta) * float64(c[i*ldc+j]))
			}
			want[i*n+j] = v
			mag[i*n+j] = mg
		}
	}
	return want, mag
}

func randSlice(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

type gemmCase struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	pad            int // extra leading-dimension columns on A, B and C
}

func (g gemmCase) String() string {
	return fmt.Sprintf("tA=%v,tB=%v,%dx%dx%d,alpha=%g,beta=%g,pad=%d", g.transA, g.transB, g.m, g.n, g.k, g.alpha, g.beta, g.pad)
}

// run builds random operands for the case, runs Gemm and checks it against
// gemmRef64. Tolerance: a float32 dot product of length K accumulated in order
// (with or without FMA) has error at most about K·u·Σ|a||b| (Higham, Accuracy
// and Stability of Numerical Algorithms, 2nd ed., eq. 3.5, u = 2⁻²⁴); the
// alpha/beta epilogue adds a few u. We allow (K+4)·u·mag, which a wrong
// element (missing or duplicated term) exceeds by orders of magnitude.
func (g gemmCase) run(t *testing.T, seed uint64) []float32 {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	ar, ac := g.m, g.k
	if g.transA {
		ar, ac = g.k, g.m
	}
	br, bc := g.k, g.n
	if g.transB {
		br, bc = g.n, g.k
	}
	lda, ldb, ldc := max(ac+g.pad, 1), max(bc+g.pad, 1), max(g.n+g.pad, 1)
	a := randSlice(r, max(ar*lda, 1))
	b := randSlice(r, max(br*ldb, 1))
	c := randSlice(r, max(g.m*ldc, 1))
	if g.beta == 0 {
		for i := range c {
			c[i] = float32(math.NaN())
		}
	}
	orig := append([]float32(nil), c...)
	want, mag := gemmRef64(g.transA, g.transB, g.m, g.n, g.k, g.alpha, a, lda, b, ldb, g.beta, c, ldc)
	Gemm(g.transA, g.transB, g.m, g.n, g.k, g.alpha, a, lda, b, ldb, g.beta, c, ldc)
	const u = 1.0 / (1 << 24)
	tol := float64(g.k+4) * u
	for i := 0; i < g.m; i++ {
		for j := 0; j < ldc; j++ {
			got := c[i*ldc+j]
			if j >= g.n {
				if math.Float32bits(got) != math.Float32bits(orig[i*ldc+j]) {
					t.Fatalf("%v: C[%d,%d] beyond n was written: %v -> %v", g, i, j, orig[i*ldc+j], got)
				}
				continue
			}
			w, mg := want[i*g.n+j], mag[i*g.n+j]
			if d := math.Abs(float64(got) - w); !(d <= tol*mg+1e-30) {
				t.Fatalf("%v: C[%d,%d] = %v, want %v (|diff| %g > %g)", g, i, j, got, w, d, tol*mg)
			}
		}
	}
	return c
}

// withBackend runs f with the named GEMM backend and restores the previous one.
func withBackend(t *testing.T, name string, f func()) {
	t.Helper()
	prev := GemmBackend()
	if err := SetGemmBackend(name); err != nil {
		t.Fatalf("SetGemmBackend(%q): %v", name, err)
	}
	defer SetGemmBackend(prev)
	f()
}

// deterministicBackends are the backends whose bits are promised; "asm" only
// where the CPU has it.
func deterministicBackends(t *testing.T) []string {
	if hasAsmKernel {
		return []string{BackendAsm, BackendGo}
	}
	t.Logf("no AVX2/FMA assembly kernel on this machine; testing the Go kernel only")
	return []string{BackendGo}
}

func gemmCases(short bool) []gemmCase {
	var cs []gemmCase
	dims := [][3]int{
		{1, 1, 1}, {7, 7, 7}, {6, 16, 1}, {63, 65, 7}, {65, 7, 1000}, {1, 1000, 63},
		{1000, 1, 65}, {13, 17, 300}, {64, 64, 64}, {97, 150, 513},
		{4100, 9, 33}, // more rows than one packed A super-block
	}
	if !short {
		dims = append(dims, [3]int{1000, 63, 65}, [3]int{150, 4100, 31}, [3]int{300, 200, 600})
	}
	for _, d := range dims {
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				cs = append(cs, gemmCase{transA: tA, transB: tB, m: d[0], n: d[1], k: d[2], alpha: 1, beta: 0})
			}
		}
	}
	// alpha/beta variants and padded leading dimensions on a few shapes.
	for _, d := range [][3]int{{7, 33, 19}, {65, 7, 1000}, {128, 96, 300}} {
		for _, ab := range [][2]float32{{1, 1}, {0.5, -2}, {-1.5, 0}, {0, 0.25}, {0, 0}, {2, 1}} {
			for _, tA := range []bool{false, true} {
				cs = append(cs, gemmCase{transA: tA, transB: !tA, m: d[0], n: d[1], k: d[2], alpha: ab[0], beta: ab[1], pad: 3})
			}
		}
	}
	return cs
}

func TestGemmAgainstFloat64(t *testing.T) {
	for _, be := range deterministicBackends(t) {
		withBackend(t, be, func() {
			for i, g := range gemmCases(testing.Short()) {
				g.run(t, uint64(i))
			}
		})
	}
}

func TestGemmKZero(t *testing.T) {
	for _, be := range deterministicBackends(t) {
		withBackend(t, be, func() {
			c := []float32{1, 2, 3, float32(math.NaN())}
			Gemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 2, c, 2)
			if c[0] != 2 || c[1] != 4 || c[2] != 6 || !math.IsNaN(float64(c[3])) {
				t.Fatalf("k=0 beta=2: got %v", c)
			}
			Gemm(false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0, c, 2)
			for _, v := range c {
				if v != 0 {
					t.Fatalf("k=0 beta=0: got %v, want zeros", c)
				}
			}
		})
	}
}

// TestGemmDeterministic checks bitwise equality across GOMAXPROCS 1 and 2 and
// across repeated calls, on shapes large enough to run in parallel and with
// edges in every dimension.
func TestGemmDeterministic(t *testing.T) {
	shapes := []gemmCase{
		{transA: false, transB: true, m: 257, n: 770, k: 600, alpha: 1, beta: 0},
		{transA: false, transB: false, m: 130, n: 4200, k: 70, alpha: 1, beta: 0},
		{transA: true, transB: false, m: 300, n: 200, k: 513, alpha: 0.5, beta: 1},
		{transA: true, transB: true, m: 4200, n: 40, k: 30, alpha: 1, beta: -1},
	}
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	for _, be := range deterministicBackends(t) {
		withBackend(t, be, func() {
			for i, g := range shapes {
				runtime.GOMAXPROCS(1)
				c1 := g.run(t, uint64(100+i))
				runtime.GOMAXPROCS(2)
				c2 := g.run(t, uint64(100+i))
				c3 := g.run(t, uint64(100+i))
				runtime.GOMAXPROCS(4)
				c4 := g.run(t, uint64(100+i))
				for idx := range c1 {
					b1 := math.Float32bits(c1[idx])
					if b1 != math.Float32bits(c2[idx]) || b1 != math.Float32bits(c3[idx]) || b1 != math.Float32bits(c4[idx]) {
						t.Fatalf("%s %v: element %d differs across GOMAXPROCS/calls: %v %v %v %v", be, g, idx, c1[idx], c2[idx], c3[idx], c4[idx])
					}
				}
			}
		})
	}
}
