package model

import (
	"math"
	"testing"

	"github.com/ternml/tern/pkg/tensor"
)

// Megatron-LM's vocabulary-parallel cross-entropy test
// (tests/unit_tests/tensor_parallel/test_cross_entropy.py), ported: four
// shards of 32 classes each see the logits 0..7 repeated four times for 16
// tokens whose targets 0, 2, ..., 30 all lie in the first shard. The loss of
// token j is log(16·Σ_{k<8} e^k) − (target_j mod 8): 10.2309, 8.2309,
// 6.2309, 4.2309, repeated.
func TestVocabParallelCrossEntropyMegatronGolden(t *testing.T) {
	const tokens, shards, local = 16, 4, 32
	dev := tensor.CPU{}
	targets := make([]int32, tokens)
	for j := range targets {
		targets[j] = int32(2 * j)
	}
	logits := make([]float32, tokens*local)
	for i := range logits {
		logits[i] = float32(i % 8)
	}
	parts := make([]HeadStats, shards)
	for r := range parts {
		st := HeadStats{
			Max: make([]float32, tokens), SumExp: make([]float32, tokens),
			TargetLogit: make([]float32, tokens), HasTarget: make([]bool, tokens),
		}
		lo := r * local
		// The stats kernel reads the logits it is given; each shard's are
		// the same values, as in the Megatron test.
		l := append([]float32(nil), logits...)
		dev.CrossEntropyStats(st.Max, st.SumExp, st.TargetLogit, l, local, lo, targets)
		for j, tg := range targets {
			st.HasTarget[j] = int(tg) >= lo && int(tg) < lo+local
		}
		parts[r] = st
	}
	gMax, gSum := make([]float32, tokens), make([]float32, tokens)
	lossSum, count := CombineHeadStats(parts, gMax, gSum)
	if count != tokens {
		t.Fatalf("count %d, want %d", count, tokens)
	}
	want := []float64{10.2309, 8.2309, 6.2309, 4.2309}
	var wantSum float64
	for j := range targets {
		got := math.Log(float64(gSum[j])) + float64(gMax[j]) - float64(parts[0].TargetLogit[j])
		w := want[j%4]
		wantSum += w
		// The golden values are printed to 4 decimals.
		if math.Abs(got-w) > 5e-5 {
			t.Errorf("token %d: loss %.5f, Megatron %.4f", j, got, w)
		}
	}
	if math.Abs(lossSum-wantSum) > 16*5e-5 {
		t.Errorf("summed loss %.5f, Megatron %.4f", lossSum, wantSum)
	}
}
