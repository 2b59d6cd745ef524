package tensor

import "math"

// Softmax cross-entropy over a vocabulary row shard (Vocabulary Parallelism,
// Yeung et al. 2024, Algorithm 2). For the logits z of the shard's rows
// [lo, lo+rows), the forward kernel reports per token the local max mₛ, the
// local Σ exp(z − mₛ) and the target's logit; the caller combines shards by
// the log-sum-exp rule into the global m and S, and the backward kernel turns
// the logits into
//
//	dz = (exp(z − m)/S − [row = target])·scale
//
// Tokens whose target is negative are ignored: no loss, zero gradient.

// CrossEntropyStats implements Device. The sum of exponentials is taken in
// float64 so that 50k-term rows lose no precision.
func (CPU) CrossEntropyStats(max_, sumExp, targetLogit, logits []float32, rows, lo int, targets []int32) {
	n := len(targets)
	need("CrossEntropyStats", "logits", logits, n*rows)
	need("CrossEntropyStats", "max", max_, n)
	need("CrossEntropyStats", "sumExp", sumExp, n)
	need("CrossEntropyStats", "targetLogit", targetLogit, n)
	ParallelFor(n, rowGrain(rows), func(a, b int) {
		for i := a; i < b; i++ {
			z := logits[i*rows : (i+1)*rows]
			mx := float32(math.Inf(-1))
			for _, v := range z {
				mx = max(mx, v)
			}
			var s float64
			for _, v := range z {
				s += float64(exp32(v - mx))
			}
			max_[i], sumExp[i] = mx, float32(s)
			targetLogit[i] = 0
			if t := int(targets[i]) - lo; targets[i] >= 0 && t >= 0 && t < rows {
				targetLogit[i] = z[t]
			}
		}
	})
}

// CrossEntropyBackward implements Device.
func (CPU) CrossEntropyBackward(logits, gMax, gSum []float32, rows, lo int, targets []int32, scale float32) {
	n := len(targets)
	need("CrossEntropyBackward", "logits", logits, n*rows)
	need("CrossEntropyBackward", "gMax", gMax, n)
	need("CrossEntropyBackward", "gSum", gSum, n)
	ParallelFor(n, rowGrain(rows), func(a, b int) {
		for i := a; i < b; i++ {
			z := logits[i*rows : (i+1)*rows]
			if targets[i] < 0 {
				clear(z)
				continue
			}
			m := gMax[i]
			k := float32(1/float64(gSum[i])) * scale
			for j, v := range z {
				z[j] = exp32(v-m) * k
			}
			if t := int(targets[i]) - lo; t >= 0 && t < rows {
				z[t] -= scale
			}
		}
	})
}
