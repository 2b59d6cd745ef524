package compress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/tensor"
)

// Tensor is one tensor's part of a payload. For a sparse tensor Idx and
// Val hold K entries per chunk, chunk after chunk, the indices within each
// chunk strictly increasing (as TopK writes them); for a dense tensor Val
// holds the values and Idx is empty.
type Tensor struct {
	Idx []uint16
	Val []float32
}

// ErrInvalidPayload is wrapped by every error Decode returns: the bytes are
// not a payload of the layout (corrupt, truncated, from a rank with another
// model or settings, or hostile).
var ErrInvalidPayload = errors.New("invalid compressed payload")

// Encode appends the payload of ts to dst[:0] and returns it; it is
// exactly l.Bytes() long. Little-endian throughout:
//
//	header   "DCTZ", version 2 (u8), format (u8), 0 (u16), layout hash (u64),
//	         tensor count (u32), then per tensor: kind (u8), count (u32), k (u32)
//	sparse   per chunk: k indices (u16), then the values:
//	           bf16: k bfloat16
//	           sign: the scale (bfloat16), ⌈k/8⌉ bytes of sign bits, LSB first
//	dense    the values as bfloat16 (in either format)
//
// (count is the number of chunks of a sparse tensor, of values of a dense
// one; k is 0 for a dense tensor.) It rejects entries that do not match the
// layout, indices out of range or not increasing within a chunk, and values
// that are not finite or overflow bfloat16. Values are rounded to bfloat16
// (ties to even); a caller that keeps error feedback subtracts what Decode
// returns for its own payload, not what it passed in.
func (l *Layout) Encode(dst []byte, ts []Tensor) ([]byte, error) {
	if len(ts) != len(l.Tensors) {
		return nil, fmt.Errorf("encode: %d tensors, want %d", len(ts), len(l.Tensors))
	}
	b := dst[:0]
	if cap(b) < l.bytes {
		b = make([]byte, 0, l.bytes)
	}
	b = append(b, wireMagic[:]...)
	b = append(b, wireVersion, byte(l.Format), 0, 0)
	b = binary.LittleEndian.AppendUint64(b, l.hash)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(l.Tensors)))
	for _, s := range l.Tensors {
		b = append(b, byte(s.Kind))
		b = binary.LittleEndian.AppendUint32(b, uint32(s.Count()))
		b = binary.LittleEndian.AppendUint32(b, uint32(s.K))
	}
	var err error
	for i, s := range l.Tensors {
		if b, err = l.encodeTensor(b, s, ts[i]); err != nil {
			return nil, fmt.Errorf("encode: tensor %d (%s): %w", i, s.Name, err)
		}
	}
	if len(b) != l.bytes {
		panic(fmt.Sprintf("compress: encoded %d bytes, layout says %d", len(b), l.bytes))
	}
	return b, nil
}

func (l *Layout) encodeTensor(b []byte, s Spec, t Tensor) ([]byte, error) {
	if s.Kind == Dense {
		if len(t.Idx) != 0 || len(t.Val) != s.Len {
			return nil, fmt.Errorf("dense tensor has %d indices and %d values, want none and %d", len(t.Idx), len(t.Val), s.Len)
		}
		for j, v := range t.Val {
			if !finite(v) {
				return nil, fmt.Errorf("value %d is %v, want a finite number", j, v)
			}
			h := tensor.ToBF16(v)
			if !finite(h.Float32()) {
				return nil, fmt.Errorf("value %d (%v) overflows bfloat16", j, v)
			}
			b = binary.LittleEndian.AppendUint16(b, uint16(h))
		}
		return b, nil
	}
	n, k, ce := s.Entries(), s.K, s.Grid.ChunkElems()
	if len(t.Idx) != n || len(t.Val) != n {
		return nil, fmt.Errorf("%d indices and %d values, want %d each (%d chunks × k %d)", len(t.Idx), len(t.Val), n, s.Grid.Chunks(), k)
	}
	for c := 0; c < s.Grid.Chunks(); c++ {
		idx, val := t.Idx[c*k:(c+1)*k], t.Val[c*k:(c+1)*k]
		prev := -1
		for _, ix := range idx {
			if int(ix) >= ce || int(ix) <= prev {
				return nil, fmt.Errorf("chunk %d: indices %v: want strictly increasing indices below %d", c, idx, ce)
			}
			prev = int(ix)
			b = binary.LittleEndian.AppendUint16(b, ix)
		}
		var sum float64
		for j, v := range val {
			if !finite(v) {
				return nil, fmt.Errorf("chunk %d: value %d is %v, want a finite number", c, j, v)
			}
			sum += math.Abs(float64(v))
		}
		switch l.Format {
		case BF16:
			for j, v := range val {
				h := tensor.ToBF16(v)
				if !finite(h.Float32()) {
					return nil, fmt.Errorf("chunk %d: value %d (%v) overflows bfloat16", c, j, v)
				}
				b = binary.LittleEndian.AppendUint16(b, uint16(h))
			}
		case Sign:
			scale := tensor.ToBF16(float32(sum / float64(k)))
			if !finite(scale.Float32()) {
				return nil, fmt.Errorf("chunk %d: mean magnitude %v overflows bfloat16", c, sum/float64(k))
			}
			b = binary.LittleEndian.AppendUint16(b, uint16(scale))
			for j := 0; j < k; j += 8 {
				var byt byte
				for q, v := range val[j:min(j+8, k)] {
					if math.Signbit(float64(v)) {
						byt |= 1 << q
					}
				}
				b = append(b, byt)
			}
		}
	}
	return b, nil
}

func finite(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }

// Decode parses a payload of layout l into ts, reusing its slices where
// they are large enough, and returns it. Sign values decode to ±scale.
// Everything is checked before use: the header against the layout (magic,
// version, format, tensor count, each tensor's kind, count and k, the
// layout hash), the exact length, every index (below the chunk's size and
// strictly increasing within its chunk, so no coefficient is named twice),
// every value (finite; a sign scale ≥ 0; unused sign bits zero). A payload
// that decodes re-encodes to the same bytes. Errors wrap ErrInvalidPayload;
// Decode never panics on any input.
func (l *Layout) Decode(b []byte, ts []Tensor) ([]Tensor, error) {
	if err := l.checkHeader(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	if cap(ts) < len(l.Tensors) {
		ts = make([]Tensor, len(l.Tensors))
	}
	ts = ts[:len(l.Tensors)]
	off := l.HeaderBytes()
	for i, s := range l.Tensors {
		n := s.BodyBytes(l.Format)
		if err := l.decodeTensor(b[off:off+n], s, &ts[i]); err != nil {
			return nil, fmt.Errorf("%w: tensor %d (%s): %w", ErrInvalidPayload, i, s.Name, err)
		}
		off += n
	}
	return ts, nil
}

func (l *Layout) checkHeader(b []byte) error {
	if len(b) < fixedHeaderBytes {
		return fmt.Errorf("%d bytes, shorter than the %d-byte header", len(b), fixedHeaderBytes)
	}
	if [4]byte(b[:4]) != wireMagic {
		return fmt.Errorf("magic %q, want %q", b[:4], wireMagic[:])
	}
	if b[4] != wireVersion {
		return fmt.Errorf("wire format version %d, want %d: every rank of a job must run a build with the same DeMo wire format", b[4], wireVersion)
	}
	if Format(b[5]) != l.Format {
		return fmt.Errorf("value format %v, want %v", Format(b[5]), l.Format)
	}
	if b[6] != 0 || b[7] != 0 {
		return fmt.Errorf("reserved header bytes are %d, %d, want 0", b[6], b[7])
	}
	if n := binary.LittleEndian.Uint32(b[16:20]); int64(n) != int64(len(l.Tensors)) {
		return fmt.Errorf("%d tensors, want %d", n, len(l.Tensors))
	}
	if len(b) < l.HeaderBytes() {
		return fmt.Errorf("%d bytes, shorter than the %d-byte header of %d tensors", len(b), l.HeaderBytes(), len(l.Tensors))
	}
	for i, s := range l.Tensors {
		e := b[fixedHeaderBytes+i*tensorEntryBytes:]
		kind, count, k := Kind(e[0]), binary.LittleEndian.Uint32(e[1:5]), binary.LittleEndian.Uint32(e[5:9])
		if kind != s.Kind || int64(count) != int64(s.Count()) || int64(k) != int64(s.K) {
			return fmt.Errorf("tensor %d (%s) is %v with count %d and k %d, want %v with count %d and k %d",
				i, s.Name, kind, count, k, s.Kind, s.Count(), s.K)
		}
	}
	if h := binary.LittleEndian.Uint64(b[8:16]); h != l.hash {
		return fmt.Errorf("layout hash %#016x, want %#016x: the sender's tensors or settings differ", h, l.hash)
	}
	if len(b) != l.bytes {
		return fmt.Errorf("%d bytes, want %d for this layout", len(b), l.bytes)
	}
	return nil
}

func (l *Layout) decodeTensor(b []byte, s Spec, t *Tensor) error {
	if s.Kind == Dense {
		t.Idx = t.Idx[:0]
		t.Val = resize(t.Val, s.Len)
		for j := range t.Val {
			v := tensor.BF16(binary.LittleEndian.Uint16(b[denseBytes*j:])).Float32()
			if !finite(v) {
				return fmt.Errorf("value %d is %v, want a finite number", j, v)
			}
			t.Val[j] = v
		}
		return nil
	}
	n, k, ce := s.Entries(), s.K, s.Grid.ChunkElems()
	if cap(t.Idx) < n {
		t.Idx = make([]uint16, n)
	}
	t.Idx = t.Idx[:n]
	t.Val = resize(t.Val, n)
	cb := ChunkBytes(l.Format, k)
	for c := 0; c < s.Grid.Chunks(); c++ {
		cbuf := b[c*cb : (c+1)*cb]
		idx, val := t.Idx[c*k:(c+1)*k], t.Val[c*k:(c+1)*k]
		prev := -1
		for j := range idx {
			ix := binary.LittleEndian.Uint16(cbuf[2*j:])
			if int(ix) >= ce {
				return fmt.Errorf("chunk %d: index %d is out of range [0, %d)", c, ix, ce)
			}
			if int(ix) <= prev {
				return fmt.Errorf("chunk %d: index %d follows %d; indices must be strictly increasing", c, ix, prev)
			}
			prev = int(ix)
			idx[j] = ix
		}
		vbuf := cbuf[IndexBytes*k:]
		switch l.Format {
		case BF16:
			for j := range val {
				v := tensor.BF16(binary.LittleEndian.Uint16(vbuf[2*j:])).Float32()
				if !finite(v) {
					return fmt.Errorf("chunk %d: value %d is %v, want a finite number", c, j, v)
				}
				val[j] = v
			}
		case Sign:
			h := tensor.BF16(binary.LittleEndian.Uint16(vbuf))
			scale := h.Float32()
			if !finite(scale) || h&0x8000 != 0 {
				return fmt.Errorf("chunk %d: scale is %v, want a finite number >= +0", c, scale)
			}
			bits := vbuf[bf16Bytes:]
			for j := range val {
				v := scale
				if bits[j/8]>>(j%8)&1 != 0 {
					v = -scale
				}
				val[j] = v
			}
			if r := k % 8; r != 0 && bits[len(bits)-1]>>r != 0 {
				return fmt.Errorf("chunk %d: unused sign bits are %#02x, want 0", c, bits[len(bits)-1]>>r)
			}
		}
	}
	return nil
}

func resize(v []float32, n int) []float32 {
	if cap(v) < n {
		return make([]float32, n)
	}
	return v[:n]
}
