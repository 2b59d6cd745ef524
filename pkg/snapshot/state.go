package snapshot

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"unsafe"
)

// RankState is one rank's whole training state in memory: what a fresh
// trainer needs to continue as if it had never stopped. Tensors hold the
// parameters this rank trains and its optimizer state (float32 values);
// Meta is the caller's opaque JSON for the scalars (data cursor, RNG,
// schedule position), so this package does not depend on the trainer.
type RankState struct {
	Job     string
	Step    int64
	Rank    int
	Meta    json.RawMessage
	Tensors []StateTensor
}

// StateTensor is one named float32 tensor of a RankState.
type StateTensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// Serialised RankState ("state shard"): one byte slice, so that it can be
// kept as the local copy and cut into erasure-coded fragments as it is.
//
//	magic "TSTATE01" | u32 header length H | header JSON (H bytes) |
//	u32 CRC32C of the header | tensor bytes (float32 little endian,
//	in header order, back to back)
//
// The header lists every tensor's name, shape, byte offset into the
// tensor section and CRC32C (Castagnoli) of its bytes, so a reader
// verifies each tensor, and the header itself, before using anything.
const (
	stateMagic = "TSTATE01"
	// maxStateHeaderBytes bounds the header a reader accepts, so a
	// corrupt length cannot make it allocate without limit.
	maxStateHeaderBytes = 64 << 20
)

// ErrStateCorrupt is wrapped by every error UnmarshalState returns for
// bytes that are not a valid, intact state shard.
var ErrStateCorrupt = errors.New("snapshot state corrupt")

type stateHeader struct {
	Job     string          `json:"job"`
	Step    int64           `json:"step"`
	Rank    int             `json:"rank"`
	Meta    json.RawMessage `json:"meta,omitempty"`
	Tensors []stateEntry    `json:"tensors"`
}

type stateEntry struct {
	Name   string `json:"name"`
	Shape  []int  `json:"shape"`
	Offset int64  `json:"offset"` // into the tensor section, bytes
	CRC32C uint32 `json:"crc32c"`
}

// littleEndian is true on the machines tern runs on; float32 slices are
// then copied as raw bytes, the format's byte order.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// MarshalState serialises st. reserve is extra capacity to leave at the
// end of the returned slice (Encoder.Split uses spare capacity for parity
// instead of copying); 0 for none.
func MarshalState(st *RankState, reserve int) ([]byte, error) {
	h := stateHeader{Job: st.Job, Step: st.Step, Rank: st.Rank, Meta: st.Meta, Tensors: make([]stateEntry, len(st.Tensors))}
	if st.Step < 0 || st.Rank < 0 {
		return nil, fmt.Errorf("marshal rank state: step %d and rank %d must not be negative", st.Step, st.Rank)
	}
	if len(st.Meta) > 0 && !json.Valid(st.Meta) {
		return nil, fmt.Errorf("marshal rank state of rank %d step %d: Meta is not valid JSON", st.Rank, st.Step)
	}
	seen := make(map[string]bool, len(st.Tensors))
	var off int64
	for i, t := range st.Tensors {
		if seen[t.Name] || t.Name == "" {
			return nil, fmt.Errorf("marshal rank state of rank %d step %d: tensor name %q is empty or repeated", st.Rank, st.Step, t.Name)
		}
		seen[t.Name] = true
		if n, ok := elements(t.Shape); !ok || n != len(t.Data) {
			return nil, fmt.Errorf("marshal rank state of rank %d step %d: tensor %q has shape %v but %d values", st.Rank, st.Step, t.Name, t.Shape, len(t.Data))
		}
		h.Tensors[i] = stateEntry{Name: t.Name, Shape: t.Shape, Offset: off}
		off += 4 * int64(len(t.Data))
	}
	// The caller holds the tensors still while this runs (between steps),
	// so the CRCs of the sources are those of the copies; a source that
	// changed mid-copy would be caught by the reader.
	for i, t := range st.Tensors {
		h.Tensors[i].CRC32C = crc32.Update(0, castagnoli, floatBytes(t.Data))
	}
	hdr, err := json.Marshal(&h)
	if err != nil {
		return nil, fmt.Errorf("marshal rank state of rank %d step %d: %w", st.Rank, st.Step, err)
	}
	size := len(stateMagic) + 4 + len(hdr) + 4 + int(off)
	buf := make([]byte, size, size+max(reserve, 0))
	p := copy(buf, stateMagic)
	binary.LittleEndian.PutUint32(buf[p:], uint32(len(hdr)))
	p += 4
	p += copy(buf[p:], hdr)
	binary.LittleEndian.PutUint32(buf[p:], crc32.Update(0, castagnoli, hdr))
	p += 4
	for _, t := range st.Tensors {
		p += putFloats(buf[p:], t.Data)
	}
	return buf, nil
}

// UnmarshalState parses and verifies a state shard: the header's CRC, then
// every tensor's bytes against its CRC, before returning anything. The
// tensors are copies; b may be reused afterwards.
func UnmarshalState(b []byte) (*RankState, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrStateCorrupt, fmt.Sprintf(format, args...))
	}
	if len(b) < len(stateMagic)+8 || string(b[:len(stateMagic)]) != stateMagic {
		return nil, bad("%d bytes without the %q prefix", len(b), stateMagic)
	}
	p := len(stateMagic)
	hl := int(binary.LittleEndian.Uint32(b[p:]))
	p += 4
	if hl > maxStateHeaderBytes || hl > len(b)-p-4 {
		return nil, bad("header of %d bytes in a shard of %d", hl, len(b))
	}
	hdr := b[p : p+hl]
	p += hl
	if got, want := crc32.Update(0, castagnoli, hdr), binary.LittleEndian.Uint32(b[p:]); got != want {
		return nil, bad("header CRC32C %08x, recorded %08x", got, want)
	}
	p += 4
	var h stateHeader
	if err := json.Unmarshal(hdr, &h); err != nil {
		return nil, bad("header: %v", err)
	}
	data := b[p:]
	st := &RankState{Job: h.Job, Step: h.Step, Rank: h.Rank, Meta: h.Meta, Tensors: make([]StateTensor, len(h.Tensors))}
	var off int64
	for i, e := range h.Tensors {
		n, ok := elements(e.Shape)
		if !ok || e.Offset != off || 4*int64(n) > int64(len(data))-off {
			return nil, bad("tensor %q: shape %v at offset %d does not fit the %d tensor bytes", e.Name, e.Shape, e.Offset, len(data))
		}
		raw := data[off : off+4*int64(n)]
		if got := crc32.Update(0, castagnoli, raw); got != e.CRC32C {
			return nil, bad("tensor %q: CRC32C %08x, recorded %08x", e.Name, got, e.CRC32C)
		}
		st.Tensors[i] = StateTensor{Name: e.Name, Shape: e.Shape, Data: getFloats(raw)}
		off += int64(len(raw))
	}
	if off != int64(len(data)) {
		return nil, bad("%d tensor bytes listed, %d present", off, len(data))
	}
	return st, nil
}

// elements is the number of values of shape, false when a dimension is
// negative or the product overflows.
func elements(shape []int) (int, bool) {
	n := 1
	for _, d := range shape {
		if d < 0 || (d > 0 && n > math.MaxInt/4/d) {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// floatBytes views x as its little-endian bytes (no copy) on
// little-endian machines, and encodes a copy elsewhere.
func floatBytes(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
	}
	b := make([]byte, 4*len(x))
	putFloats(b, x)
	return b
}

func putFloats(dst []byte, x []float32) int {
	if littleEndian {
		return copy(dst, floatBytes(x))
	}
	for i, v := range x {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
	return 4 * len(x)
}

func getFloats(b []byte) []float32 {
	x := make([]float32, len(b)/4)
	if littleEndian {
		copy(floatBytes(x), b)
		return x
	}
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return x
}
