package compress

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// sortTopK is the reference: sort a chunk's indices by (|v| descending,
// index ascending), keep k, return them ascending.
func sortTopK(chunk []float32, k int) []uint16 {
	order := make([]int, len(chunk))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		ma, mb := math.Abs(float64(chunk[a])), math.Abs(float64(chunk[b]))
		switch {
		case ma > mb:
			return -1
		case ma < mb:
			return 1
		}
		return a - b
	})
	out := make([]uint16, k)
	for j := range out {
		out[j] = uint16(order[j])
	}
	slices.Sort(out)
	return out
}

func TestTopKMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	cases := []struct {
		shape []int
		chunk int
		k     int
		ties  bool // values from a few levels of both signs: many ties
	}{
		{[]int{64, 64}, 64, 32, false},
		{[]int{64, 64}, 64, 32, true},
		{[]int{97, 130}, 64, 7, true},
		{[]int{16, 16}, 8, 1, false},
		{[]int{16, 16}, 8, 64, true}, // k = every coefficient
		{[]int{16, 16}, 8, 500, false},
		{[]int{5, 3}, 64, 4, true},
		{[]int{97}, 64, 32, true},
	}
	for _, c := range cases {
		g, err := NewGrid(c.shape, c.chunk)
		if err != nil {
			t.Fatal(err)
		}
		coeffs := make([]float32, g.Coeffs())
		for i := range coeffs {
			if c.ties {
				coeffs[i] = float32(rng.IntN(7) - 3) // includes 0 and ±v pairs
				if rng.IntN(5) == 0 {
					coeffs[i] = float32(math.Copysign(0, -1))
				}
			} else {
				coeffs[i] = float32(rng.NormFloat64())
			}
		}
		k := ClampK(c.k, g)
		idx := make([]uint16, g.Chunks()*k)
		val := make([]float32, len(idx))
		if err := TopK(g, coeffs, k, idx, val); err != nil {
			t.Fatal(err)
		}
		ce := g.ChunkElems()
		for ch := 0; ch < g.Chunks(); ch++ {
			chunk := coeffs[ch*ce : (ch+1)*ce]
			want := sortTopK(chunk, k)
			got := idx[ch*k : (ch+1)*k]
			if !slices.Equal(got, want) {
				t.Fatalf("shape %v k %d chunk %d: indices %v, want %v", c.shape, k, ch, got, want)
			}
			for j, i := range got {
				if math.Float32bits(val[ch*k+j]) != math.Float32bits(chunk[i]) {
					t.Fatalf("shape %v chunk %d: value %d = %v, want %v", c.shape, ch, j, val[ch*k+j], chunk[i])
				}
			}
		}
	}
}

func TestClampK(t *testing.T) {
	g, _ := NewGrid([]int{8, 8}, 4) // 16 per chunk
	for _, c := range [][2]int{{-3, 1}, {0, 1}, {1, 1}, {16, 16}, {17, 16}, {1 << 20, 16}} {
		if got := ClampK(c[0], g); got != c[1] {
			t.Errorf("ClampK(%d) = %d, want %d", c[0], got, c[1])
		}
	}
}

func TestTopKSelectsNaN(t *testing.T) {
	g, _ := NewGrid([]int{4}, 4)
	coeffs := []float32{1, float32(math.NaN()), float32(math.Inf(-1)), 2}
	idx, val := make([]uint16, 2), make([]float32, 2)
	if err := TopK(g, coeffs, 2, idx, val); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(idx, []uint16{1, 2}) {
		t.Errorf("indices %v, want the NaN and the infinity [1 2]", idx)
	}
}

func TestTopKRejectsBadArguments(t *testing.T) {
	g, _ := NewGrid([]int{8, 8}, 4)
	n := g.Chunks() * 2
	if err := TopK(g, make([]float32, g.Coeffs()), 17, make([]uint16, n), make([]float32, n)); err == nil {
		t.Error("TopK accepted k above the chunk size")
	}
	if err := TopK(g, make([]float32, g.Coeffs()), 2, make([]uint16, n-1), make([]float32, n)); err == nil {
		t.Error("TopK accepted short indices")
	}
	if err := TopK(g, make([]float32, 3), 2, make([]uint16, n), make([]float32, n)); err == nil {
		t.Error("TopK accepted short coefficients")
	}
}
