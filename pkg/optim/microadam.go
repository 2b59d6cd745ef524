package optim

import (
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// MicroAdamConfig holds MicroAdam's hyperparameters. Field names follow the
// job spec (optimizer.microadam.<field>).
type MicroAdamConfig struct {
	// Window is m, the number of past sparse gradients kept (reference: m).
	Window int
	// Density is the fraction of each top-k block sent to the window
	// (reference: k_init); a block of n elements keeps ceil(n·Density).
	Density float64
	// TopKBlockSize is the length of the blocks of the flattened tensor that
	// top-k runs on (reference: d_block_size). The reference derives it from
	// the GPU's shared memory, so its selection depends on the card; here it
	// is fixed so results do not depend on the machine. Indices are stored
	// as 16 bits relative to the block start, so it is at most 65536.
	TopKBlockSize int
	// QuantBlockSize is the number of elements that share one min/max pair
	// of the 4-bit error feedback (reference: quant_block_size).
	QuantBlockSize int
	Beta1, Beta2   float64
	Eps            float64
	// WeightDecay is decoupled (θ ← θ(1 − lr·λ) before the update, as the
	// reference does) and applies to matrices only, as AdamW does here.
	WeightDecay float64
}

// DefaultMicroAdamConfig returns the reference's defaults (m=10, k_init=0.01,
// betas (0.9, 0.999), eps 1e-8, weight decay 0) with the quantisation block
// of its Llama-2-7B script (64). TopKBlockSize 16384 is tern's fixed choice;
// the reference's shared-memory rule gives a similar size (tens of
// thousands of elements) on current data-centre GPUs.
func DefaultMicroAdamConfig() MicroAdamConfig {
	return MicroAdamConfig{
		Window:         10,
		Density:        0.01,
		TopKBlockSize:  16384,
		QuantBlockSize: 64,
		Beta1:          0.9,
		Beta2:          0.999,
		Eps:            1e-8,
	}
}

// Limits of the configuration that the state layout imposes.
const (
	microAdamMaxBlock  = 1 << 16 // 16-bit block-relative indices
	microAdamMaxWindow = 1 << 16
	microAdamMaxQuant  = 1 << 24
)

// Validate reports the first field outside its allowed range.
func (c MicroAdamConfig) Validate() error {
	switch {
	case c.Window < 1 || c.Window > microAdamMaxWindow:
		return fmt.Errorf("optimizer.microadam.window must be in [1, %d], got %d", microAdamMaxWindow, c.Window)
	case !(c.Density > 0 && c.Density <= 1):
		return fmt.Errorf("optimizer.microadam.density must be in (0, 1], got %g", c.Density)
	case c.TopKBlockSize < 1 || c.TopKBlockSize > microAdamMaxBlock:
		return fmt.Errorf("optimizer.microadam.topKBlockSize must be in [1, %d], got %d", microAdamMaxBlock, c.TopKBlockSize)
	case c.QuantBlockSize < 1 || c.QuantBlockSize > microAdamMaxQuant:
		return fmt.Errorf("optimizer.microadam.quantBlockSize must be in [1, %d], got %d", microAdamMaxQuant, c.QuantBlockSize)
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return fmt.Errorf("optimizer.microadam.beta1 must be in [0, 1), got %g", c.Beta1)
	case !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("optimizer.microadam.beta2 must be in [0, 1), got %g", c.Beta2)
	case !(c.Eps > 0) || math.IsInf(c.Eps, 1):
		return fmt.Errorf("optimizer.microadam.eps must be > 0 and finite, got %g", c.Eps)
	case !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 1):
		return fmt.Errorf("optimizer.microadam.weightDecay must be >= 0 and finite, got %g", c.WeightDecay)
	}
	return nil
}

// MicroAdam is Adam whose moments are rebuilt every step from a window of the
// last m sparse gradients, with error feedback of what sparsification left
// out (Modoranu, Safaryan, Malinovsky, Kurtić, Robert, Richtárik, Alistarh,
// "MicroAdam: Accurate Adaptive Optimization with Low Space Overhead and
// Provable Convergence", NeurIPS 2024, Algorithm 1, following the reference
// code IST-DASLab/ISTA-DASLab-Optimizers micro_adam.py and its CUDA kernels).
// Per parameter tensor, flattened to d elements, at step t (1-based, shared by
// all tensors):
//
//	a ← g + Q⁻¹(e)                      error feedback added to the gradient
//	(I, V) ← top-k of |a| per block      k = ceil(Density·block length)
//	window[(t−1) mod m] ← (I, bf16(V))
//	e ← Q(a with a[I] = 0)               4-bit min/max per quantisation block
//	θ ← θ(1 − lr·λ)                      matrices only
//	M = Σ_rows β1^age·V,  S = Σ_rows β2^age·V²   (age 0 = this step)
//	θ ← θ − lr · c1·M / (√(c2·S) + ε),   c1 = (1−β1)/(1−β1ᵗ), c2 = (1−β2)/(1−β2ᵗ)
//
// M and S are Adam's moments truncated to the window with Adam's bias
// correction (the reference's ADAM_STATS); with Density 1 and t ≤ m the
// update is exactly AdamW's. MicroAdam acts on every parameter (the
// reference has no routing; optimizers.md §1.2).
//
// Differences from the reference, all deliberate: TopKBlockSize is a fixed
// setting; top-k ties go to the lower index; the block minimum is rounded
// down and the maximum up to bfloat16 (the reference rounds both to nearest,
// which lets codes leave [0, 15]); codes are clamped and a constant block
// gets u = 0 and code 0 (the reference divides 0 by 0); the "alpha"
// densification modes (off by default in the reference) are not offered.
//
// State layout. Everything is held in float32 slices used as 32-bit words
// (math.Float32bits), so State can export the live state without conversion
// and a restore is bit-exact:
//
//	window  [m, k] words: bf16 value << 16 | 16-bit index relative to its block
//	ef      [ceil(d/8)] words: eight 4-bit codes, element i in bits 4(i mod 8)
//	efRange [ceil(d/q)] words: bf16 max << 16 | bf16 min
//
// These words are bit patterns, not numbers (some are NaN patterns): move
// them only by copying or through math.Float32bits, never through arithmetic
// or a float64 round trip. The per-tensor ring position is (t−1) mod m, so
// only the shared step count is stored besides.
type MicroAdam struct {
	cfg     MicroAdamConfig
	tensors []*microAdamTensor
	t       int64
	// header is the layout-defining configuration, exported so a state
	// written under another layout is refused instead of misread.
	header               []float32
	scratch              sync.Pool // *microAdamScratch, per-block working memory
	scratchLen, blockLen int
	unfused              bool      // always quantise in a separate pass (tests compare the two)
	w1, w2               []float32 // β^age per window row for the current step
}

type microAdamTensor struct {
	p           *model.Param
	d           int
	blk         int // top-k block length: min(d, TopKBlockSize)
	full        int // number of full top-k blocks
	nblk        int // full + 1 if a partial block remains
	kMany, kFew int // kept per full block, kept in the partial block
	k           int // entries per window row
	nq          int // quantisation blocks
	window      []float32
	ef          []float32
	efRange     []float32
}

// microAdamScratch is the transient memory of one block: the accumulator a
// (or the residual of a quantisation block), the top-k keys, and the window
// sums M and S.
type microAdamScratch struct {
	a    []float32
	keys []uint64
	hist []int32
	m, s []float32
}

// microAdamHistShift buckets |a| by its float32 bits above bit 20: the
// exponent and the top 3 mantissa bits, 2048 buckets each ≤ 12.5% wide, so
// the bucket holding the k-th largest value has few entries for any
// gradient that is not nearly constant.
const microAdamHistShift = 20

// NewMicroAdam builds MicroAdam over params with zeroed window and error
// feedback.
func NewMicroAdam(params []*model.Param, cfg MicroAdamConfig) (*MicroAdam, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &MicroAdam{cfg: cfg}
	for _, p := range params {
		if len(p.G) != len(p.W) {
			return nil, fmt.Errorf("microadam: parameter %s has %d gradient values for %d weights", p.Name, len(p.G), len(p.W))
		}
		t := microAdamLayout(len(p.W), cfg)
		t.p = p
		t.window = make([]float32, cfg.Window*t.k)
		t.ef = make([]float32, (t.d+7)/8)
		t.efRange = make([]float32, t.nq)
		o.tensors = append(o.tensors, t)
		o.blockLen = max(o.blockLen, t.blk)
		o.scratchLen = max(o.scratchLen, t.blk, min(t.d, cfg.QuantBlockSize))
	}
	db := math.Float64bits(cfg.Density)
	o.header = []float32{
		math.Float32frombits(uint32(cfg.Window)),
		math.Float32frombits(uint32(cfg.TopKBlockSize)),
		math.Float32frombits(uint32(cfg.QuantBlockSize)),
		math.Float32frombits(uint32(db >> 32)),
		math.Float32frombits(uint32(db)),
	}
	o.scratch.New = func() any {
		return &microAdamScratch{
			a:    make([]float32, o.scratchLen),
			keys: make([]uint64, o.blockLen),
			hist: make([]int32, 1<<(31-microAdamHistShift)),
			m:    make([]float32, o.blockLen),
			s:    make([]float32, o.blockLen),
		}
	}
	o.w1 = make([]float32, cfg.Window)
	o.w2 = make([]float32, cfg.Window)
	return o, nil
}

// microAdamLayout splits d elements into top-k blocks the way the reference's
// _initialize_parameter_state does: full blocks of min(d, TopKBlockSize)
// keeping ceil(block·Density) each, and a last partial block keeping
// ceil(rest·Density).
func microAdamLayout(d int, cfg MicroAdamConfig) *microAdamTensor {
	t := &microAdamTensor{d: d, blk: min(d, cfg.TopKBlockSize)}
	if d == 0 {
		return t
	}
	t.full = d / t.blk
	t.nblk = t.full
	t.kMany = int(math.Ceil(float64(t.blk) * cfg.Density))
	if rest := d - t.full*t.blk; rest > 0 {
		t.nblk++
		t.kFew = int(math.Ceil(float64(rest) * cfg.Density))
	}
	t.kMany = min(t.kMany, t.blk) // Density ≤ 1, but keep float rounding from overshooting
	t.kFew = min(t.kFew, d-t.full*t.blk)
	t.k = t.full*t.kMany + t.kFew
	t.nq = (d + cfg.QuantBlockSize - 1) / cfg.QuantBlockSize
	return t
}

// block returns the element range and the window-row entries of top-k block b.
func (t *microAdamTensor) block(b int) (start, n, off, kb int) {
	start, off = b*t.blk, b*t.kMany
	if b < t.full {
		return start, t.blk, off, t.kMany
	}
	return start, t.d - start, off, t.kFew
}

// bytes is the tensor's exported state size.
func (t *microAdamTensor) bytes(window int) int64 {
	return 4 * int64(window*t.k+microAdamCeilDiv(t.d, 8)+t.nq)
}

func microAdamCeilDiv(d, per int) int { return (d + per - 1) / per }

// MicroAdamStateBytes is the state MicroAdam would hold for tensors of the
// given element counts, without allocating it (for memory planning).
func MicroAdamStateBytes(sizes []int, cfg MicroAdamConfig) int64 {
	n := int64(4*5 + 8) // header and step count
	for _, d := range sizes {
		n += microAdamLayout(d, cfg).bytes(cfg.Window)
	}
	return n
}

// Name implements Optimizer.
func (o *MicroAdam) Name() string { return "microadam" }

// Steps returns how many updates have been applied.
func (o *MicroAdam) Steps() int64 { return o.t }

// StateBytes implements Optimizer: per tensor 4 bytes per window entry (a
// 16-bit index and a bf16 value, as the reference's int16 I and bf16 V),
// half a byte per element of 4-bit error feedback (rounded up to a word),
// 4 bytes of bf16 min/max per quantisation block; plus the step count and
// the 5-word layout header. It equals what State exports.
func (o *MicroAdam) StateBytes() int64 {
	n := int64(4*len(o.header) + 8)
	for _, t := range o.tensors {
		n += t.bytes(o.cfg.Window)
	}
	return n
}

// microAdamGrainElems is the number of elements each parallel chunk of the
// quantisation pass covers at least.
const microAdamGrainElems = 1 << 14

// Step implements Optimizer.
func (o *MicroAdam) Step(lr float64) {
	o.t++
	m := int64(o.cfg.Window)
	row := int((o.t - 1) % m)
	rows := int(min(o.t, m))
	for r := 0; r < rows; r++ {
		age := float64((o.t - 1 - int64(r)) % m)
		o.w1[r] = float32(math.Pow(o.cfg.Beta1, age))
		o.w2[r] = float32(math.Pow(o.cfg.Beta2, age))
	}
	tf := float64(o.t)
	c1 := float32((1 - o.cfg.Beta1) / (1 - math.Pow(o.cfg.Beta1, tf)))
	c2 := float32((1 - o.cfg.Beta2) / (1 - math.Pow(o.cfg.Beta2, tf)))
	q := o.cfg.QuantBlockSize
	// Chunks of the quantisation pass own whole 32-bit words of codes: their
	// element boundaries are multiples of 8.
	qGrain := 8 / microAdamGCD(q, 8)
	qGrain *= max(1, microAdamGrainElems/(q*qGrain))
	for _, t := range o.tensors {
		decay := float32(1)
		if len(t.p.Shape) >= 2 {
			decay = float32(1 - lr*o.cfg.WeightDecay)
		}
		// When every quantisation block lies inside one top-k block and the
		// top-k blocks own whole code words, the residual is quantised in the
		// same pass, from the accumulator already in hand; otherwise a second
		// pass rebuilds it per quantisation block. Both give the same bits.
		fuse := !o.unfused && (t.nblk == 1 || (t.blk%q == 0 && t.blk%8 == 0))
		u := microAdamUpdate{row: row, rows: rows, c1: c1, c2: c2, lr: float32(lr), eps: float32(o.cfg.Eps), decay: decay}
		tensor.ParallelFor(t.nblk, 1, func(lo, hi int) {
			sc := o.scratch.Get().(*microAdamScratch)
			for b := lo; b < hi; b++ {
				o.selectAndUpdate(t, b, &u, sc, fuse)
			}
			o.scratch.Put(sc)
		})
		if fuse {
			continue
		}
		tensor.ParallelFor(t.nq, qGrain, func(lo, hi int) {
			sc := o.scratch.Get().(*microAdamScratch)
			for qb := lo; qb < hi; qb++ {
				o.quantizeResidual(t, qb, row, sc)
			}
			o.scratch.Put(sc)
		})
	}
}

type microAdamUpdate struct {
	row, rows              int
	c1, c2, lr, eps, decay float32
}

func microAdamGCD(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// addDequant adds Q⁻¹(e) for elements [start, start+len(dst)) to dst.
func (t *microAdamTensor) addDequant(dst []float32, start, q int) {
	end := start + len(dst)
	for i := start; i < end; {
		qb := i / q
		qe := min((qb+1)*q, end)
		lo, u := t.blockRange(qb)
		for i < qe {
			wi := i >> 3
			we := min(wi<<3+8, qe)
			w := math.Float32bits(t.ef[wi])
			for ; i < we; i++ {
				dst[i-start] += microAdamDequant(w>>(4*uint(i&7))&0xf, lo, u)
			}
		}
	}
}

// blockRange decodes quantisation block qb's lower bound and step.
func (t *microAdamTensor) blockRange(qb int) (lo, u float32) {
	w := math.Float32bits(t.efRange[qb])
	lo = microAdamBF16Float(w & 0xffff)
	return lo, (microAdamBF16Float(w>>16) - lo) / microAdamLevels
}

// selectAndUpdate runs steps 1–3 and 6–7 of the update for top-k block b:
// accumulate a = g + Q⁻¹(e), keep its top-k in the window row, rebuild M and
// S over the window and update the block's weights. With fuse it also runs
// steps 4–5 for the quantisation blocks inside the block.
func (o *MicroAdam) selectAndUpdate(t *microAdamTensor, b int, u *microAdamUpdate, sc *microAdamScratch, fuse bool) {
	start, n, off, kb := t.block(b)
	a := sc.a[:n]
	copy(a, t.p.G[start:start+n])
	t.addDequant(a, start, o.cfg.QuantBlockSize)
	thr := microAdamThreshold(a, kb, sc)
	seg := t.window[u.row*t.k+off : u.row*t.k+off+kb]
	c := 0
	for j, v := range a {
		if microAdamKey(v, j) >= thr {
			seg[c] = math.Float32frombits(uint32(tensor.ToBF16(v))<<16 | uint32(j))
			c++
		}
	}
	if fuse {
		for _, e := range seg {
			a[math.Float32bits(e)&0xffff] = 0
		}
		q := o.cfg.QuantBlockSize
		for qlo := start; qlo < start+n; qlo += q {
			qhi := min(qlo+q, start+n)
			t.quantize(qlo/q, qlo, a[qlo-start:qhi-start])
		}
	}
	// ADAM_STATS over the window, restricted to this block.
	ms, ss := sc.m[:n], sc.s[:n]
	clear(ms)
	clear(ss)
	for r := 0; r < u.rows; r++ {
		w1, w2 := o.w1[r], o.w2[r]
		for _, e := range t.window[r*t.k+off : r*t.k+off+kb] {
			bits := math.Float32bits(e)
			j := bits & 0xffff
			v := math.Float32frombits(bits &^ 0xffff)
			ms[j] += float32(w1 * v)
			ss[j] += float32(w2 * float32(v*v))
		}
	}
	w := t.p.W[start : start+n]
	for j := range w {
		den := float32(math.Sqrt(float64(u.c2*ss[j]))) + u.eps
		w[j] = w[j]*u.decay - u.lr*(u.c1*ms[j]/den)
	}
}

// microAdamThreshold returns the kb-th largest microAdamKey of a, so that the
// kept entries are exactly those with a key ≥ it. A histogram of |a| finds
// the bucket holding the kb-th largest value in one pass; only that
// bucket's entries go through the exact selection.
func microAdamThreshold(a []float32, kb int, sc *microAdamScratch) uint64 {
	hist := sc.hist
	clear(hist)
	for _, v := range a {
		hist[(math.Float32bits(v)&0x7fffffff)>>microAdamHistShift]++
	}
	above := 0
	bucket := len(hist) - 1
	for ; bucket > 0; bucket-- {
		if h := int(hist[bucket]); above+h < kb {
			above += h
		} else {
			break
		}
	}
	cand := sc.keys[:0]
	for j, v := range a {
		if (math.Float32bits(v)&0x7fffffff)>>microAdamHistShift == uint32(bucket) {
			cand = append(cand, microAdamKey(v, j))
		}
	}
	return microAdamKthLargest(cand, kb-above)
}

// quantizeResidual runs steps 4–5 for quantisation block qb: rebuild a (the
// error feedback has not changed yet), zero what this step's window row
// kept, and store the residual as 4-bit codes with the block's bf16 range.
func (o *MicroAdam) quantizeResidual(t *microAdamTensor, qb, row int, sc *microAdamScratch) {
	q := o.cfg.QuantBlockSize
	qlo, qhi := qb*q, min((qb+1)*q, t.d)
	r := sc.a[:qhi-qlo]
	copy(r, t.p.G[qlo:qhi])
	t.addDequant(r, qlo, q)
	// The kept entries of each overlapping top-k block are sorted by index,
	// so the ones inside [qlo, qhi) are a contiguous run.
	for b := qlo / t.blk; b <= (qhi-1)/t.blk; b++ {
		start, _, off, kb := t.block(b)
		seg := t.window[row*t.k+off : row*t.k+off+kb]
		first := sort.Search(kb, func(i int) bool {
			return start+int(math.Float32bits(seg[i])&0xffff) >= qlo
		})
		for _, e := range seg[first:] {
			i := start + int(math.Float32bits(e)&0xffff)
			if i >= qhi {
				break
			}
			r[i-qlo] = 0
		}
	}
	t.quantize(qb, qlo, r)
}

// quantize stores the residual r of quantisation block qb (elements
// qlo..qlo+len(r)) as its bf16 range and 4-bit codes, writing each code word
// once.
func (t *microAdamTensor) quantize(qb, qlo int, r []float32) {
	// Plain comparisons, not the min/max builtins: those order −0 below +0
	// and propagate NaN at a cost per element; here the first of equal
	// values wins and NaN is skipped (it quantises to code 0).
	lo, hi := r[0], r[0]
	for _, v := range r[1:] {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
	}
	loBits, hiBits, loF, u := microAdamRange(lo, hi)
	t.efRange[qb] = math.Float32frombits(hiBits<<16 | loBits)
	qhi := qlo + len(r)
	for i := qlo; i < qhi; {
		wi := i >> 3
		end := min(wi<<3+8, qhi)
		w := math.Float32bits(t.ef[wi])
		for ; i < end; i++ {
			sh := 4 * uint(i&7)
			w = w&^(0xf<<sh) | microAdamCode(r[i-qlo], loF, u)<<sh
		}
		t.ef[wi] = math.Float32frombits(w)
	}
}

// State implements Optimizer. The tensors alias the live state.
func (o *MicroAdam) State() []NamedTensor {
	ts := make([]NamedTensor, 0, 3*len(o.tensors)+2)
	for _, t := range o.tensors {
		ts = append(ts,
			NamedTensor{Name: stateName(t.p, "microadam_window"), Shape: []int{o.cfg.Window, t.k}, Data: t.window},
			NamedTensor{Name: stateName(t.p, "microadam_ef"), Shape: []int{len(t.ef)}, Data: t.ef},
			NamedTensor{Name: stateName(t.p, "microadam_ef_range"), Shape: []int{t.nq}, Data: t.efRange})
	}
	ts = append(ts,
		NamedTensor{Name: "optim.microadam.layout", Shape: []int{len(o.header)}, Data: o.header},
		NamedTensor{Name: "optim.microadam.step", Shape: []int{2}, Data: splitCount(o.t)})
	return ts
}

// SetState implements Optimizer. The layout header must match this
// optimizer's configuration and every window index must lie inside its
// block; both are checked before anything is overwritten.
func (o *MicroAdam) SetState(ts []NamedTensor) error {
	windows := make(map[string]*microAdamTensor, len(o.tensors))
	for _, t := range o.tensors {
		windows[stateName(t.p, "microadam_window")] = t
	}
	for _, nt := range ts {
		switch nt.Name {
		case "optim.microadam.layout":
			if err := o.checkHeader(nt.Data); err != nil {
				return fmt.Errorf("microadam: %s: %w", nt.Name, err)
			}
		case "optim.microadam.step":
			if len(nt.Data) == 2 {
				if _, err := joinCount(nt.Data); err != nil {
					return fmt.Errorf("microadam: %s: %w", nt.Name, err)
				}
			}
		default:
			if t := windows[nt.Name]; t != nil && len(nt.Data) == len(t.window) {
				if err := t.checkWindow(nt.Data, o.cfg.Window); err != nil {
					return fmt.Errorf("microadam: %s: %w", nt.Name, err)
				}
			}
		}
	}
	dst := make(map[string][]float32, 3*len(o.tensors)+2)
	for _, t := range o.tensors {
		dst[stateName(t.p, "microadam_window")] = t.window
		dst[stateName(t.p, "microadam_ef")] = t.ef
		dst[stateName(t.p, "microadam_ef_range")] = t.efRange
	}
	header := make([]float32, len(o.header))
	step := make([]float32, 2)
	dst["optim.microadam.layout"] = header
	dst["optim.microadam.step"] = step
	if err := restore(ts, dst); err != nil {
		return fmt.Errorf("microadam: %w", err)
	}
	t, err := joinCount(step)
	if err != nil {
		return fmt.Errorf("microadam: optim.microadam.step: %w", err)
	}
	o.t = t
	return nil
}

func (o *MicroAdam) checkHeader(h []float32) error {
	if len(h) != len(o.header) {
		return fmt.Errorf("%d values, want %d", len(h), len(o.header))
	}
	names := []string{"window", "topKBlockSize", "quantBlockSize"}
	for i, name := range names {
		if got, want := math.Float32bits(h[i]), math.Float32bits(o.header[i]); got != want {
			return fmt.Errorf("state was written with optimizer.microadam.%s=%d, this run has %d", name, got, want)
		}
	}
	got := math.Float64frombits(uint64(math.Float32bits(h[3]))<<32 | uint64(math.Float32bits(h[4])))
	if got != o.cfg.Density {
		return fmt.Errorf("state was written with optimizer.microadam.density=%g, this run has %g", got, o.cfg.Density)
	}
	return nil
}

// checkWindow verifies that every stored index addresses an element of its
// block, so a corrupt or foreign state cannot index out of range.
func (t *microAdamTensor) checkWindow(w []float32, window int) error {
	for r := 0; r < window; r++ {
		for b := 0; b < t.nblk; b++ {
			_, n, off, kb := t.block(b)
			for i, e := range w[r*t.k+off : r*t.k+off+kb] {
				if j := int(math.Float32bits(e) & 0xffff); j >= n {
					return fmt.Errorf("row %d block %d entry %d: index %d outside the block of %d elements", r, b, i, j, n)
				}
			}
		}
	}
	return nil
}
