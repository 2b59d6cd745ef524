package compress

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/tensor"
)

// TestScatterMeanMatchesReference compares against a direct float64
// computation: per coefficient, the values of the ranks that chose it,
// averaged. Values are bfloat16-like (8 significant bits) as decoded
// payloads hold, so the float64 sums are exact and the one rounding is the
// final float32 conversion: the result must equal the reference rounded.
func TestScatterMeanMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	for _, w := range []int{1, 2, 3, 7} {
		l := mustLayout(t, []TensorShape{{"w", []int{97, 130}}}, Options{64, 200, BF16})
		s := l.Tensors[0]
		parts := make([]Tensor, w)
		for r := range parts {
			p := randPayload(l, rng)[0]
			for j, v := range p.Val {
				p.Val[j] = tensor.ToBF16(v).Float32()
			}
			parts[r] = p
		}
		got := make([]float32, s.Grid.Coeffs())
		for i := range got {
			got[i] = 42 // must be overwritten, zeros included
		}
		if err := ScatterMean(got, s.Grid, s.K, parts); err != nil {
			t.Fatal(err)
		}
		ce := s.Grid.ChunkElems()
		sum := make(map[int]float64)
		cnt := make(map[int]int)
		for _, p := range parts {
			for j, ix := range p.Idx {
				pos := (j/s.K)*ce + int(ix)
				sum[pos] += float64(p.Val[j])
				cnt[pos]++
			}
		}
		for i, g := range got {
			want := 0.0
			if cnt[i] > 0 {
				want = sum[i] / float64(cnt[i])
			}
			if g != float32(want) {
				t.Fatalf("W=%d: coefficient %d = %v, want %v (chosen by %d ranks)", w, i, g, float32(want), cnt[i])
			}
		}
	}
}

func TestScatterMeanIsAMeanNotASum(t *testing.T) {
	g, _ := NewGrid([]int{4}, 4)
	parts := []Tensor{
		{Idx: []uint16{0, 1}, Val: []float32{2, 4}},
		{Idx: []uint16{1, 2}, Val: []float32{8, -6}},
		{Idx: []uint16{1, 3}, Val: []float32{3, 1}},
	}
	got := make([]float32, 4)
	if err := ScatterMean(got, g, 2, parts); err != nil {
		t.Fatal(err)
	}
	want := []float32{2, 5, -6, 1} // (4+8+3)/3 = 5; others chosen once
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestScatterMeanRejects(t *testing.T) {
	g, _ := NewGrid([]int{4}, 4)
	cases := []struct {
		dst   int
		k     int
		parts []Tensor
		want  string
	}{
		{4, 5, nil, "k = 5, want it in [1, 4]"},
		{3, 2, nil, "3 coefficients, want 4"},
		{4, 2, []Tensor{{Idx: []uint16{0}, Val: []float32{1}}}, "rank 0 has 1 indices and 1 values, want 2 each"},
		{4, 2, []Tensor{{Idx: []uint16{0, 1}, Val: []float32{1, 1}}, {Idx: []uint16{0, 4}, Val: []float32{1, 1}}}, "rank 1: index 4 is out of range [0, 4)"},
	}
	for _, c := range cases {
		err := ScatterMean(make([]float32, c.dst), g, c.k, c.parts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want it to contain %q", err, c.want)
		}
	}
}

func TestMeanDense(t *testing.T) {
	parts := []Tensor{{Val: []float32{1, 0.1, -3}}, {Val: []float32{2, 0.2, 3}}, {Val: []float32{4, 0.3, 1}}}
	got := make([]float32, 3)
	if err := MeanDense(got, parts); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		want := (float64(parts[0].Val[i]) + float64(parts[1].Val[i]) + float64(parts[2].Val[i])) / 3
		if got[i] != float32(want) {
			t.Fatalf("mean[%d] = %v, want %v", i, got[i], float32(want))
		}
	}
	if err := MeanDense(got, parts[:0]); err == nil {
		t.Error("MeanDense accepted no ranks")
	}
	if err := MeanDense(got[:2], parts); err == nil || !strings.Contains(err.Error(), "rank 0 has 3 values, want 2") {
		t.Errorf("MeanDense with a short destination: %v", err)
	}
}
