package tensor

import (
	"math"
	"testing"
)

func TestToBF16Table(t *testing.T) {
	f := math.Float32frombits
	cases := []struct {
		name string
		in   float32
		want BF16
	}{
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3f80},
		{"minus two", -2, 0xc000},
		{"exact", f(0x3f810000), 0x3f81},
		{"below half rounds down", f(0x3f807fff), 0x3f80},
		{"above half rounds up", f(0x3f808001), 0x3f81},
		{"tie to even stays (even)", f(0x3f808000), 0x3f80},
		{"tie to even goes up (odd)", f(0x3f818000), 0x3f82},
		{"negative tie to even", f(0xbf818000), 0xbf82},
		{"carry into exponent", f(0x3fffffff), 0x4000},
		{"max finite bf16", f(0x7f7f0000), 0x7f7f},
		{"float32 max rounds to Inf", math.MaxFloat32, 0x7f80},
		{"just below Inf tie rounds to Inf (odd)", f(0x7f7f8000), 0x7f80},
		{"just below tie stays finite", f(0x7f7f7fff), 0x7f7f},
		{"+Inf", float32(math.Inf(1)), 0x7f80},
		{"-Inf", float32(math.Inf(-1)), 0xff80},
		{"NaN", float32(math.NaN()), 0x7fc0},
		{"NaN with low payload only stays NaN", f(0x7f800001), 0x7fc0},
		{"signalling NaN gets quiet bit", f(0x7f810000), 0x7fc1},
		{"negative NaN", f(0xffc00000), 0xffc0},
		{"smallest subnormal rounds to zero", f(0x00000001), 0x0000},
		{"subnormal exact", f(0x00010000), 0x0001},
		{"subnormal tie to even", f(0x00018000), 0x0002},
		{"largest subnormal rounds to min normal", f(0x007fffff), 0x0080},
		{"min normal", f(0x00800000), 0x0080},
	}
	for _, c := range cases {
		got := ToBF16(c.in)
		if got != c.want {
			t.Errorf("%s: ToBF16(%#08x) = %#04x, want %#04x", c.name, math.Float32bits(c.in), got, c.want)
		}
	}
}

// TestBF16RoundTripNearest checks, against an independent computation in
// float64, that ToBF16 picks the nearest representable value (ties to even)
// over a sweep of bit patterns, and that Float32 is exact.
func TestBF16RoundTripNearest(t *testing.T) {
	for u := uint32(0); u < 1<<32-1<<20; u += 0x1003 {
		x := math.Float32frombits(u)
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			continue
		}
		got := ToBF16(x)
		lo := BF16(u >> 16) // truncation toward zero
		hi := lo + 1
		dl := math.Abs(float64(x) - bf16Value(lo))
		dh := math.Abs(float64(x) - bf16Value(hi))
		want := lo
		if dh < dl || (dh == dl && lo&1 == 1) {
			want = hi
		}
		if got != want {
			t.Fatalf("ToBF16(%#08x) = %#04x, want %#04x", u, got, want)
		}
		if back := ToBF16(got.Float32()); back != got {
			t.Fatalf("round trip of %#04x gave %#04x", got, back)
		}
	}
}

// bf16Value is b's value in float64, except that the Inf pattern stands for
// 2¹²⁸, the next power of two past the largest finite value, which is where
// IEEE rounding places the overflow threshold.
func bf16Value(b BF16) float64 {
	if b&0x7fff == 0x7f80 {
		return math.Copysign(math.Ldexp(1, 128), float64(b.Float32()))
	}
	return float64(b.Float32())
}

func TestEncodeDecodeBF16(t *testing.T) {
	src := []float32{1, -0.5, 3.14159, float32(math.NaN()), float32(math.Inf(-1)), 1e-40}
	enc := make([]BF16, len(src))
	EncodeBF16(enc, src)
	dec := make([]float32, len(src))
	DecodeBF16(dec, enc)
	for i, v := range src {
		if enc[i] != ToBF16(v) {
			t.Errorf("EncodeBF16[%d] = %#04x, want %#04x", i, enc[i], ToBF16(v))
		}
		if math.Float32bits(dec[i]) != uint32(enc[i])<<16 {
			t.Errorf("DecodeBF16[%d] = %v, want bits %#08x", i, dec[i], uint32(enc[i])<<16)
		}
	}
	if dec[2] != 3.140625 {
		t.Errorf("3.14159 round trip = %v, want 3.140625", dec[2])
	}
}
