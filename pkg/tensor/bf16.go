package tensor

import "math"

// BF16 is a bfloat16 value: the top 16 bits of an IEEE-754 float32 (sign, 8
// exponent bits, 7 mantissa bits). It keeps float32's range with 8 bits of
// precision, which is what gradients and activations sent over the wire need.
type BF16 uint16

// ToBF16 rounds f to the nearest bfloat16, ties to even. Values beyond the
// largest finite bfloat16 (after rounding) become ±Inf, as IEEE rounding
// requires; NaN stays NaN with the quiet bit set, even when its payload lives
// only in the low 16 bits that truncation would drop (which would otherwise
// turn it into Inf). Subnormals round like any other value.
func ToBF16(f float32) BF16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN
		return BF16(u>>16 | 0x0040)
	}
	// Adding 0x7fff rounds the dropped half up when it exceeds one half;
	// adding the kept LSB as well breaks exact ties towards even. A carry
	// out of the mantissa correctly bumps the exponent (up to Inf).
	u += 0x7fff + (u>>16)&1
	return BF16(u >> 16)
}

// Float32 widens b exactly.
func (b BF16) Float32() float32 { return math.Float32frombits(uint32(b) << 16) }

// EncodeBF16 stores ToBF16(src[i]) in dst[i]. It panics if dst is shorter
// than src.
func EncodeBF16(dst []BF16, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = ToBF16(v)
	}
}

// DecodeBF16 stores src[i] widened to float32 in dst[i]. It panics if dst is
// shorter than src.
func DecodeBF16(dst []float32, src []BF16) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = math.Float32frombits(uint32(v) << 16)
	}
}
