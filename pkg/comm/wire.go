package comm

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/ternml/tern/pkg/tensor"
)

// littleEndian says values in memory already have the wire's byte order, so
// payloads can be viewed as []float32 or []uint16 instead of converted byte
// by byte: float32 payloads are then plain copies.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// asFloat32 views b as float32 values when the host is little-endian and b
// is 4-byte aligned (payloads from the transport usually are, but a
// transport may hand out sub-slices of a larger buffer), else returns nil.
func asFloat32(b []byte) []float32 {
	if !littleEndian || len(b) < 4 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
}

// asUint16 views b as uint16 values under the same conditions for 2 bytes.
func asUint16(b []byte) []uint16 {
	if !littleEndian || len(b) < 2 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%2 != 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/2)
}

// Op is the reduction of AllReduce and Reduce.
type Op uint8

// Reductions. Mean sums first and then divides by the group size in
// float32 (a correctly rounded division, not a multiplication by 1/W, which
// would round twice for group sizes that are not powers of two).
const (
	Sum Op = iota
	Mean
)

func (o Op) String() string {
	switch o {
	case Sum:
		return "sum"
	case Mean:
		return "mean"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

func (o Op) check() error {
	if o > Mean {
		return fmt.Errorf("comm: unknown reduction %v: use Sum or Mean", o)
	}
	return nil
}

// Wire is how float32 values travel. Accumulation is always in float32.
type Wire uint8

// Wire formats.
const (
	// WireFloat32 sends values exactly, 4 bytes each, little-endian.
	WireFloat32 Wire = iota
	// WireBF16 sends values rounded to bfloat16 (round to nearest, ties to
	// even), 2 bytes each, little-endian: half the bytes, 8 significant bits.
	WireBF16
)

func (w Wire) String() string {
	switch w {
	case WireFloat32:
		return "float32"
	case WireBF16:
		return "bf16"
	}
	return fmt.Sprintf("wire(%d)", uint8(w))
}

func (w Wire) check() error {
	if w > WireBF16 {
		return fmt.Errorf("comm: unknown wire format %v: use WireFloat32 or WireBF16", w)
	}
	return nil
}

// Bytes is the size of one value on the wire.
func (w Wire) Bytes() int {
	if w == WireBF16 {
		return 2
	}
	return 4
}

// encode returns src in wire format w, in a new buffer.
func encode(src []float32, w Wire) []byte {
	out := make([]byte, len(src)*w.Bytes())
	if w == WireBF16 {
		if u := asUint16(out); u != nil {
			u = u[:len(src)]
			for i, v := range src {
				u[i] = uint16(tensor.ToBF16(v))
			}
			return out
		}
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], uint16(tensor.ToBF16(v)))
		}
		return out
	}
	if f := asFloat32(out); f != nil {
		copy(f, src)
		return out
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return out
}

// decodeAdd adds the values in src (wire format w) to dst; len(src) must
// be len(dst)*w.Bytes().
func decodeAdd(dst []float32, src []byte, w Wire) {
	if w == WireBF16 {
		src = src[:2*len(dst)]
		if u := asUint16(src); u != nil {
			u = u[:len(dst)]
			for i, v := range u {
				dst[i] += tensor.BF16(v).Float32()
			}
			return
		}
		for i := range dst {
			dst[i] += tensor.BF16(binary.LittleEndian.Uint16(src[2*i:])).Float32()
		}
		return
	}
	src = src[:4*len(dst)]
	if f := asFloat32(src); f != nil {
		f = f[:len(dst)]
		for i, v := range f {
			dst[i] += v
		}
		return
	}
	for i := range dst {
		dst[i] += math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// decodeCopy stores the values in src (wire format w) in dst.
func decodeCopy(dst []float32, src []byte, w Wire) {
	if w == WireBF16 {
		src = src[:2*len(dst)]
		if u := asUint16(src); u != nil {
			u = u[:len(dst)]
			for i, v := range u {
				dst[i] = tensor.BF16(v).Float32()
			}
			return
		}
		for i := range dst {
			dst[i] = tensor.BF16(binary.LittleEndian.Uint16(src[2*i:])).Float32()
		}
		return
	}
	src = src[:4*len(dst)]
	if f := asFloat32(src); f != nil {
		copy(dst, f)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

// roundBF16 rounds x in place to the values WireBF16 would deliver.
func roundBF16(x []float32) {
	for i, v := range x {
		x[i] = tensor.ToBF16(v).Float32()
	}
}

// finish applies the tail of a reduction of w contributions: Mean divides.
func finish(x []float32, op Op, w int) {
	if op != Mean || w == 1 {
		return
	}
	d := float32(w)
	for i := range x {
		x[i] /= d
	}
}
