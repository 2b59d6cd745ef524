package optim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/compress"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// DemoConfig holds DeMo's hyperparameters. Field names follow the job
// spec's optimizer section (optimizer.demo.<field>).
type DemoConfig struct {
	TopK        int     // k: DCT coefficients each rank sends per chunk
	Chunk       int     // target chunk side s (chunks are s×s)
	Decay       float64 // β: momentum decay (the reference's compression_decay)
	Values      string  // how selected values travel: "bf16" or "sign"
	WeightDecay float64 // λ: decoupled weight decay of matrices
}

// DefaultDemoConfig returns the reference defaults (bloc97/DeMo demo.py and
// the OLMo DeMo runs: compression_topk 32, compression_chunk 64,
// compression_decay 0.999, weight_decay 0) with bfloat16 values.
func DefaultDemoConfig() DemoConfig {
	return DemoConfig{TopK: 32, Chunk: compress.DefaultChunk, Decay: 0.999, Values: compress.FormatNameBF16}
}

// Validate reports the first field outside its allowed range.
func (c DemoConfig) Validate() error {
	switch {
	case c.Chunk < 1 || c.Chunk > compress.MaxChunk:
		return fmt.Errorf("optimizer.demo.chunk must be in [1, %d], got %d", compress.MaxChunk, c.Chunk)
	case c.TopK < 1 || c.TopK > c.Chunk*c.Chunk:
		return fmt.Errorf("optimizer.demo.topK must be in [1, chunk² = %d], got %d", c.Chunk*c.Chunk, c.TopK)
	case !(c.Decay >= 0 && c.Decay < 1):
		return fmt.Errorf("optimizer.demo.decay must be in [0, 1), got %g", c.Decay)
	case !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 1):
		return fmt.Errorf("optimizer.demo.weightDecay must be a finite number >= 0, got %g", c.WeightDecay)
	}
	if _, err := compress.ParseFormat(c.Values); err != nil {
		return fmt.Errorf("optimizer.demo.values: %w", err)
	}
	return nil
}

func (c DemoConfig) options() compress.Options {
	f, _ := compress.ParseFormat(c.Values)
	return compress.Options{Chunk: c.Chunk, TopK: c.TopK, Format: f}
}

// Gatherer is the collective DeMo exchanges its payloads through: every
// rank calls AllGather with its payload and receives all ranks' payloads
// indexed by rank, its own included. The payload is not modified after the
// call (the transport may keep it); the returned slices are only read. A
// comm.Group satisfies it.
type Gatherer interface {
	AllGather(ctx context.Context, payload []byte) ([][]byte, error)
}

// ContextStepper is an optimizer whose step talks to other ranks: it takes a
// context and reports failures (the network's, a peer's invalid payload)
// instead of applying a partial update. Trainers call StepContext where an
// optimizer provides it.
type ContextStepper interface {
	StepContext(ctx context.Context, lr float64) error
}

// Demo is Decoupled Momentum Optimization (Peng, Quesnelle & Kingma 2024,
// "DeMo: Decoupled Momentum Optimization", arXiv 2411.19870), step for step
// as its authors implement it (bloc97/DeMo demo.py;
// research/demo-and-decentralized.md §1.1). With η = lr, per 2-D parameter
// x with gradient g on rank i (1-D parameters: see the differences below):
//
//	x ← (1 − η·λ)·x                           matrices only (decayed)
//	Δ ← β·Δ + η·g                             lr folded in, no (1−β)
//	q_i = TopK_k(DCT_chunks(Δ))               per s×s chunk, sent as bf16 or signs
//	Δ ← Δ − IDCT(decode(q_i))                 error feedback: remove what was sent
//	Q = ScatterMean({q_j : every rank j})     mean over the ranks that chose each coefficient
//	x ← x − η·sign(IDCT(Q))
//
// The payloads of all parameters of a step travel in one message, one
// all-gather per step (the reference issues two collectives per
// parameter). Decoding and combining are deterministic (fixed rank order,
// float64 sums, a transform that gives the same bits on every machine;
// package compress), so every rank applies bitwise the same update and
// replicas that start equal stay equal without ever re-synchronising.
//
// Differences from the reference, all deliberate:
//   - dimensions the chunk does not divide are zero-padded instead of
//     taking a smaller divisor as the chunk (compress.NewGrid);
//   - indices travel as uint16 and values as bfloat16 or signs with a
//     per-chunk scale (compress.Sign), not int64 and float32; the error
//     feedback subtracts the decoded values, i.e. exactly what the others
//     receive, so the rounding or sign quantisation error stays in Δ
//     (with the reference's float32 values this is the reference);
//   - 1-D parameters (norm gains) are not transformed: DeMo's own rule
//     with the identity for the transform and every coefficient selected.
//     Δ ← β·Δ + η·g is sent whole as bf16(Δ) (2 bytes a value, in both
//     value formats), the error feedback leaves the rounding residual
//     Δ − bf16(Δ) in Δ as it leaves the 2-D rounding error, the ranks'
//     mean m of bf16(Δ) is formed and x ← x − η·sign(m). The residual is
//     at most 2⁻⁸|Δ| (half a bfloat16 ulp), so the momentum kept is small;
//     it is state all the same (exported and restored), or a resumed run
//     would not be the same bits. (The reference compresses 1-D tensors
//     with k = 32 of every 64 coefficients and 8-byte indices, more bytes
//     than sending them whole.)
//
// Step count, weights and momentum never depend on the number of cores.
type Demo struct {
	cfg    DemoConfig
	params []*model.Param
	gather Gatherer
	layout *compress.Layout
	tr     *compress.Transform
	delta  [][]float32 // Δ per parameter; after a step, a 1-D one's bf16 rounding residual
	t      int64

	own     []compress.Tensor   // this rank's selection; a 1-D parameter's is its Δ
	sentDec []compress.Tensor   // this rank's payload decoded (error feedback)
	recv    [][]compress.Tensor // every rank's payload decoded
	parts   []compress.Tensor   // one tensor across ranks
	coeffs  []float32           // scratch: the largest padded coefficient array
	upd     []float32           // scratch: the largest parameter

	sent, received int64
	// broken is set when a step failed after it had changed the momentum
	// (an exchange or decode error); the state must be restored before
	// stepping again.
	broken error
}

// NewDemo builds DeMo over params, exchanging through g; g nil means a
// single process (the payload is still encoded and decoded, so the update
// and the byte counts are what one rank of a larger job would see).
// Parameters must be distinct, 1-D or 2-D, and not stepped by another
// optimizer.
func NewDemo(params []*model.Param, cfg DemoConfig, g Gatherer) (*Demo, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	shapes := make([]compress.TensorShape, len(params))
	seen := make(map[string]bool, len(params))
	for i, p := range params {
		if p == nil {
			return nil, fmt.Errorf("optimizer.demo: parameter %d is nil", i)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("optimizer.demo: parameter name %q given twice; state names would collide", p.Name)
		}
		seen[p.Name] = true
		if p.RowSel != nil {
			return nil, fmt.Errorf("optimizer.demo: parameter %q has selected gradient rows; another optimizer owns it", p.Name)
		}
		n := 1
		for _, d := range p.Shape {
			n *= d
		}
		if len(p.W) != n {
			return nil, fmt.Errorf("optimizer.demo: parameter %q of shape %v has %d weights, want %d", p.Name, p.Shape, len(p.W), n)
		}
		shapes[i] = compress.TensorShape{Name: p.Name, Shape: p.Shape}
	}
	l, err := compress.NewLayout(shapes, cfg.options())
	if err != nil {
		return nil, fmt.Errorf("optimizer.demo: %w", err)
	}
	o := &Demo{cfg: cfg, params: params, gather: g, layout: l, tr: compress.NewTransform(),
		delta: make([][]float32, len(params)), own: make([]compress.Tensor, len(params))}
	var maxCoeffs, maxElems int
	for i, s := range l.Tensors {
		maxElems = max(maxElems, s.Len)
		o.delta[i] = make([]float32, s.Len)
		if s.Kind == compress.Sparse {
			o.own[i] = compress.Tensor{Idx: make([]uint16, s.Entries()), Val: make([]float32, s.Entries())}
			maxCoeffs = max(maxCoeffs, s.Grid.Coeffs())
		} else {
			// Sent whole: Encode reads Δ itself (and rounds it).
			o.own[i] = compress.Tensor{Val: o.delta[i]}
		}
	}
	o.coeffs = make([]float32, maxCoeffs)
	o.upd = make([]float32, maxElems)
	return o, nil
}

// Name implements Optimizer.
func (o *Demo) Name() string { return "demo" }

// Steps returns how many updates have been applied.
func (o *Demo) Steps() int64 { return o.t }

// PayloadBytes is the length of the payload this rank sends every step.
func (o *Demo) PayloadBytes() int { return o.layout.Bytes() }

// LastStepBytes returns the payload bytes of the last completed step: sent
// is this rank's payload, received the other ranks' payloads together
// ((W−1)·sent). These are payload lengths; what the transport moves to
// deliver them (its framing, a ring's forwarding) it counts itself.
func (o *Demo) LastStepBytes() (sent, received int64) { return o.sent, o.received }

// DemoStateBytes is Demo.StateBytes for parameters of the given shapes:
// the float32 momentum of every parameter (of a 1-D one, its bf16 rounding
// residual) and the 8-byte step counter.
func DemoStateBytes(shapes []ParamShape) int64 {
	var n int64
	for _, s := range shapes {
		n += int64(s.Size())
	}
	return 4*n + 8
}

// DemoPayloadBytes is the number of bytes one rank sends per step
// (header included) for parameters of the given shapes; every rank
// receives that much from each of the others.
func DemoPayloadBytes(shapes []ParamShape, cfg DemoConfig) (int64, error) {
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	ts := make([]compress.TensorShape, len(shapes))
	for i, s := range shapes {
		ts[i] = compress.TensorShape{Name: s.Name, Shape: s.Shape}
	}
	n, err := compress.PayloadBytes(ts, cfg.options())
	if err != nil {
		return 0, fmt.Errorf("optimizer.demo: %w", err)
	}
	return int64(n), nil
}

// StateBytes implements Optimizer: Δ of every parameter and the step
// counter, as exported.
func (o *Demo) StateBytes() int64 {
	var n int64
	for _, d := range o.delta {
		n += int64(len(d))
	}
	return 4*n + 8
}

// Step implements Optimizer for a single process (no Gatherer): it is
// StepContext with a background context. The Optimizer interface has no
// error, so Step panics where StepContext would return one; without a
// Gatherer that happens only on a gradient that is missing or not finite,
// or on a negative or non-finite lr. With a Gatherer, call StepContext: a
// step that waits on other ranks needs a context and must report failure.
func (o *Demo) Step(lr float64) {
	if o.gather != nil {
		panic("optim: Demo.Step on an optimizer with a Gatherer; call StepContext")
	}
	if err := o.StepContext(context.Background(), lr); err != nil {
		panic(err)
	}
}

// StepContext applies one DeMo update with learning rate lr, exchanging
// this rank's payload with every other rank through the Gatherer.
//
// On error nothing is applied to the parameters. Errors found before the
// momentum changes (a missing or non-finite gradient, a bad lr) leave the
// optimizer as it was. After that (the exchange failed, or a peer's payload
// is invalid) the momentum has advanced while the parameters have not: the
// optimizer refuses to step until SetState restores a consistent state, as
// a job does anyway by resuming from its last committed snapshot.
func (o *Demo) StepContext(ctx context.Context, lr float64) error {
	if o.broken != nil {
		return fmt.Errorf("demo: an earlier step failed after advancing the momentum (%v); restore the state with SetState before stepping", o.broken)
	}
	if !(lr >= 0) || math.IsInf(lr, 1) {
		return fmt.Errorf("demo: learning rate must be a finite number >= 0, got %g", lr)
	}
	for _, p := range o.params {
		if len(p.G) != len(p.W) {
			return fmt.Errorf("demo: parameter %q has %d gradient values, want %d", p.Name, len(p.G), len(p.W))
		}
		if j := firstNonFinite(p.G); j >= 0 {
			return fmt.Errorf("demo: parameter %q: gradient %d is %v; DeMo needs finite gradients", p.Name, j, p.G[j])
		}
	}
	if err := o.step(ctx, lr); err != nil {
		o.broken = err
		return err
	}
	return nil
}

func (o *Demo) step(ctx context.Context, lr float64) error {
	lrf, beta := float32(lr), float32(o.cfg.Decay)
	for i, p := range o.params {
		s := o.layout.Tensors[i]
		d, g := o.delta[i], p.G
		tensor.ParallelFor(len(d), adamGrain, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				// Rounded like the reference's delta.mul_(β); delta.add_(g, alpha=lr).
				d[j] = float32(beta*d[j]) + float32(lrf*g[j])
			}
		})
		if s.Kind == compress.Dense {
			continue // o.own[i].Val is Δ: sent whole
		}
		coeffs := o.coeffs[:s.Grid.Coeffs()]
		if err := o.tr.Forward(s.Grid, d, coeffs); err != nil {
			return fmt.Errorf("demo: %s: %w", p.Name, err)
		}
		if err := compress.TopK(s.Grid, coeffs, s.K, o.own[i].Idx, o.own[i].Val); err != nil {
			return fmt.Errorf("demo: %s: %w", p.Name, err)
		}
	}
	// A fresh buffer every step: the transport may keep the one it is given.
	payload, err := o.layout.Encode(nil, o.own)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	// Error feedback with exactly what the others will decode: the
	// inverse transform of the sent coefficients, or for a dense tensor
	// bf16(Δ), which leaves the rounding residual Δ − bf16(Δ) in Δ.
	if o.sentDec, err = o.layout.Decode(payload, o.sentDec); err != nil {
		return fmt.Errorf("demo: own payload: %w", err)
	}
	for i, s := range o.layout.Tensors {
		u := o.sentDec[i].Val
		if s.Kind == compress.Sparse {
			if err := o.inverse(i, o.sentDec[i:i+1]); err != nil {
				return err
			}
			u = o.upd[:s.Len]
		}
		d := o.delta[i]
		for j := range d {
			d[j] -= u[j]
		}
	}

	payloads := [][]byte{payload}
	if o.gather != nil {
		if payloads, err = o.gather.AllGather(ctx, payload); err != nil {
			return fmt.Errorf("demo: all-gather of %d-byte payloads: %w", len(payload), err)
		}
	}
	if err := o.decodeAll(payloads, payload); err != nil {
		return err
	}

	for i, p := range o.params {
		s := o.layout.Tensors[i]
		o.parts = o.parts[:0]
		for _, r := range o.recv {
			o.parts = append(o.parts, r[i])
		}
		u := o.upd[:s.Len]
		if s.Kind == compress.Dense {
			if err := compress.MeanDense(u, o.parts); err != nil {
				return fmt.Errorf("demo: %s: %w", p.Name, err)
			}
		} else if err := o.inverse(i, o.parts); err != nil {
			return err
		}
		decay := float32(1)
		if decayed(p) {
			decay = float32(1 - lr*o.cfg.WeightDecay)
		}
		w := p.W
		tensor.ParallelFor(len(w), adamGrain, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				// The conversion rounds the product, forbidding a fused
				// multiply-add: ranks on different architectures must
				// compute the same bits.
				w[j] = float32(w[j]*decay) - lrf*sign32(u[j])
			}
		})
	}
	o.t++
	o.sent = int64(len(payload))
	o.received = -o.sent
	for _, b := range payloads {
		o.received += int64(len(b))
	}
	return nil
}

// inverse combines parts (one rank's or every rank's entries of tensor i)
// into its coefficients and writes their inverse transform to o.upd.
func (o *Demo) inverse(i int, parts []compress.Tensor) error {
	s := o.layout.Tensors[i]
	coeffs := o.coeffs[:s.Grid.Coeffs()]
	if err := compress.ScatterMean(coeffs, s.Grid, s.K, parts); err != nil {
		return fmt.Errorf("demo: %s: %w", s.Name, err)
	}
	if err := o.tr.Inverse(s.Grid, coeffs, o.upd[:s.Len]); err != nil {
		return fmt.Errorf("demo: %s: %w", s.Name, err)
	}
	return nil
}

// errNoOwnPayload reports a Gatherer that lost or altered this rank's
// payload.
var errNoOwnPayload = errors.New("this rank's payload is not among the gathered ones")

// decodeAll validates and decodes every rank's payload into o.recv.
func (o *Demo) decodeAll(payloads [][]byte, own []byte) error {
	if len(payloads) == 0 {
		return fmt.Errorf("demo: all-gather returned no payloads")
	}
	found := false
	for _, b := range payloads {
		if bytes.Equal(b, own) {
			found = true
			break
		}
	}
	if !found {
		return fmt.Errorf("demo: all-gather of %d ranks: %w", len(payloads), errNoOwnPayload)
	}
	for len(o.recv) < len(payloads) {
		o.recv = append(o.recv, nil)
	}
	o.recv = o.recv[:len(payloads)]
	for r, b := range payloads {
		var err error
		if o.recv[r], err = o.layout.Decode(b, o.recv[r]); err != nil {
			return fmt.Errorf("demo: payload of rank %d: %w", r, err)
		}
	}
	return nil
}

// sign32 is sign(v): −1, 0 or +1, with sign(±0) = 0 as torch.sign.
func sign32(v float32) float32 {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

func firstNonFinite(x []float32) int {
	for j, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return j
		}
	}
	return -1
}

// State implements Optimizer: Δ of every parameter ("demo_delta"; of a
// 1-D parameter, its bf16 rounding residual) and the step counter.
func (o *Demo) State() []NamedTensor {
	ts := make([]NamedTensor, 0, len(o.params)+1)
	for i, p := range o.params {
		ts = append(ts, NamedTensor{Name: stateName(p, "demo_delta"), Shape: p.Shape, Data: o.delta[i]})
	}
	return append(ts, NamedTensor{Name: "optim.demo.step", Shape: []int{2}, Data: splitCount(o.t)})
}

// SetState implements Optimizer. Every momentum value must be finite. It
// also clears a failed step (see StepContext); if it fails itself, the
// optimizer refuses to step until a SetState succeeds.
func (o *Demo) SetState(ts []NamedTensor) error {
	t, err := restoreStepped("demo", ts, liveState("demo", o.State()))
	if err == nil {
		for i, d := range o.delta {
			if j := firstNonFinite(d); j >= 0 {
				err = fmt.Errorf("demo: %s: value %d is %v, want a finite number", stateName(o.params[i], "demo_delta"), j, d[j])
				break
			}
		}
	}
	if err != nil {
		o.broken = fmt.Errorf("state restore failed: %w", err)
		return err
	}
	o.t, o.broken = t, nil
	return nil
}
