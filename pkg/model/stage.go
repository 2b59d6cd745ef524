package model

import (
	"fmt"

	"github.com/ternml/tern/pkg/tensor"
)

// RowRange is a half-open range [Lo, Hi) of vocabulary rows.
type RowRange struct{ Lo, Hi int }

// Len is the number of rows.
func (r RowRange) Len() int { return r.Hi - r.Lo }

// StageSpec says which part of the model a Stage holds: a contiguous range of
// blocks, optionally the final norm, and row shards of the input embedding and
// the LM head (an empty range means none).
type StageSpec struct {
	FirstLayer, EndLayer int      // blocks [FirstLayer, EndLayer)
	Embed                RowRange // embedding rows held
	Head                 RowRange // LM head rows held
	FinalNorm            bool     // apply the final RMSNorm after the last block
	Recompute            bool     // keep only block inputs; recompute the rest in backward
}

// FullStage is the whole model in one stage with the full vocabulary.
func FullStage(c Config) StageSpec {
	return StageSpec{FirstLayer: 0, EndLayer: c.Layers, Embed: RowRange{0, c.Vocab}, Head: RowRange{0, c.Vocab}, FinalNorm: true}
}

// Stage holds part of the model's parameters and runs its forward and
// backward pieces on its device. Methods are not safe for concurrent use: a
// stage runs one operation at a time, though many microbatches (Acts) may be
// in flight.
//
// Parameters, activations and the buffers Stage methods return live in the
// device's memory; HeadForward syncs the device before it returns, so its
// statistics can be read on the host at once. Before reading any other
// returned buffer on the host (to send it to another stage, say), call
// Device().Sync(); buffers the caller passes in must come from the same
// device's Alloc.
type Stage struct {
	cfg       Config
	spec      StageSpec
	dev       tensor.Device
	embed     *Param
	blocks    []*block
	finalNorm *Param
	head      *Param
	params    []*Param

	// Backward (and recomputation) scratch shared by all microbatches,
	// sized for the largest B·T seen by NewActs.
	wsN   int
	grads blockGrads
	rc    blockActs // recomputed block activations when spec.Recompute
	// selScratch gathers dy's selected columns for weights whose gradient
	// is row-selected (Param.RowSel); it stays empty unless an optimizer
	// selects rows, and then holds B·T·r floats for the largest r.
	selScratch []float32
}

// Option adjusts how New and NewStage build a model.
type Option func(*options)

type options struct{ dev tensor.Device }

// WithDevice runs the model on dev (tensor.CPU{} by default): parameters,
// activations and scratch are allocated by dev and every kernel is dev's.
func WithDevice(dev tensor.Device) Option { return func(o *options) { o.dev = dev } }

// NewStage builds the parameters of spec, initialised from seed. Every
// parameter row draws from its own stream keyed by (seed, name, global row),
// so the values do not depend on how the model is cut into stages.
func NewStage(c Config, spec StageSpec, seed uint64, opts ...Option) (*Stage, error) {
	o := options{dev: tensor.CPU{}}
	for _, opt := range opts {
		opt(&o)
	}
	if o.dev == nil {
		return nil, fmt.Errorf("model device: WithDevice got nil; leave the option out to run on the CPU")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if spec.FirstLayer < 0 || spec.EndLayer < spec.FirstLayer || spec.EndLayer > c.Layers {
		return nil, fmt.Errorf("stage layers [%d,%d) must satisfy 0 <= first <= end <= %d", spec.FirstLayer, spec.EndLayer, c.Layers)
	}
	for _, r := range []struct {
		name string
		r    RowRange
	}{{"embedding", spec.Embed}, {"head", spec.Head}} {
		if r.r.Lo < 0 || r.r.Hi < r.r.Lo || r.r.Hi > c.Vocab {
			return nil, fmt.Errorf("stage %s rows [%d,%d) must satisfy 0 <= lo <= hi <= vocab %d", r.name, r.r.Lo, r.r.Hi, c.Vocab)
		}
	}
	s := &Stage{cfg: c, spec: spec, dev: o.dev}
	d, hd, f := c.Dim, c.HeadDim(), c.FFN
	resid := residualStd(c.Layers)
	if spec.Embed.Len() > 0 {
		s.embed = newParam(s.dev, "model.embed_tokens.weight", RoleEmbedding, []int{c.Vocab, d}, spec.Embed.Lo, spec.Embed.Hi, initStd, seed)
		s.params = append(s.params, s.embed)
	}
	for l := spec.FirstLayer; l < spec.EndLayer; l++ {
		pre := fmt.Sprintf("model.layers.%d.", l)
		mk := func(name string, role Role, shape []int, std float64) *Param {
			p := newParam(s.dev, pre+name, role, shape, 0, shape[0], std, seed)
			s.params = append(s.params, p)
			return p
		}
		bl := &block{dev: s.dev, layer: l}
		bl.norm1 = mk("input_layernorm.weight", RoleNorm, []int{d}, 0)
		bl.wq = mk("self_attn.q_proj.weight", RoleAttnQK, []int{c.Heads * hd, d}, initStd)
		bl.wk = mk("self_attn.k_proj.weight", RoleAttnQK, []int{c.KVHeads * hd, d}, initStd)
		bl.wv = mk("self_attn.v_proj.weight", RoleAttnV, []int{c.KVHeads * hd, d}, initStd)
		bl.wo = mk("self_attn.o_proj.weight", RoleAttnO, []int{d, c.Heads * hd}, resid)
		bl.norm2 = mk("post_attention_layernorm.weight", RoleNorm, []int{d}, 0)
		bl.wg = mk("mlp.gate_proj.weight", RoleMLP, []int{f, d}, initStd)
		bl.wu = mk("mlp.up_proj.weight", RoleMLP, []int{f, d}, initStd)
		bl.wd = mk("mlp.down_proj.weight", RoleMLP, []int{d, f}, resid)
		s.blocks = append(s.blocks, bl)
	}
	if spec.FinalNorm {
		s.finalNorm = newParam(s.dev, "model.norm.weight", RoleNorm, []int{d}, 0, d, 0, seed)
		s.params = append(s.params, s.finalNorm)
	}
	if spec.Head.Len() > 0 {
		s.head = newParam(s.dev, "lm_head.weight", RoleHead, []int{c.Vocab, d}, spec.Head.Lo, spec.Head.Hi, initStd, seed)
		s.params = append(s.params, s.head)
	}
	return s, nil
}

// Config returns the model configuration.
func (s *Stage) Config() Config { return s.cfg }

// Spec returns what the stage holds.
func (s *Stage) Spec() StageSpec { return s.spec }

// Device returns the device the stage computes on.
func (s *Stage) Device() tensor.Device { return s.dev }

// Params lists the stage's parameters: embedding, blocks in order (each in
// Hugging Face order), final norm, head.
func (s *Stage) Params() []*Param { return s.params }

// ZeroGrad clears all gradients, including row-selected ones (Param.GSel).
func (s *Stage) ZeroGrad() {
	for _, p := range s.params {
		s.dev.Zero(p.G)
		s.dev.Zero(p.GSel)
	}
}

// allocator hands out float32 buffers from dev and counts their bytes; with
// dry set it only counts, so memory estimates match what is allocated
// exactly.
type allocator struct {
	dev   tensor.Device
	dry   bool
	bytes int64
}

func (al *allocator) f32(n int) []float32 {
	al.bytes += 4 * int64(n)
	if al.dry {
		return nil
	}
	return al.dev.Alloc(n)
}

// bools allocates host memory: per-token flags the host computes and reads.
func (al *allocator) bools(n int) []bool {
	al.bytes += int64(n)
	if al.dry {
		return nil
	}
	return make([]bool, n)
}

// ropeCache holds the RoPE rotation tables, [T, HeadDim/2] each.
type ropeCache struct{ cos, sin []float32 }

// Acts holds one microbatch's activations on a stage, from its forward pass
// to its backward pass. Reuse it across steps for the same B and T.
type Acts struct {
	B, T  int
	resid [][]float32 // [layers+1][N·D]: block inputs, then the last block's output
	saved []blockActs // per block, unless the stage recomputes
	out   []float32   // [N·D] final-norm output
	rstdF []float32   // [N]
	dx    []float32   // [N·D] gradient w.r.t. the stage input
	rope  ropeCache

	logits   []float32 // [N·headRows]
	logitsOK bool      // logits hold h·Wᵀ of the last HeadForward
	stats    HeadStats
	bytes    int64
}

func (s *Stage) newActs(al *allocator, b, t int) *Acts {
	c, n := s.cfg, b*t
	a := &Acts{B: b, T: t}
	nb := s.spec.EndLayer - s.spec.FirstLayer
	a.resid = make([][]float32, nb+1)
	for i := range a.resid {
		a.resid[i] = al.f32(n * c.Dim)
	}
	if !s.spec.Recompute {
		a.saved = make([]blockActs, nb)
		for i := range a.saved {
			a.saved[i] = newBlockActs(al, c, b, t)
		}
	}
	if s.spec.FinalNorm {
		a.out, a.rstdF = al.f32(n*c.Dim), al.f32(n)
	}
	a.dx = al.f32(n * c.Dim)
	if nb > 0 {
		half := c.HeadDim() / 2
		a.rope.cos, a.rope.sin = al.f32(t*half), al.f32(t*half)
		if !al.dry {
			tensor.RoPETables(a.rope.cos, a.rope.sin, t, c.HeadDim(), c.RopeTheta)
		}
	}
	if s.spec.Head.Len() > 0 {
		a.logits = al.f32(n * s.spec.Head.Len())
		a.stats = HeadStats{Max: al.f32(n), SumExp: al.f32(n), TargetLogit: al.f32(n), HasTarget: al.bools(n)}
	}
	a.bytes = al.bytes
	return a
}

// ensureWorkspace grows the stage-wide scratch to microbatches of B·T tokens
// (with a dry allocator it only counts what that scratch takes).
func (s *Stage) ensureWorkspace(al *allocator, b, t int) {
	n := b * t
	if s.spec.EndLayer == s.spec.FirstLayer {
		return
	}
	if n <= s.wsN && !al.dry {
		return
	}
	// Every buffer is linear in B·T, so buffers sized for (1, n) serve any
	// microbatch of at most n tokens through sized views.
	g := newBlockGrads(al, s.cfg, n)
	var r blockActs
	if s.spec.Recompute {
		r = newBlockActs(al, s.cfg, 1, n)
	}
	if !al.dry {
		s.grads, s.rc, s.wsN = g, r, n
	}
}

// NewActs allocates the activations of one microbatch of B sequences of T
// tokens, and grows the stage's shared backward scratch if needed.
func (s *Stage) NewActs(b, t int) *Acts {
	s.ensureWorkspace(&allocator{dev: s.dev}, b, t)
	return s.newActs(&allocator{dev: s.dev}, b, t)
}

// ActsBytes is the size of one microbatch's Acts (allocated by NewActs).
func (s *Stage) ActsBytes(b, t int) int64 {
	return s.newActs(&allocator{dry: true}, b, t).bytes
}

// WorkspaceBytes is the stage-wide backward scratch for microbatches of B·T
// tokens (shared by all Acts of the stage).
func (s *Stage) WorkspaceBytes(b, t int) int64 {
	al := &allocator{dry: true}
	s.ensureWorkspace(al, b, t)
	return al.bytes
}

// StageActivationBytes returns, without building the stage, the bytes one
// B×T microbatch's Acts take on a stage of spec and the stage-wide scratch
// shared by its microbatches: what NewActs would allocate. A stage running k
// microbatches in flight needs k·acts + workspace.
func StageActivationBytes(c Config, spec StageSpec, b, t int) (acts, workspace int64) {
	shell := &Stage{cfg: c, spec: spec}
	return shell.ActsBytes(b, t), shell.WorkspaceBytes(b, t)
}

func (s *Stage) checkActs(a *Acts, what string, n, got int) {
	if got != n {
		panic(fmt.Sprintf("model: %s has %d elements, want %d for B=%d T=%d", what, got, n, a.B, a.T))
	}
}

// EmbedForward writes the embedding rows of tokens into out [len(tokens)·D];
// tokens outside the stage's embedding rows give zero rows.
func (s *Stage) EmbedForward(tokens []int32, out []float32) {
	d := s.cfg.Dim
	if len(out) < len(tokens)*d {
		panic(fmt.Sprintf("model: embedding output has %d elements, want %d", len(out), len(tokens)*d))
	}
	if s.embed == nil {
		s.dev.Zero(out[:len(tokens)*d])
		return
	}
	s.dev.EmbeddingForward(out, s.embed.W, s.spec.Embed.Lo, s.spec.Embed.Hi, d, tokens)
}

// EmbedBackward accumulates the embedding gradient of the rows this stage
// holds from dOut [len(tokens)·D].
func (s *Stage) EmbedBackward(tokens []int32, dOut []float32) {
	if s.embed == nil {
		return
	}
	s.dev.EmbeddingBackward(s.embed.G, dOut, s.spec.Embed.Lo, s.spec.Embed.Hi, s.cfg.Dim, tokens)
}

// BlocksForward runs the stage's blocks (and the final norm if held) on x
// [B·T·D] and returns the output, owned by a.
func (s *Stage) BlocksForward(a *Acts, x []float32) []float32 {
	c, b, t := s.cfg, a.B, a.T
	n := b * t
	s.checkActs(a, "block input", n*c.Dim, len(x))
	s.dev.Copy(a.resid[0], x)
	var rc blockActs
	if s.spec.Recompute && len(s.blocks) > 0 {
		rc = s.rc.sized(c, b, t)
	}
	for i, bl := range s.blocks {
		sv := &rc
		if !s.spec.Recompute {
			sv = &a.saved[i]
		}
		bl.forward(c, sv, &a.rope, b, t, a.resid[i], a.resid[i+1])
	}
	last := a.resid[len(a.resid)-1]
	if !s.spec.FinalNorm {
		return last
	}
	s.dev.RMSNormForward(a.out, a.rstdF, last, s.finalNorm.W, n, c.Dim, c.NormEps)
	return a.out
}

// BlocksBackward takes dy, the gradient w.r.t. the output of BlocksForward,
// accumulates parameter gradients and returns the gradient w.r.t. its input,
// owned by a.
func (s *Stage) BlocksBackward(a *Acts, dy []float32) []float32 {
	c, b, t := s.cfg, a.B, a.T
	n := b * t
	s.checkActs(a, "output gradient", n*c.Dim, len(dy))
	if s.spec.FinalNorm {
		s.dev.Zero(a.dx)
		s.dev.RMSNormBackward(a.dx, s.finalNorm.G, dy, a.resid[len(a.resid)-1], s.finalNorm.W, a.rstdF, n, c.Dim)
	} else {
		s.dev.Copy(a.dx, dy)
	}
	var rc blockActs
	var gr blockGrads
	if len(s.blocks) > 0 {
		gr = s.grads.sized(c, n)
		gr.sel = &s.selScratch
		if s.spec.Recompute {
			rc = s.rc.sized(c, b, t)
		}
	}
	for i := len(s.blocks) - 1; i >= 0; i-- {
		bl := s.blocks[i]
		sv := &rc
		if s.spec.Recompute {
			bl.forward(c, sv, &a.rope, b, t, a.resid[i], nil)
		} else {
			sv = &a.saved[i]
		}
		bl.backward(c, sv, &gr, &a.rope, b, t, a.resid[i], a.dx)
	}
	return a.dx
}

// HeadForward computes the LM head logits of h [B·T·D] for the stage's
// vocabulary rows and returns per-token statistics (owned by a). targets
// below zero are ignored.
func (s *Stage) HeadForward(a *Acts, h []float32, targets []int32) HeadStats {
	n := a.B * a.T
	s.checkActs(a, "head input", n*s.cfg.Dim, len(h))
	s.checkActs(a, "targets", n, len(targets))
	if s.head == nil {
		panic("model: HeadForward on a stage without LM head rows")
	}
	headForward(s.dev, a.logits, a.stats, h, s.head.W, s.spec.Head.Lo, s.spec.Head.Len(), s.cfg.Dim, targets)
	a.logitsOK = true
	s.dev.Sync()
	return a.stats
}

// HeadBackward takes the global per-token max and sum of exponentials
// (CombineHeadStats), accumulates the head gradient of scale·Σ loss and adds
// the gradient w.r.t. h into dh (the caller zeroes dh). It consumes the logits
// of the last HeadForward on a, recomputing them if they were consumed.
func (s *Stage) HeadBackward(a *Acts, h []float32, targets []int32, gMax, gSumExp []float32, scale float32, dh []float32) {
	n := a.B * a.T
	s.checkActs(a, "head input", n*s.cfg.Dim, len(h))
	s.checkActs(a, "head input gradient", n*s.cfg.Dim, len(dh))
	s.checkActs(a, "targets", n, len(targets))
	if s.head == nil {
		panic("model: HeadBackward on a stage without LM head rows")
	}
	rows := s.spec.Head.Len()
	if !a.logitsOK {
		linearForward(s.dev, a.logits, h, s.head.W, n, s.cfg.Dim, rows, 0)
	}
	a.logitsOK = false
	headBackward(s.dev, s.head.G, dh, a.logits, h, s.head.W, s.spec.Head.Lo, rows, s.cfg.Dim, targets, gMax, gSumExp, scale)
}
