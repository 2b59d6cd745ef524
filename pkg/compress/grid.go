package compress

import "fmt"

// MaxChunk is the largest chunk side: a chunk then holds at most
// MaxChunk² = 65536 coefficients, so an index within it fits a uint16.
const MaxChunk = 256

// DefaultChunk is DeMo's chunk side (bloc97/DeMo compression_chunk).
const DefaultChunk = 64

// maxGridElems bounds a tensor's padded coefficient count, so sizes and
// the wire format's 32-bit counts cannot overflow.
const maxGridElems = 1 << 40

// Grid is how a tensor is cut into chunks for the transform. A 2-D tensor
// of Rows×Cols is zero-padded to PadRows×PadCols and cut into
// ChunkRows×ChunkCols blocks; a 1-D tensor of length L is the column L×1.
// Chunks are numbered row-major over the block grid, and coefficients are
// stored chunk after chunk, each chunk row-major (frequency a along rows,
// b along columns at a·ChunkCols+b).
//
// A Grid is a pure function of the shape and the target chunk (NewGrid),
// so every rank derives the same one from the same model and no shape
// needs to be sent.
type Grid struct {
	Rows, Cols           int // the tensor's shape (Cols = 1 for a vector)
	ChunkRows, ChunkCols int
	PadRows, PadCols     int // multiples of ChunkRows, ChunkCols
}

// ChunkSize is the chunk side used along a dimension of size dim for a
// target chunk side: the target when dim ≥ target, the whole dimension when
// it is smaller. A dimension the target does not divide is zero-padded up to
// the next multiple (see NewGrid). The reference DeMo instead takes the
// largest divisor of dim below the target, which for a prime dimension is 1:
// one coefficient per chunk, each sent with its own index, more bytes than
// the dense tensor (research/demo-and-decentralized.md §1.8, pitfall 2).
func ChunkSize(dim, target int) int { return min(dim, target) }

// NewGrid returns the grid of a tensor of the given shape (one or two
// dimensions, each ≥ 1) for a target chunk side in [1, MaxChunk].
//
// Padding: along a dimension the target does not divide, the tensor is
// extended with zeros to the next multiple of the chunk. The padded rows and
// columns take part in the transform like any other (their coefficients can
// be selected and sent); the inverse transform crops them away. At most
// chunk−1 zeros are added per dimension, so the coefficient count grows by
// less than a factor (1+chunk/dim) per dimension.
func NewGrid(shape []int, chunk int) (Grid, error) {
	if chunk < 1 || chunk > MaxChunk {
		return Grid{}, fmt.Errorf("chunk side must be in [1, %d], got %d", MaxChunk, chunk)
	}
	var rows, cols int
	switch len(shape) {
	case 1:
		rows, cols = shape[0], 1
	case 2:
		rows, cols = shape[0], shape[1]
	default:
		return Grid{}, fmt.Errorf("shape %v: only 1-D and 2-D tensors are chunked", shape)
	}
	if rows < 1 || cols < 1 {
		return Grid{}, fmt.Errorf("shape %v: every dimension must be >= 1", shape)
	}
	g := Grid{Rows: rows, Cols: cols, ChunkRows: ChunkSize(rows, chunk), ChunkCols: ChunkSize(cols, chunk)}
	if len(shape) == 1 {
		g.ChunkCols = 1
	}
	g.PadRows = roundUp(rows, g.ChunkRows)
	g.PadCols = roundUp(cols, g.ChunkCols)
	if g.PadRows > maxGridElems/g.PadCols {
		return Grid{}, fmt.Errorf("shape %v: more than %d coefficients", shape, int64(maxGridElems))
	}
	return g, nil
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }

// ChunksDown is the number of chunks along the rows.
func (g Grid) ChunksDown() int { return g.PadRows / g.ChunkRows }

// ChunksAcross is the number of chunks along the columns.
func (g Grid) ChunksAcross() int { return g.PadCols / g.ChunkCols }

// Chunks is the number of chunks.
func (g Grid) Chunks() int { return g.ChunksDown() * g.ChunksAcross() }

// ChunkElems is the number of coefficients of one chunk.
func (g Grid) ChunkElems() int { return g.ChunkRows * g.ChunkCols }

// Coeffs is the number of coefficients of the whole (padded) tensor.
func (g Grid) Coeffs() int { return g.PadRows * g.PadCols }

// Elems is the number of elements of the tensor itself.
func (g Grid) Elems() int { return g.Rows * g.Cols }

// check reports whether g is a grid NewGrid could have produced.
func (g Grid) check() error {
	ok := g.Rows >= 1 && g.Cols >= 1 &&
		g.ChunkRows >= 1 && g.ChunkRows <= MaxChunk && g.ChunkCols >= 1 && g.ChunkCols <= MaxChunk &&
		g.ChunkRows <= g.Rows && g.ChunkCols <= g.Cols &&
		g.PadRows == roundUp(g.Rows, g.ChunkRows) && g.PadCols == roundUp(g.Cols, g.ChunkCols) &&
		g.PadRows <= maxGridElems/g.PadCols
	if !ok {
		return fmt.Errorf("invalid grid %+v", g)
	}
	return nil
}
