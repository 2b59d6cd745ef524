package tensor

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

func TestElementwise(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 7, 4097, 3*elemGrain + 5} {
		x, y := randSlice(r, n), randSlice(r, n)
		y0 := append([]float32(nil), y...)
		Axpy(0.5, x, y)
		for i := range y {
			if want := y0[i] + 0.5*x[i]; y[i] != want {
				t.Fatalf("Axpy n=%d: y[%d] = %v, want %v", n, i, y[i], want)
			}
		}
		s := append([]float32(nil), x...)
		Scale(-3, s)
		for i := range s {
			if want := -3 * x[i]; s[i] != want {
				t.Fatalf("Scale n=%d: [%d] = %v, want %v", n, i, s[i], want)
			}
		}
		d := make([]float32, n)
		Add(d, x, y0)
		for i := range d {
			if want := x[i] + y0[i]; d[i] != want {
				t.Fatalf("Add n=%d: [%d] = %v, want %v", n, i, d[i], want)
			}
		}
		Zero(d)
		for i, v := range d {
			if v != 0 || math.Signbit(float64(v)) {
				t.Fatalf("Zero n=%d: [%d] = %v", n, i, v)
			}
		}
	}
}

func TestLengthMismatchPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Axpy with lengths 2 and 3 did not panic")
		}
	}()
	Axpy(1, make([]float32, 2), make([]float32, 3))
}

// TestReductions checks SumSquares and Dot against a float64 sum (the
// chunked float64 sums of float32 inputs agree with it to a few float64
// ulps per addition) and that they are bitwise identical for GOMAXPROCS 1, 2
// and 4.
func TestReductions(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	for _, n := range []int{0, 1, 5, reduceChunk + 3, reduceParallelMin*3 + 11} {
		x, y := randSlice(r, n), randSlice(r, n)
		var ss, dot, mag float64
		for i := range x {
			ss += float64(x[i]) * float64(x[i])
			dot += float64(x[i]) * float64(y[i])
			mag += math.Abs(float64(x[i]) * float64(y[i]))
		}
		tol := float64(n+1) * 0x1p-52
		var gotSS, gotDot []float64
		for _, p := range []int{1, 2, 4} {
			runtime.GOMAXPROCS(p)
			gotSS = append(gotSS, SumSquares(x))
			gotDot = append(gotDot, Dot(x, y))
		}
		if math.Abs(gotSS[0]-ss) > tol*ss {
			t.Errorf("SumSquares n=%d = %v, want %v", n, gotSS[0], ss)
		}
		if math.Abs(gotDot[0]-dot) > tol*mag {
			t.Errorf("Dot n=%d = %v, want %v", n, gotDot[0], dot)
		}
		for i := 1; i < len(gotSS); i++ {
			if math.Float64bits(gotSS[i]) != math.Float64bits(gotSS[0]) || math.Float64bits(gotDot[i]) != math.Float64bits(gotDot[0]) {
				t.Errorf("n=%d: results differ across GOMAXPROCS: SumSquares %v, Dot %v", n, gotSS, gotDot)
			}
		}
	}
}

func TestParallelForCoversOnce(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	runtime.GOMAXPROCS(3)
	for _, c := range [][2]int{{0, 4}, {1, 4}, {10, 3}, {1000, 7}, {5, 0}} {
		n, grain := c[0], c[1]
		hits := make([]int32, n)
		ParallelFor(n, grain, func(lo, hi int) {
			if g := max(grain, 1); lo%g != 0 || (hi-lo != g && hi != n) {
				t.Errorf("n=%d grain=%d: chunk [%d,%d) not on the fixed grid", n, grain, lo, hi)
			}
			for i := lo; i < hi; i++ {
				hits[i]++
			}
		})
		for i, h := range hits {
			if h != 1 {
				t.Fatalf("n=%d grain=%d: index %d visited %d times", n, grain, i, h)
			}
		}
	}
}
