package snapshot

import (
	"slices"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/safetensors"
)

// rowsOf is rows [lo, hi) of a [global, 2] tensor whose row r is (10r, 10r+1).
func rowsOf(global, lo, hi int) Tensor {
	var v []float32
	for r := lo; r < hi; r++ {
		v = append(v, float32(10*r), float32(10*r+1))
	}
	return Tensor{Tensor: safetensors.F32("w", []int{hi - lo, 2}, v), GlobalShape: []int{global, 2}, RowLo: lo, RowHi: hi}
}

func TestAssembleRows(t *testing.T) {
	// Written with 2 stages over 6 rows (5 real, one padding row); read by
	// a layout that pads the same 5 rows to 8 and holds rows [4, 8).
	parts := []Tensor{rowsOf(6, 3, 6), rowsOf(6, 0, 3)}
	dst := []float32{-1, -1, -1, -1, -1, -1, -1, -1}
	if err := AssembleRows("w", parts, []int{2}, 4, 8, 5, dst); err != nil {
		t.Fatal(err)
	}
	// Row 4 is real; rows 5..7 are this layout's padding, left as they were.
	if want := []float32{40, 41, -1, -1, -1, -1, -1, -1}; !slices.Equal(dst, want) {
		t.Fatalf("rows [4, 8): %v, want %v", dst, want)
	}
	dst = make([]float32, 6)
	if err := AssembleRows("w", parts, []int{2}, 2, 5, 5, dst); err != nil {
		t.Fatal(err)
	}
	if want := []float32{20, 21, 30, 31, 40, 41}; !slices.Equal(dst, want) {
		t.Fatalf("rows [2, 5) across two shards: %v, want %v", dst, want)
	}

	for _, c := range []struct {
		name  string
		parts []Tensor
		tail  []int
		n     int
		want  string
	}{
		{"missing rows", []Tensor{rowsOf(6, 0, 3)}, []int{2}, 10, "row 3 of 5 is in no shard"},
		{"overlap", []Tensor{rowsOf(6, 0, 4), rowsOf(6, 3, 6)}, []int{2}, 10, "row 3 is held by two shards"},
		{"other columns", []Tensor{rowsOf(6, 0, 6)}, []int{3}, 15, "global shape [6 2]"},
		{"wrong destination", []Tensor{rowsOf(6, 0, 6)}, []int{2}, 9, "do not fit 9 values"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := AssembleRows("w", c.parts, c.tail, 0, 5, 5, make([]float32, c.n))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}
