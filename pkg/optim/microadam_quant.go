package optim

import (
	"math"
	"math/bits"
	"slices"
)

// Helpers of MicroAdam's compressed state: outward bfloat16 rounding of the
// per-block range, the 4-bit asymmetric quantiser of the error feedback, and
// the exact block top-k.

// microAdamLevels is the largest 4-bit code: codes 0..15 split [lo, hi] into
// 15 steps (Modoranu et al. 2024, §3, "Quantization": asymmetric min-max
// quantisation with b = 4 bits).
const microAdamLevels = 15

// microAdamBF16Down returns the bits of the largest bfloat16 value ≤ x. The reference
// stores the block minimum rounded to nearest, which can put the minimum
// above some residual values and give negative codes; rounding outward keeps
// every value inside [lo, hi].
func microAdamBF16Down(x float32) uint32 {
	u := math.Float32bits(x)
	t := u &^ 0xffff
	if t == u || x != x { // exact, or NaN (kept truncated)
		return t >> 16
	}
	if x > 0 {
		return t >> 16 // truncation moves positive values down
	}
	return (t + 0x10000) >> 16 // one bf16 step away from zero
}

// microAdamBF16Up returns the bits of the smallest bfloat16 value ≥ x (see microAdamBF16Down).
func microAdamBF16Up(x float32) uint32 {
	u := math.Float32bits(x)
	t := u &^ 0xffff
	if t == u || x != x {
		return t >> 16
	}
	if x < 0 {
		return t >> 16 // truncation moves negative values up
	}
	return (t + 0x10000) >> 16
}

func microAdamBF16Float(b uint32) float32 { return math.Float32frombits(b << 16) }

// microAdamRange turns a block's minimum and maximum into the stored bf16
// pair and the quantisation step u = (hi−lo)/15.
func microAdamRange(lo, hi float32) (loBits, hiBits uint32, loF, u float32) {
	loBits, hiBits = microAdamBF16Down(lo), microAdamBF16Up(hi)
	loF = microAdamBF16Float(loBits)
	u = (microAdamBF16Float(hiBits) - loF) / microAdamLevels
	return loBits, hiBits, loF, u
}

// microAdamCode quantises x with the block's lower bound lo and step u:
// round((x−lo)/u), i.e. floor((x−lo)/u + 1/2) as the reference kernel does.
// Two guards the reference lacks: u == 0 (a constant block, where the kernel
// divides 0 by 0) gives code 0, which dequantises to lo exactly; and the code
// is clamped to [0, 15] (NaN to 0) instead of wrapping in a uint8 cast. With
// the outward-rounded bounds of microAdamRange, finite values never need the
// clamp (the quotient stays within 15·(1+3·2⁻²⁴)); it keeps non-finite
// gradients and bounds from any other source from writing a code that
// spills into the neighbouring nibble.
func microAdamCode(x, lo, u float32) uint32 {
	if u == 0 {
		return 0
	}
	// floor then clamp, with the float-to-integer truncation as the floor
	// (c ≥ 0 there).
	c := (x-lo)/u + 0.5
	if !(c >= 0) {
		return 0
	}
	if c >= microAdamLevels {
		return microAdamLevels
	}
	return uint32(c)
}

// microAdamDequant is Q⁻¹: lo + code·u. The explicit conversion keeps the
// product rounded on its own (no fused multiply-add), so the value is the
// same on every architecture.
func microAdamDequant(code uint32, lo, u float32) float32 {
	return lo + float32(float32(code)*u)
}

// microAdamKey orders block entries by |a| descending, then index ascending:
// the float32 bits of |a| order like the values (non-negative, NaN above
// +Inf), and the complemented index makes a lower index the larger key. All
// keys of a block are distinct, so "the kb largest keys" is one exact set
// whatever the selection algorithm — ties are broken identically on every
// machine, unlike torch.topk(sorted=False).
func microAdamKey(a float32, j int) uint64 {
	return uint64(math.Float32bits(a)&0x7fffffff)<<32 | uint64(^uint32(j))
}

// microAdamKthLargest returns the k-th largest of the distinct keys (1 ≤ k ≤ len),
// reordering keys. It is a quickselect with a median-of-three pivot that falls
// back to sorting the remaining range after too many rounds, so adversarial
// inputs cost O(n log n), not O(n²).
func microAdamKthLargest(keys []uint64, k int) uint64 {
	lo, hi := 0, len(keys)-1
	want := k - 1 // position in descending order
	budget := 2 * bits.Len(uint(len(keys)))
	for lo < hi {
		if budget == 0 {
			slices.SortFunc(keys[lo:hi+1], func(x, y uint64) int {
				switch {
				case x > y:
					return -1
				case x < y:
					return 1
				}
				return 0
			})
			return keys[want]
		}
		budget--
		mid := lo + (hi-lo)/2
		// Median of three moved to hi as the pivot.
		if keys[mid] > keys[lo] {
			keys[mid], keys[lo] = keys[lo], keys[mid]
		}
		if keys[hi] > keys[lo] {
			keys[hi], keys[lo] = keys[lo], keys[hi]
		}
		if keys[mid] > keys[hi] {
			keys[mid], keys[hi] = keys[hi], keys[mid]
		}
		pivot := keys[hi]
		// Lomuto partition, descending: keys > pivot first.
		s := lo
		for i := lo; i < hi; i++ {
			if keys[i] > pivot {
				keys[i], keys[s] = keys[s], keys[i]
				s++
			}
		}
		keys[s], keys[hi] = keys[hi], keys[s]
		switch {
		case s == want:
			return keys[s]
		case s < want:
			lo = s + 1
		default:
			hi = s - 1
		}
	}
	return keys[want]
}
