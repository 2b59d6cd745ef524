package model

import (
	"fmt"
)

// Model is the whole decoder in one stage, for single-process training and
// evaluation. It reuses its activation buffers across calls with the same B
// and T.
type Model struct {
	cfg   Config
	stage *Stage
	acts  *Acts
	in    []float32 // [N·D] embedding output
	dh    []float32 // [N·D] gradient w.r.t. the head input
	gMax  []float32 // [N]
	gSum  []float32 // [N]
}

// New builds the whole model with parameters initialised from seed;
// recompute turns on per-block activation recomputation. It runs on the CPU
// unless WithDevice says otherwise.
func New(c Config, seed uint64, recompute bool, opts ...Option) (*Model, error) {
	spec := FullStage(c)
	spec.Recompute = recompute
	s, err := NewStage(c, spec, seed, opts...)
	if err != nil {
		return nil, fmt.Errorf("build model: %w", err)
	}
	return &Model{cfg: c, stage: s}, nil
}

// Config returns the model configuration.
func (m *Model) Config() Config { return m.cfg }

// Stage exposes the single stage holding the whole model.
func (m *Model) Stage() *Stage { return m.stage }

// Params lists all parameters in a stable order (see Stage.Params).
func (m *Model) Params() []*Param { return m.stage.Params() }

// ZeroGrad clears all gradients.
func (m *Model) ZeroGrad() { m.stage.ZeroGrad() }

// CheckBatch reports whether tokens and targets form a B×T batch for this
// model: lengths B·T, tokens in [0, vocab), targets in [-1, vocab) with -1
// meaning ignored.
func (m *Model) CheckBatch(tokens, targets []int32, b, t int) error {
	if b <= 0 || t <= 0 {
		return fmt.Errorf("batch shape B=%d T=%d: both must be > 0", b, t)
	}
	if len(tokens) != b*t || len(targets) != b*t {
		return fmt.Errorf("batch has %d tokens and %d targets, want B·T = %d", len(tokens), len(targets), b*t)
	}
	for i, v := range tokens {
		if v < 0 || int(v) >= m.cfg.Vocab {
			return fmt.Errorf("token %d at position %d is outside the vocabulary [0,%d)", v, i, m.cfg.Vocab)
		}
	}
	for i, v := range targets {
		if v < -1 || int(v) >= m.cfg.Vocab {
			return fmt.Errorf("target %d at position %d is outside [-1,%d) (-1 = ignored)", v, i, m.cfg.Vocab)
		}
	}
	return nil
}

func (m *Model) prepare(tokens, targets []int32, b, t int) {
	if err := m.CheckBatch(tokens, targets, b, t); err != nil {
		panic("model: " + err.Error())
	}
	if m.acts == nil || m.acts.B != b || m.acts.T != t {
		n, dev := b*t, m.stage.dev
		m.acts = m.stage.NewActs(b, t)
		m.in = dev.Alloc(n * m.cfg.Dim)
		m.dh = dev.Alloc(n * m.cfg.Dim)
		m.gMax, m.gSum = dev.Alloc(n), dev.Alloc(n)
	}
}

func (m *Model) forward(tokens, targets []int32) (h []float32, lossSum float64, count int) {
	s, a := m.stage, m.acts
	s.EmbedForward(tokens, m.in)
	h = s.BlocksForward(a, m.in)
	st := s.HeadForward(a, h, targets) // synced: readable on the host
	lossSum, count = CombineHeadStats([]HeadStats{st}, m.gMax, m.gSum)
	return h, lossSum, count
}

// ForwardBackward runs one microbatch of B sequences of T tokens (row-major
// [B,T]; targets -1 are ignored) and accumulates the gradients of
// gradScale·Σ per-token loss. It returns the summed loss and the number of
// tokens with a target, with the device synced, so the gradients can be read
// on the host (clipping, the data-parallel exchange, host-side optimizers).
// It panics if the batch fails CheckBatch.
func (m *Model) ForwardBackward(tokens, targets []int32, b, t int, gradScale float32) (lossSum float64, count int) {
	m.prepare(tokens, targets, b, t)
	s, a := m.stage, m.acts
	h, lossSum, count := m.forward(tokens, targets)
	s.dev.Zero(m.dh)
	s.HeadBackward(a, h, targets, m.gMax, m.gSum, gradScale, m.dh)
	dx := s.BlocksBackward(a, m.dh)
	s.EmbedBackward(tokens, dx)
	s.dev.Sync()
	return lossSum, count
}

// Loss runs the forward pass only (evaluation) and returns the summed loss
// and the number of tokens with a target.
func (m *Model) Loss(tokens, targets []int32, b, t int) (lossSum float64, count int) {
	m.prepare(tokens, targets, b, t)
	_, lossSum, count = m.forward(tokens, targets)
	return lossSum, count
}

// ActivationBytes is the activation memory of one B×T microbatch: what
// NewActs allocates for the microbatch plus the stage's shared backward
// scratch, plus the model's embedding-output and head-gradient buffers.
func (m *Model) ActivationBytes(b, t int) int64 {
	acts, ws := StageActivationBytes(m.cfg, m.stage.spec, b, t)
	return acts + ws + modelBufferBytes(m.cfg, b, t)
}

// modelBufferBytes are the Model's own per-batch buffers: in, dh, gMax, gSum.
func modelBufferBytes(c Config, b, t int) int64 {
	n := int64(b * t)
	return 4 * (2*n*int64(c.Dim) + 2*n)
}
