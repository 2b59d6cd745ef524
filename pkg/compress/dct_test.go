package compress

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// naiveDCT is the orthonormal DCT-II straight from its definition, in
// float64: X_k = s_k Σ_i x_i cos(π(2i+1)k/2N), s_0 = √(1/N), s_k = √(2/N).
func naiveDCT(x []float64) []float64 {
	n := len(x)
	out := make([]float64, n)
	for k := range out {
		s := math.Sqrt(2 / float64(n))
		if k == 0 {
			s = math.Sqrt(1 / float64(n))
		}
		var sum float64
		for i, v := range x {
			sum += v * math.Cos(math.Pi*float64(2*i+1)*float64(k)/float64(2*n))
		}
		out[k] = s * sum
	}
	return out
}

// naiveIDCT inverts naiveDCT (the DCT-III with the same scaling):
// x_i = Σ_k s_k X_k cos(π(2i+1)k/2N).
func naiveIDCT(y []float64) []float64 {
	n := len(y)
	out := make([]float64, n)
	for i := range out {
		var sum float64
		for k, v := range y {
			s := math.Sqrt(2 / float64(n))
			if k == 0 {
				s = math.Sqrt(1 / float64(n))
			}
			sum += s * v * math.Cos(math.Pi*float64(2*i+1)*float64(k)/float64(2*n))
		}
		out[i] = sum
	}
	return out
}

// naiveForward is the chunked 2-D transform in float64: pad, then per block
// the 1-D DCT of every row, then of every column; coefficients chunk-major.
func naiveForward(g Grid, x []float32) []float64 {
	out := make([]float64, g.Coeffs())
	n1, n2 := g.ChunkRows, g.ChunkCols
	for c := 0; c < g.Chunks(); c++ {
		r0, c0 := (c/g.ChunksAcross())*n1, (c%g.ChunksAcross())*n2
		blk := make([][]float64, n1)
		for i := range blk {
			row := make([]float64, n2)
			for j := range row {
				if r0+i < g.Rows && c0+j < g.Cols {
					row[j] = float64(x[(r0+i)*g.Cols+c0+j])
				}
			}
			blk[i] = naiveDCT(row)
		}
		for b := 0; b < n2; b++ {
			col := make([]float64, n1)
			for i := range col {
				col[i] = blk[i][b]
			}
			for a, v := range naiveDCT(col) {
				out[c*n1*n2+a*n2+b] = v
			}
		}
	}
	return out
}

// naiveInverse inverts naiveForward and crops the padding.
func naiveInverse(g Grid, y []float64) []float64 {
	out := make([]float64, g.Elems())
	n1, n2 := g.ChunkRows, g.ChunkCols
	for c := 0; c < g.Chunks(); c++ {
		r0, c0 := (c/g.ChunksAcross())*n1, (c%g.ChunksAcross())*n2
		blk := make([][]float64, n1)
		for a := range blk {
			blk[a] = naiveIDCT(y[c*n1*n2+a*n2 : c*n1*n2+(a+1)*n2])
		}
		for j := 0; j < n2; j++ {
			col := make([]float64, n1)
			for a := range col {
				col[a] = blk[a][j]
			}
			for i, v := range naiveIDCT(col) {
				if r0+i < g.Rows && c0+j < g.Cols {
					out[(r0+i)*g.Cols+c0+j] = v
				}
			}
		}
	}
	return out
}

func randVec(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

func maxAbs64(x []float64) float64 {
	m := 0.0
	for _, v := range x {
		m = max(m, math.Abs(v))
	}
	return m
}

func TestBasisMatchesDefinitionAndIsOrthonormal(t *testing.T) {
	for _, n := range []int{1, 2, 3, 8, 11, 64, 97, 256} {
		d := Basis(n)
		// Column i of D is the DCT of the unit vector e_i.
		for i := 0; i < n; i++ {
			e := make([]float64, n)
			e[i] = 1
			for k, want := range naiveDCT(e) {
				if got := float64(d[k*n+i]); math.Abs(got-want) > 1e-7 {
					t.Fatalf("n=%d: D[%d][%d] = %v, want %v", n, k, i, got, want)
				}
			}
		}
		// D·Dᵀ = I up to the float32 rounding of the entries: each is
		// within 2^-24 of its magnitude, so a dot product of two unit rows
		// is within about 2·2^-24 ≈ 1.2e-7 of exact; 1e-6 is a safe bound.
		for a := 0; a < n; a++ {
			for b := 0; b < n; b++ {
				var s float64
				for i := 0; i < n; i++ {
					s += float64(d[a*n+i]) * float64(d[b*n+i])
				}
				want := 0.0
				if a == b {
					want = 1
				}
				if math.Abs(s-want) > 1e-6 {
					t.Fatalf("n=%d: (D·Dᵀ)[%d][%d] = %v, want %v", n, a, b, s, want)
				}
			}
		}
	}
}

var transformShapes = [][]int{
	{64, 64},   // one full chunk
	{128, 192}, // divisible
	{97, 97},   // prime: padded to 128×128
	{176, 64},  // tiny FFN: padded rows
	{64, 130},  // padded columns
	{5, 3},     // smaller than a chunk
	{10, 200},  // rows smaller than a chunk, padded columns
	{1, 1},
	{97}, // 1-D, padded
	{10}, // 1-D below a chunk
}

// TestForwardMatchesNaive checks the chunked transform against the float64
// definition. Tolerance: the two float32 passes each round once (2^-24
// relative) after exact float64 sums, so the error is a few 2^-24 of the
// block's magnitude; 1e-6 of the largest coefficient leaves a wide margin.
func TestForwardMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tr := NewTransform()
	for _, shape := range transformShapes {
		g, err := NewGrid(shape, 64)
		if err != nil {
			t.Fatal(err)
		}
		x := randVec(rng, g.Elems())
		got := make([]float32, g.Coeffs())
		if err := tr.Forward(g, x, got); err != nil {
			t.Fatal(err)
		}
		want := naiveForward(g, x)
		tol := 1e-6 * maxAbs64(want)
		for i, w := range want {
			if d := math.Abs(float64(got[i]) - w); d > tol {
				t.Fatalf("shape %v: coefficient %d = %v, want %v (|diff| %g > %g)", shape, i, got[i], w, d, tol)
			}
		}
	}
}

// TestInverseMatchesNaive checks the inverse on sparse coefficients (as
// DeMo inverts them) and on dense ones, with the same tolerance argument.
func TestInverseMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	tr := NewTransform()
	for _, shape := range transformShapes {
		g, err := NewGrid(shape, 64)
		if err != nil {
			t.Fatal(err)
		}
		for _, density := range []float64{0.02, 1} {
			y := make([]float32, g.Coeffs())
			for i := range y {
				if rng.Float64() < density {
					y[i] = float32(rng.NormFloat64())
				}
			}
			y64 := make([]float64, len(y))
			for i, v := range y {
				y64[i] = float64(v)
			}
			got := make([]float32, g.Elems())
			if err := tr.Inverse(g, y, got); err != nil {
				t.Fatal(err)
			}
			want := naiveInverse(g, y64)
			tol := 1e-6*maxAbs64(want) + 1e-12
			for i, w := range want {
				if d := math.Abs(float64(got[i]) - w); d > tol {
					t.Fatalf("shape %v density %g: x[%d] = %v, want %v (|diff| %g > %g)", shape, density, i, got[i], w, d, tol)
				}
			}
		}
	}
}

// TestRoundTrip: Inverse∘Forward is the identity within 1e-5 relative to
// the tensor's largest magnitude, padding and all.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	tr := NewTransform()
	for _, chunk := range []int{64, 8, 1} {
		for _, shape := range transformShapes {
			g, err := NewGrid(shape, chunk)
			if err != nil {
				t.Fatal(err)
			}
			x := randVec(rng, g.Elems())
			y := make([]float32, g.Coeffs())
			back := make([]float32, g.Elems())
			if err := tr.Forward(g, x, y); err != nil {
				t.Fatal(err)
			}
			if err := tr.Inverse(g, y, back); err != nil {
				t.Fatal(err)
			}
			var m float64
			for _, v := range x {
				m = max(m, math.Abs(float64(v)))
			}
			for i := range x {
				if d := math.Abs(float64(back[i] - x[i])); d > 1e-5*m {
					t.Fatalf("chunk %d shape %v: x[%d] = %v after the round trip, want %v", chunk, shape, i, back[i], x[i])
				}
			}
		}
	}
}

// TestTransformIndependentOfProcs: chunks are independent, so the result
// has the same bits for any GOMAXPROCS.
func TestTransformIndependentOfProcs(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	g, err := NewGrid([]int{200, 300}, 64)
	if err != nil {
		t.Fatal(err)
	}
	x := randVec(rng, g.Elems())
	run := func(procs int) ([]float32, []float32) {
		old := runtime.GOMAXPROCS(procs)
		defer runtime.GOMAXPROCS(old)
		tr := NewTransform()
		y := make([]float32, g.Coeffs())
		back := make([]float32, g.Elems())
		if err := tr.Forward(g, x, y); err != nil {
			t.Fatal(err)
		}
		if err := tr.Inverse(g, y, back); err != nil {
			t.Fatal(err)
		}
		return y, back
	}
	y1, b1 := run(1)
	y4, b4 := run(4)
	for i := range y1 {
		if math.Float32bits(y1[i]) != math.Float32bits(y4[i]) {
			t.Fatalf("coefficient %d: %v with 1 proc, %v with 4", i, y1[i], y4[i])
		}
	}
	for i := range b1 {
		if math.Float32bits(b1[i]) != math.Float32bits(b4[i]) {
			t.Fatalf("x[%d]: %v with 1 proc, %v with 4", i, b1[i], b4[i])
		}
	}
}

func TestTransformRejectsBadLengths(t *testing.T) {
	g, _ := NewGrid([]int{97, 5}, 64)
	tr := NewTransform()
	if err := tr.Forward(g, make([]float32, 10), make([]float32, g.Coeffs())); err == nil {
		t.Error("Forward accepted a short tensor")
	}
	if err := tr.Inverse(g, make([]float32, g.Coeffs()-1), make([]float32, g.Elems())); err == nil {
		t.Error("Inverse accepted short coefficients")
	}
	if err := tr.Forward(Grid{Rows: 4, Cols: 4, ChunkRows: 3, ChunkCols: 4, PadRows: 4, PadCols: 4}, make([]float32, 16), make([]float32, 16)); err == nil {
		t.Error("Forward accepted an inconsistent grid")
	}
}
