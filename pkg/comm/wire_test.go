package comm

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/ternml/tern/pkg/tensor"
)

// TestWireFormats checks the encodings byte by byte against their
// definition (little-endian float32 bits; little-endian bf16 rounded to
// nearest even), and that decoding from a misaligned buffer, which takes
// the value-by-value path, gives the same values as the aligned fast path.
func TestWireFormats(t *testing.T) {
	src := []float32{0, -0, 1, -1.5, 3.1415927, 1e-40, float32(math.Inf(-1)), 65504, 1.00390625, 1.01171875}
	for _, w := range []Wire{WireFloat32, WireBF16} {
		t.Run(w.String(), func(t *testing.T) {
			enc := encode(src, w)
			if len(enc) != len(src)*w.Bytes() {
				t.Fatalf("%d bytes for %d values", len(enc), len(src))
			}
			for i, v := range src {
				var ok bool
				if w == WireFloat32 {
					ok = binary.LittleEndian.Uint32(enc[4*i:]) == math.Float32bits(v)
				} else {
					ok = binary.LittleEndian.Uint16(enc[2*i:]) == uint16(tensor.ToBF16(v))
				}
				if !ok {
					t.Fatalf("value %d (%g) encoded as %x", i, v, enc)
				}
			}
			misaligned := make([]byte, len(enc)+1)[1:]
			copy(misaligned, enc)
			for _, in := range [][]byte{enc, misaligned} {
				got := make([]float32, len(src))
				decodeCopy(got, in, w)
				sum := make([]float32, len(src))
				for i := range sum {
					sum[i] = 0.25
				}
				decodeAdd(sum, in, w)
				for i, v := range src {
					want := v
					if w == WireBF16 {
						want = tensor.ToBF16(v).Float32()
					}
					if math.Float32bits(got[i]) != math.Float32bits(want) {
						t.Fatalf("decode value %d = %g, want %g", i, got[i], want)
					}
					if math.Float32bits(sum[i]) != math.Float32bits(0.25+want) {
						t.Fatalf("decode-add value %d = %g, want %g", i, sum[i], 0.25+want)
					}
				}
			}
		})
	}
}
