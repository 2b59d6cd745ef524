package compress

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
)

// TensorShape is one tensor of a payload as the model holds it.
type TensorShape struct {
	Name  string // used in errors and in the layout hash, not sent
	Shape []int
}

// Options are the compression settings all ranks of a job share.
type Options struct {
	Chunk  int // target chunk side, in [1, MaxChunk]
	TopK   int // coefficients kept per chunk (≥ 1; clamped per tensor by ClampK)
	Format Format
}

// Kind says how a tensor travels.
type Kind uint8

// Tensor kinds.
const (
	// Dense tensors travel whole, every value a bfloat16 (round to
	// nearest, ties to even, as tensor.ToBF16).
	Dense Kind = 0
	// Sparse tensors travel as the top-k DCT coefficients of every chunk.
	Sparse Kind = 1
)

func (k Kind) String() string {
	if k == Sparse {
		return "sparse"
	}
	return "dense"
}

// Spec is how one tensor of a layout travels.
type Spec struct {
	Name string
	Kind Kind
	Len  int  // elements of the tensor
	Grid Grid // Sparse: the chunk grid
	K    int  // Sparse: coefficients sent per chunk, ClampK(TopK, Grid)
}

// Count is the per-tensor count the wire header carries: the number of
// chunks of a sparse tensor, the number of values of a dense one.
func (s Spec) Count() int {
	if s.Kind == Sparse {
		return s.Grid.Chunks()
	}
	return s.Len
}

// Entries is the number of (index, value) pairs of a sparse tensor, or of
// values of a dense one.
func (s Spec) Entries() int {
	if s.Kind == Sparse {
		return s.Grid.Chunks() * s.K
	}
	return s.Len
}

// BodyBytes is the number of bytes the tensor's data takes in format f:
// chunks·ChunkBytes(f, K) for a sparse tensor, 2·Len for a dense one (in
// either format).
func (s Spec) BodyBytes(f Format) int {
	if s.Kind == Sparse {
		return s.Grid.Chunks() * ChunkBytes(f, s.K)
	}
	return denseBytes * s.Len
}

// Layout is the shape of one rank's payload: which tensors, in which order,
// each sparse or dense. Every rank builds the same Layout from the same
// model and settings (NewLayout), so a payload carries no shapes; its header
// carries enough (a hash of the layout, each tensor's count and k) for the
// receiver to reject a payload built from a different layout.
type Layout struct {
	Format  Format
	Tensors []Spec
	hash    uint64
	bytes   int
}

// maxWireCount bounds the counts the header stores in 32 bits.
const maxWireCount = math.MaxUint32

// NewLayout builds the layout of a payload of the given tensors in order.
// The rule is DeMo's as tern runs it: 2-D tensors are sparse (chunked
// DCT-II, top-k per chunk), 1-D tensors (norm gains) dense. The reference
// compresses 1-D tensors too, keeping k = 32 of every 64 coefficients with
// 8-byte indices, more bytes than the dense tensor
// (research/demo-and-decentralized.md §1.8, pitfall 3); sending them whole
// costs 2 bytes per value (bfloat16) and they are a small fraction of a
// model.
func NewLayout(shapes []TensorShape, o Options) (*Layout, error) {
	if !o.Format.valid() {
		return nil, fmt.Errorf("layout: value format %v is not %s or %s", o.Format, BF16, Sign)
	}
	if o.TopK < 1 {
		return nil, fmt.Errorf("layout: top-k must be >= 1, got %d", o.TopK)
	}
	if o.Chunk < 1 || o.Chunk > MaxChunk {
		return nil, fmt.Errorf("layout: chunk side must be in [1, %d], got %d", MaxChunk, o.Chunk)
	}
	if int64(len(shapes)) > maxWireCount {
		return nil, fmt.Errorf("layout: %d tensors, at most %d allowed", len(shapes), int64(maxWireCount))
	}
	l := &Layout{Format: o.Format, Tensors: make([]Spec, len(shapes))}
	for i, ts := range shapes {
		s := Spec{Name: ts.Name}
		switch len(ts.Shape) {
		case 1:
			if ts.Shape[0] < 1 || int64(ts.Shape[0]) > maxWireCount {
				return nil, fmt.Errorf("layout: tensor %d (%s) has shape %v: a dense tensor needs 1 to %d values", i, ts.Name, ts.Shape, int64(maxWireCount))
			}
			s.Kind, s.Len = Dense, ts.Shape[0]
		case 2:
			g, err := NewGrid(ts.Shape, o.Chunk)
			if err != nil {
				return nil, fmt.Errorf("layout: tensor %d (%s): %w", i, ts.Name, err)
			}
			if int64(g.Chunks()) > maxWireCount {
				return nil, fmt.Errorf("layout: tensor %d (%s) has %d chunks, at most %d allowed", i, ts.Name, g.Chunks(), int64(maxWireCount))
			}
			s.Kind, s.Len, s.Grid, s.K = Sparse, g.Elems(), g, ClampK(o.TopK, g)
		default:
			return nil, fmt.Errorf("layout: tensor %d (%s) has shape %v: only 1-D (sent dense) and 2-D (compressed) tensors are supported", i, ts.Name, ts.Shape)
		}
		l.Tensors[i] = s
	}
	l.bytes = HeaderBytes(len(shapes))
	for _, s := range l.Tensors {
		l.bytes += s.BodyBytes(o.Format)
	}
	l.hash = l.computeHash()
	return l, nil
}

// PayloadBytes is the exact length of the payload one rank sends per step
// for tensors of the given shapes, header included (Layout.Bytes).
func PayloadBytes(shapes []TensorShape, o Options) (int, error) {
	l, err := NewLayout(shapes, o)
	if err != nil {
		return 0, err
	}
	return l.Bytes(), nil
}

// Wire header: magic, version, format, two reserved zero bytes, the layout
// hash and the tensor count, then per tensor its kind, count and k.
var wireMagic = [4]byte{'D', 'C', 'T', 'Z'}

// wireVersion 2 sends dense tensors as bfloat16; version 1 sent them as
// float32. A payload of another version is rejected by its header, before
// its length is looked at, so a rank running an older build gets an error
// that names the versions rather than a length mismatch.
const (
	wireVersion      = 2
	fixedHeaderBytes = 4 + 1 + 1 + 2 + 8 + 4
	tensorEntryBytes = 1 + 4 + 4
)

// HeaderBytes is the length of the header of a payload of n tensors:
// 20 bytes plus 9 per tensor.
func HeaderBytes(n int) int { return fixedHeaderBytes + tensorEntryBytes*n }

// Bytes is the exact length of every payload of this layout.
func (l *Layout) Bytes() int { return l.bytes }

// HeaderBytes is the length of this layout's header.
func (l *Layout) HeaderBytes() int { return HeaderBytes(len(l.Tensors)) }

// Hash identifies the layout: FNV-1a (64-bit) of the format and, per tensor,
// its name, kind, shape, chunk sides and k. Payloads carry it so that a
// rank built from another model or other settings is detected even where
// the per-tensor counts happen to agree.
func (l *Layout) Hash() uint64 { return l.hash }

func (l *Layout) computeHash() uint64 {
	h := fnv.New64a()
	b := append([]byte(nil), wireMagic[:]...)
	b = append(b, wireVersion, byte(l.Format))
	h.Write(b)
	for _, s := range l.Tensors {
		b = binary.LittleEndian.AppendUint64(b[:0], uint64(len(s.Name)))
		b = append(b, s.Name...)
		b = append(b, byte(s.Kind))
		for _, v := range []int{s.Len, s.Grid.Rows, s.Grid.Cols, s.Grid.ChunkRows, s.Grid.ChunkCols, s.K} {
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		}
		h.Write(b)
	}
	return h.Sum64()
}
