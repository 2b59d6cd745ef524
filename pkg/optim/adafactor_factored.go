package optim

import (
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// factored describes how a tensor of two or more axes is factored for
// Adafactor-style second moments (Shazeer & Stern 2018, "Adafactor: Adaptive
// Learning Rates with Sublinear Memory Cost", §3): as in Hugging Face
// transformers, the last two axes form rows×cols matrices and any leading
// axes index a batch of them. A row statistic has batch·rows entries, a
// column statistic batch·cols.
type factored struct {
	batch, rows, cols int
}

// factorOf returns the factoring of shape and whether it is factored at all
// (HF factors every tensor of two or more axes).
func factorOf(shape []int) (factored, bool) {
	if len(shape) < 2 {
		return factored{}, false
	}
	f := factored{batch: 1, rows: shape[len(shape)-2], cols: shape[len(shape)-1]}
	for _, d := range shape[:len(shape)-2] {
		f.batch *= d
	}
	return f, true
}

// rowShape and colShape are the shapes HF gives exp_avg_sq_row and
// exp_avg_sq_col: shape[:-1] and shape[:-2]+shape[-1:].
func rowShape(shape []int) []int { return append([]int(nil), shape[:len(shape)-1]...) }
func colShape(shape []int) []int {
	return append(append([]int(nil), shape[:len(shape)-2]...), shape[len(shape)-1])
}

// factorGrainElems is the number of elements one parallel chunk of a row pass
// covers; rows are never split, so the chunking depends only on the shape.
const factorGrainElems = 1 << 15

func rowGrain(cols int) int { return max(1, factorGrainElems/cols) }

// factorScratch holds the transient buffers of the factored passes, sized once
// for the largest tensor so a step allocates nothing big. None of it is state.
type factorScratch struct {
	rowMean []float64 // per row of the current tensor
	colMean []float64 // per column of the current tensor
	colPart []float64 // per (row chunk, column): partial column sums
	rowBuf  []float32 // per (row chunk, column): one row of the statistic
	rowSq   []float64 // per row: Σ u² over the row
	rf, cf  []float32 // row and column factors rsqrt(R/mean R), rsqrt(C)
	flatSq  []float64 // per chunk of an unfactored tensor: Σ u²
}

func (s *factorScratch) fit(shape []int, n int) {
	grow64 := func(b *[]float64, k int) {
		if len(*b) < k {
			*b = make([]float64, k)
		}
	}
	grow32 := func(b *[]float32, k int) {
		if len(*b) < k {
			*b = make([]float32, k)
		}
	}
	f, ok := factorOf(shape)
	if !ok {
		grow64(&s.flatSq, (n+adamGrain-1)/adamGrain)
		return
	}
	chunks := (f.rows + rowGrain(f.cols) - 1) / rowGrain(f.cols)
	grow64(&s.rowMean, f.batch*f.rows)
	grow64(&s.colMean, f.batch*f.cols)
	grow64(&s.colPart, chunks*f.cols)
	grow32(&s.rowBuf, chunks*f.cols)
	grow64(&s.rowSq, f.batch*f.rows)
	grow32(&s.rf, f.batch*f.rows)
	grow32(&s.cf, f.batch*f.cols)
}

// rowColMeans computes the row means (into s.rowMean) and column means (into
// s.colMean) of a statistic X of the factored tensor, which fill writes one
// row at a time: fill(row, out) stores X[row, :] in out, with row counted over
// the whole batch. fill is called exactly once per row, so it may also update
// per-element state of that row. Sums are in float64 in index order, column
// sums combined over row chunks in chunk order: deterministic for any
// GOMAXPROCS.
func (s *factorScratch) rowColMeans(f factored, fill func(row int, out []float32)) {
	gr := rowGrain(f.cols)
	chunks := (f.rows + gr - 1) / gr
	for b := 0; b < f.batch; b++ {
		base := b * f.rows
		tensor.ParallelFor(f.rows, gr, func(lo, hi int) {
			c := lo / gr
			part := s.colPart[c*f.cols : (c+1)*f.cols]
			buf := s.rowBuf[c*f.cols : (c+1)*f.cols]
			clear(part)
			for i := lo; i < hi; i++ {
				fill(base+i, buf)
				var sum float64
				for j, x := range buf {
					sum += float64(x)
					part[j] += float64(x)
				}
				s.rowMean[base+i] = sum / float64(f.cols)
			}
		})
		col := s.colMean[b*f.cols : (b+1)*f.cols]
		clear(col)
		for c := 0; c < chunks; c++ {
			part := s.colPart[c*f.cols : (c+1)*f.cols]
			for j := range col {
				col[j] += part[j]
			}
		}
		for j := range col {
			col[j] /= float64(f.rows)
		}
	}
}

// emaFactors folds the means just computed into the row and column moving
// averages r ← β·r + (1−β)·mean, then sets the factors of the approximation
// V̂_ij = R_i·C_j / mean(R) (Shazeer & Stern 2018, Alg. 4, with means as in
// HF's _approx_sq_grad): rf_i = (R_i/mean(R))^−½ and cf_j = C_j^−½.
func (s *factorScratch) emaFactors(f factored, r, c []float32, beta float64) {
	b, nb := float32(beta), float32(1-beta)
	for i := range r[:f.batch*f.rows] {
		r[i] = b*r[i] + nb*float32(s.rowMean[i])
	}
	for j := range c[:f.batch*f.cols] {
		c[j] = b*c[j] + nb*float32(s.colMean[j])
	}
	s.factors(f, r, c)
}

// factors sets s.rf and s.cf from row and column statistics r and c.
func (s *factorScratch) factors(f factored, r, c []float32) {
	for bi := 0; bi < f.batch; bi++ {
		rows := r[bi*f.rows : (bi+1)*f.rows]
		var sum float64
		for _, x := range rows {
			sum += float64(x)
		}
		mean := sum / float64(f.rows)
		for i, x := range rows {
			s.rf[bi*f.rows+i] = float32(1 / math.Sqrt(float64(x)/mean))
		}
	}
	for j, x := range c[:f.batch*f.cols] {
		s.cf[j] = float32(1 / math.Sqrt(float64(x)))
	}
}

// factoredRMS is RMS(u) for u_ij = rf_i·cf_j·g_ij, the unclipped
// Adafactor/CAME update of a factored tensor with gradient g.
func (s *factorScratch) factoredRMS(f factored, g []float32) float64 {
	n := f.batch * f.rows
	tensor.ParallelFor(n, rowGrain(f.cols), func(lo, hi int) {
		for row := lo; row < hi; row++ {
			rf := s.rf[row]
			cf := s.cf[(row/f.rows)*f.cols:][:f.cols]
			gr := g[row*f.cols:][:f.cols]
			var sq float64
			for j, gj := range gr {
				u := rf * cf[j] * gj
				sq += float64(u) * float64(u)
			}
			s.rowSq[row] = sq
		}
	})
	var sum float64
	for _, x := range s.rowSq[:n] {
		sum += x
	}
	return math.Sqrt(sum / float64(n*f.cols))
}

// clipDivisor is Adafactor's update clipping (Shazeer & Stern 2018, §6,
// eq. 12): the update is divided by max(1, RMS(u)/d).
func clipDivisor(rms, d float64) float64 { return max(1, rms/d) }

// checkParams rejects parameters whose buffers do not match their shape.
func checkParams(opt string, params []*model.Param) error {
	seen := make(map[string]bool, len(params))
	for i, p := range params {
		if p == nil {
			return fmt.Errorf("%s: parameter %d is nil", opt, i)
		}
		n := 1
		for _, d := range p.Shape {
			if d <= 0 {
				return fmt.Errorf("%s: parameter %s has shape %v; every axis must be > 0", opt, p.Name, p.Shape)
			}
			n *= d
		}
		if len(p.Shape) == 0 || len(p.W) != n || len(p.G) != n {
			return fmt.Errorf("%s: parameter %s has shape %v but %d weights and %d gradients", opt, p.Name, p.Shape, len(p.W), len(p.G))
		}
		if seen[p.Name] {
			return fmt.Errorf("%s: parameter %s given twice", opt, p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}
