package tensor

import (
	"math"
	"testing"
)

// exp32 must stay within 4 ulp (relative 2.4e-7 at float32's 2^-24 unit
// roundoff) of the float64 exponential over the whole finite range, and
// saturate to 0 and +Inf at the ends.
func TestExp32(t *testing.T) {
	var worst float64
	for x := float32(-87); x < 88.7; x += 0.00137 {
		want := math.Exp(float64(x))
		got := float64(exp32(x))
		if e := math.Abs(got-want) / want; e > worst {
			worst = e
		}
	}
	t.Logf("max relative error %.3g", worst)
	if worst > 2.4e-7 {
		t.Errorf("exp32 max relative error %.3g > 2.4e-7", worst)
	}
	if exp32(float32(math.Inf(-1))) != 0 || exp32(-200) != 0 {
		t.Error("exp32 of very negative arguments must be 0")
	}
	if !math.IsInf(float64(exp32(100)), 1) {
		t.Error("exp32(100) must be +Inf")
	}
	if v := exp32(float32(math.NaN())); v == v {
		t.Error("exp32(NaN) must be NaN")
	}
	if exp32(0) != 1 {
		t.Errorf("exp32(0) = %v, want 1", exp32(0))
	}
}
