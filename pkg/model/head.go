package model

import (
	"math"

	"github.com/ternml/tern/pkg/tensor"
)

// LM head with a fused softmax cross-entropy over a vocabulary row shard
// (Vocabulary Parallelism, Yeung et al. 2024, Algorithm 2). A shard holding
// rows [lo, hi) of W [V, D] computes logits z = h·Wᵀ for its rows only and
// reports, per token, its local max mₛ, local Σ exp(z − mₛ) and the target
// logit if the target is in the shard (the device's CrossEntropyStats). The
// caller combines shards with the log-sum-exp rule
//
//	m = maxₛ mₛ,   S = Σₛ Sₛ·exp(mₛ − m),   loss = log S + m − z_target
//
// and hands m and S back for the backward pass, where for every logit
//
//	dz = (exp(z − m)/S − [v = target])·scale,  dW += dzᵀ·h,  dh += dz·W
//
// (dz from the device's CrossEntropyBackward, the products from its Gemm).
//
// Tokens whose target is negative are ignored: no loss, zero gradient.

// HeadStats are one shard's per-token softmax statistics.
type HeadStats struct {
	Max         []float32 // max logit over the shard's rows
	SumExp      []float32 // Σ exp(logit − Max) over the shard's rows
	TargetLogit []float32 // the target's logit, valid where HasTarget
	HasTarget   []bool    // the target is a row of this shard
}

// headForward fills logits [n, rows] and st.
func headForward(dev tensor.Device, logits []float32, st HeadStats, h, w []float32, lo, rows, d int, targets []int32) {
	n := len(targets)
	linearForward(dev, logits, h, w, n, d, rows, 0)
	dev.CrossEntropyStats(st.Max, st.SumExp, st.TargetLogit, logits, rows, lo, targets)
	// Host flags from host targets: no device buffer is read.
	for i, tg := range targets {
		t := int(tg) - lo
		st.HasTarget[i] = tg >= 0 && t >= 0 && t < rows
	}
}

// headBackward turns logits into dz in place, then accumulates dW and dh.
func headBackward(dev tensor.Device, dw, dh, logits, h, w []float32, lo, rows, d int, targets []int32, gMax, gSum []float32, scale float32) {
	n := len(targets)
	dev.CrossEntropyBackward(logits, gMax, gSum, rows, lo, targets, scale)
	if n == 0 || rows == 0 {
		return
	}
	dev.Gemm(true, false, rows, d, n, 1, logits, rows, h, d, 1, dw, d)
	dev.Gemm(false, false, n, d, rows, 1, logits, rows, w, d, 1, dh, d)
}

// CombineHeadStats merges the statistics of all vocabulary shards of the same
// tokens into the global max and sum of exponentials (written to gMax and
// gSumExp, each one entry per token) and returns the summed loss over tokens
// that have a target, in float64, and their number. A shard with no rows
// (SumExp 0) contributes nothing.
func CombineHeadStats(parts []HeadStats, gMax, gSumExp []float32) (lossSum float64, count int) {
	for i := range gMax {
		m := float32(math.Inf(-1))
		for _, p := range parts {
			if p.SumExp[i] > 0 {
				m = max(m, p.Max[i])
			}
		}
		var s float64
		target, has := float32(0), false
		for _, p := range parts {
			if p.SumExp[i] > 0 {
				s += float64(p.SumExp[i]) * math.Exp(float64(p.Max[i]-m))
			}
			if p.HasTarget[i] {
				target, has = p.TargetLogit[i], true
			}
		}
		gMax[i], gSumExp[i] = m, float32(s)
		if has {
			lossSum += math.Log(float64(gSumExp[i])) + float64(m) - float64(target)
			count++
		}
	}
	return lossSum, count
}
