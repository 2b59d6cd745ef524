package safetensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strings"

	"github.com/ternml/tern/pkg/tensor"
)

// ErrInvalid is wrapped by every error that reports a malformed file or a
// tensor that cannot be written, so callers can tell corruption from I/O
// failure with errors.Is.
var ErrInvalid = errors.New("safetensors: invalid")

// Data type names as they appear in the header.
const (
	DTypeF64    = "F64"
	DTypeF32    = "F32"
	DTypeF16    = "F16"
	DTypeBF16   = "BF16"
	DTypeI64    = "I64"
	DTypeI32    = "I32"
	DTypeI16    = "I16"
	DTypeI8     = "I8"
	DTypeU8     = "U8"
	DTypeU16    = "U16"
	DTypeU32    = "U32"
	DTypeU64    = "U64"
	DTypeBool   = "BOOL"
	DTypeF8E4M3 = "F8_E4M3"
	DTypeF8E5M2 = "F8_E5M2"
	DTypeF8E8M0 = "F8_E8M0"
	DTypeC64    = "C64"
	metaKey     = "__metadata__"
)

// dtypeSizes holds the element size in bytes of every dtype this package
// accepts. The sub-byte types of recent upstream versions (F4, F6_*) are
// left out on purpose: their byte size is not elements×size, and tern never
// produces them.
var dtypeSizes = map[string]int{
	DTypeF64: 8, DTypeF32: 4, DTypeF16: 2, DTypeBF16: 2,
	DTypeI64: 8, DTypeI32: 4, DTypeI16: 2, DTypeI8: 1,
	DTypeU64: 8, DTypeU32: 4, DTypeU16: 2, DTypeU8: 1,
	DTypeBool: 1, DTypeF8E4M3: 1, DTypeF8E5M2: 1, DTypeF8E8M0: 1, DTypeC64: 8,
}

// DTypeSize returns the size in bytes of one element of dtype, and false if
// the dtype is not supported.
func DTypeSize(dtype string) (int, bool) {
	n, ok := dtypeSizes[dtype]
	return n, ok
}

func knownDTypes() string {
	names := make([]string, 0, len(dtypeSizes))
	for k := range dtypeSizes {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Tensor is one named tensor: its dtype, its shape (row-major), and its raw
// little-endian bytes.
type Tensor struct {
	Name  string
	DType string
	Shape []int
	Data  []byte
}

// byteSize returns elements(shape)×size(dtype), rejecting unknown dtypes,
// negative dimensions and products that overflow int64.
func byteSize(dtype string, shape []int) (int64, error) {
	size, ok := dtypeSizes[dtype]
	if !ok {
		return 0, fmt.Errorf("unknown dtype %q (allowed: %s)", dtype, knownDTypes())
	}
	n := uint64(size)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v: dimension %d is %d, must be >= 0", shape, i, d)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("shape %v of %s: byte size overflows int64", shape, dtype)
		}
		n = lo
	}
	return int64(n), nil
}

// NumBytes returns the number of bytes a tensor of this dtype and shape
// occupies.
func NumBytes(dtype string, shape []int) (int64, error) {
	n, err := byteSize(dtype, shape)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return n, nil
}

// Validate checks that the tensor can be written: a name other than the
// reserved metadata key, a known
// dtype, and exactly as many bytes as the shape and dtype require.
func (t Tensor) Validate() error {
	if t.Name == metaKey {
		return fmt.Errorf("%w: tensor name %q is reserved for file metadata", ErrInvalid, metaKey)
	}
	n, err := byteSize(t.DType, t.Shape)
	if err != nil {
		return fmt.Errorf("%w: tensor %q: %v", ErrInvalid, t.Name, err)
	}
	if int64(len(t.Data)) != n {
		return fmt.Errorf("%w: tensor %q: %s%v needs %d bytes, data has %d", ErrInvalid, t.Name, t.DType, t.Shape, n, len(t.Data))
	}
	return nil
}

// F32 builds a float32 tensor holding a little-endian copy of v.
// Write rejects it if len(v) does not match the shape.
func F32(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return Tensor{Name: name, DType: DTypeF32, Shape: append([]int(nil), shape...), Data: b}
}

// BF16 builds a bfloat16 tensor from v, rounding each value to the
// nearest bfloat16 with ties to even (NaN stays NaN).
func BF16(name string, shape []int, v []float32) Tensor {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(tensor.ToBF16(x)))
	}
	return Tensor{Name: name, DType: DTypeBF16, Shape: append([]int(nil), shape...), Data: b}
}

// Float32s decodes the tensor to float32. F32 is copied; BF16 and F16 are
// widened exactly. Other dtypes are an error rather than a silent cast.
func (t Tensor) Float32s() ([]float32, error) {
	size, ok := dtypeSizes[t.DType]
	if !ok || (t.DType != DTypeF32 && t.DType != DTypeBF16 && t.DType != DTypeF16) {
		return nil, fmt.Errorf("tensor %q: Float32s supports F32, BF16 and F16, not %q", t.Name, t.DType)
	}
	if len(t.Data)%size != 0 {
		return nil, fmt.Errorf("%w: tensor %q: %d bytes is not a whole number of %s elements", ErrInvalid, t.Name, len(t.Data), t.DType)
	}
	out := make([]float32, len(t.Data)/size)
	switch t.DType {
	case DTypeF32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	case DTypeBF16:
		for i := range out {
			out[i] = tensor.BF16(binary.LittleEndian.Uint16(t.Data[2*i:])).Float32()
		}
	case DTypeF16:
		for i := range out {
			out[i] = f16ToFloat32(binary.LittleEndian.Uint16(t.Data[2*i:]))
		}
	}
	return out, nil
}

// f16ToFloat32 widens an IEEE 754 binary16 value; every binary16 value,
// subnormals included, is exactly representable in binary32.
func f16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0: // normal: rebias 15 -> 127
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	default: // subnormal: value = man × 2^-24
		f := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
}
