package compress

import "fmt"

// ScatterMean combines the sparse entries that W ranks sent for one tensor
// into its dense coefficients: dst (g.Coeffs() values) gets, for every
// coefficient, the mean of the values of the ranks that selected it, and 0
// where no rank did. This is DeMo's scatter_reduce(reduce="mean",
// include_self=False) (research/demo-and-decentralized.md §1.4): a
// coefficient chosen by m of the W ranks is divided by m, not by W.
//
// parts holds the ranks' entries in rank order, each K per chunk with
// indices strictly increasing within a chunk (as Decode returns them). The
// sums are accumulated in float64, rank 0 first, and divided once, so every
// rank that combines the same parts gets the same bits whatever the order
// the parts arrived in. (With 8-bit bf16 significands the float64 sums are
// moreover exact unless the values span more than about 2^45 in magnitude.)
func ScatterMean(dst []float32, g Grid, k int, parts []Tensor) error {
	if err := g.check(); err != nil {
		return fmt.Errorf("scatter-mean: %w", err)
	}
	if k != ClampK(k, g) {
		return fmt.Errorf("scatter-mean: k = %d, want it in [1, %d]", k, g.ChunkElems())
	}
	if len(dst) != g.Coeffs() {
		return fmt.Errorf("scatter-mean: %d coefficients, want %d", len(dst), g.Coeffs())
	}
	ce, n := g.ChunkElems(), g.Chunks()*k
	for r, p := range parts {
		if len(p.Idx) != n || len(p.Val) != n {
			return fmt.Errorf("scatter-mean: rank %d has %d indices and %d values, want %d each", r, len(p.Idx), len(p.Val), n)
		}
		for _, ix := range p.Idx {
			if int(ix) >= ce {
				return fmt.Errorf("scatter-mean: rank %d: index %d is out of range [0, %d)", r, ix, ce)
			}
		}
	}
	sum := make([]float64, ce)
	cnt := make([]uint32, ce)
	for c := 0; c < g.Chunks(); c++ {
		for _, p := range parts {
			for j, ix := range p.Idx[c*k : (c+1)*k] {
				sum[ix] += float64(p.Val[c*k+j])
				cnt[ix]++
			}
		}
		out := dst[c*ce : (c+1)*ce]
		for i := range out {
			if cnt[i] == 0 {
				out[i] = 0
				continue
			}
			out[i] = float32(sum[i] / float64(cnt[i]))
			sum[i], cnt[i] = 0, 0
		}
	}
	return nil
}

// MeanDense writes into dst the element-wise mean of the ranks' dense
// values (parts in rank order), summed in float64 from rank 0 and divided
// by the number of ranks once: the same bits on every rank.
func MeanDense(dst []float32, parts []Tensor) error {
	if len(parts) == 0 {
		return fmt.Errorf("dense mean: no ranks")
	}
	for r, p := range parts {
		if len(p.Val) != len(dst) {
			return fmt.Errorf("dense mean: rank %d has %d values, want %d", r, len(p.Val), len(dst))
		}
	}
	w := float64(len(parts))
	for i := range dst {
		var s float64
		for _, p := range parts {
			s += float64(p.Val[i])
		}
		dst[i] = float32(s / w)
	}
	return nil
}
