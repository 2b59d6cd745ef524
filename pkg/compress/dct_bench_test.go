package compress

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkTransform measures the chunked transform of a 768×3072 weight
// (a GPT-2-small MLP matrix, 576 chunks of 64×64): the dense forward pass
// and the inverse of a top-32-per-chunk selection, as DeMo runs them.
func BenchmarkTransform(b *testing.B) {
	g, err := NewGrid([]int{768, 3072}, 64)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	x := randVec(rng, g.Elems())
	y := make([]float32, g.Coeffs())
	tr := NewTransform()
	b.Run("forward", func(b *testing.B) {
		b.SetBytes(int64(4 * g.Elems()))
		for b.Loop() {
			if err := tr.Forward(g, x, y); err != nil {
				b.Fatal(err)
			}
		}
	})
	k := 32
	idx := make([]uint16, g.Chunks()*k)
	val := make([]float32, len(idx))
	if err := tr.Forward(g, x, y); err != nil {
		b.Fatal(err)
	}
	if err := TopK(g, y, k, idx, val); err != nil {
		b.Fatal(err)
	}
	b.Run("topk", func(b *testing.B) {
		b.SetBytes(int64(4 * g.Elems()))
		for b.Loop() {
			if err := TopK(g, y, k, idx, val); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("inverse-top32", func(b *testing.B) {
		if err := ScatterMean(y, g, k, []Tensor{{Idx: idx, Val: val}}); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(4 * g.Elems()))
		for b.Loop() {
			if err := tr.Inverse(g, y, x); err != nil {
				b.Fatal(err)
			}
		}
	})
}
