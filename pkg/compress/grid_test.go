package compress

import (
	"strings"
	"testing"
)

func TestNewGrid(t *testing.T) {
	cases := []struct {
		shape              []int
		chunk              int
		cr, cc, pr, pc, nc int
	}{
		{[]int{128, 192}, 64, 64, 64, 128, 192, 6},
		{[]int{97, 64}, 64, 64, 64, 128, 64, 2},  // prime rows: padded, not chunk 1
		{[]int{97, 97}, 64, 64, 64, 128, 128, 4}, // prime both ways
		{[]int{176, 64}, 64, 64, 64, 192, 64, 3}, // the tiny preset's FFN
		{[]int{10, 200}, 64, 10, 64, 10, 256, 4}, // rows below the chunk: one chunk of all rows
		{[]int{5, 3}, 64, 5, 3, 5, 3, 1},         // smaller than a chunk both ways
		{[]int{256, 256}, 256, 256, 256, 256, 256, 1},
		{[]int{97}, 64, 64, 1, 128, 1, 2}, // 1-D: chunks of the column
		{[]int{10}, 64, 10, 1, 10, 1, 1},
		{[]int{1, 1}, 1, 1, 1, 1, 1, 1},
	}
	for _, c := range cases {
		g, err := NewGrid(c.shape, c.chunk)
		if err != nil {
			t.Fatalf("NewGrid(%v, %d): %v", c.shape, c.chunk, err)
		}
		if g.ChunkRows != c.cr || g.ChunkCols != c.cc || g.PadRows != c.pr || g.PadCols != c.pc || g.Chunks() != c.nc {
			t.Errorf("NewGrid(%v, %d) = %+v with %d chunks, want chunk %dx%d, padded %dx%d, %d chunks",
				c.shape, c.chunk, g, g.Chunks(), c.cr, c.cc, c.pr, c.pc, c.nc)
		}
		if g.Coeffs() != g.Chunks()*g.ChunkElems() || g.check() != nil {
			t.Errorf("NewGrid(%v, %d) = %+v is inconsistent", c.shape, c.chunk, g)
		}
	}
}

func TestNewGridRejects(t *testing.T) {
	cases := []struct {
		shape []int
		chunk int
		want  string
	}{
		{[]int{64, 64}, 0, "chunk side must be in [1, 256], got 0"},
		{[]int{64, 64}, 257, "chunk side must be in [1, 256], got 257"},
		{[]int{}, 64, "only 1-D and 2-D"},
		{[]int{2, 3, 4}, 64, "only 1-D and 2-D"},
		{[]int{0, 3}, 64, "every dimension must be >= 1"},
		{[]int{-1}, 64, "every dimension must be >= 1"},
		{[]int{1 << 30, 1 << 30}, 64, "more than"},
	}
	for _, c := range cases {
		_, err := NewGrid(c.shape, c.chunk)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewGrid(%v, %d) error %v, want it to contain %q", c.shape, c.chunk, err, c.want)
		}
	}
}
