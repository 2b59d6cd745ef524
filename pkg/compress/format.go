package compress

import "fmt"

// Format is how the selected coefficient values travel.
type Format uint8

// Value formats.
const (
	// BF16 sends every value as a bfloat16 (round to nearest, ties to
	// even, as tensor.ToBF16): 2 bytes per value.
	BF16 Format = 1
	// Sign sends one bit per value, its sign (set = negative, 8 per byte,
	// least significant bit first, as Psyche packs DisTrO's 1-bit values),
	// plus one bfloat16 scale per chunk, the mean magnitude of the chunk's
	// selected values. A value decodes to ±scale.
	//
	// Psyche decodes a sign as ±1 with no scale. The scale costs 2 bytes per
	// chunk and buys two things: a chunk whose selected values are all zero
	// (a tensor that has never had a gradient, such as the embedding rows of
	// tokens not seen yet) decodes to zeros instead of k spurious ±1 votes,
	// and the sender's error feedback can subtract exactly what it sent,
	// the scaled sign (‖v‖₁/k)·sign(v) of error-feedback signSGD
	// (Karimireddy et al. 2019, "Error Feedback Fixes SignSGD", Algorithm 1).
	// The scatter-mean of such values across ranks is a vote weighted by
	// each rank's scale; DeMo takes the sign after the inverse transform, so
	// only these relative weights matter.
	Sign Format = 2
)

// Format names as a job spec writes them.
const (
	FormatNameBF16 = "bf16"
	FormatNameSign = "sign"
)

// ParseFormat returns the format named s ("bf16" or "sign").
func ParseFormat(s string) (Format, error) {
	switch s {
	case FormatNameBF16:
		return BF16, nil
	case FormatNameSign:
		return Sign, nil
	}
	return 0, fmt.Errorf("value format must be %q or %q, got %q", FormatNameBF16, FormatNameSign, s)
}

func (f Format) String() string {
	switch f {
	case BF16:
		return FormatNameBF16
	case Sign:
		return FormatNameSign
	}
	return fmt.Sprintf("format(%d)", uint8(f))
}

func (f Format) valid() bool { return f == BF16 || f == Sign }

// Sizes of the wire encoding in bytes.
const (
	IndexBytes = 2 // a uint16 index within a chunk
	bf16Bytes  = 2
	// denseBytes is one value of a dense tensor: a bfloat16, rounded
	// like the sparse values (the float32 of wire version 1 took 4).
	denseBytes = bf16Bytes
)

// ValueBytes is the number of bytes the k values of one chunk take in
// format f: 2k for BF16; for Sign ⌈k/8⌉ bytes of sign bits (each chunk's
// bits start on a fresh byte) plus the 2-byte scale.
func ValueBytes(f Format, k int) int {
	if f == Sign {
		return (k+7)/8 + bf16Bytes
	}
	return bf16Bytes * k
}

// ChunkBytes is the number of bytes one chunk with k selected coefficients
// takes on the wire: k indices and the values.
func ChunkBytes(f Format, k int) int { return IndexBytes*k + ValueBytes(f, k) }
