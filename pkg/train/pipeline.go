package train

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/data"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/parallel"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/tensor"
)

// pipeline is one rank's stage of a pipeline-parallel replica: the part of
// the model it holds, the schedule it walks every step, and the group of
// its replica's stages (group rank = stage index) for activations,
// gradients and the vocabulary collectives.
//
// The stage executes its op list in order. A receive blocks until the
// message is there, a send is queued and returns, a collective blocks
// until every stage of the replica has entered it; pkg/parallel's
// validator checks that this execution of the schedule cannot deadlock.
//
// The vocabulary-parallel output layer runs as follows for microbatch i:
// C0 broadcasts the final hidden states X from the loss stage; S computes
// the logits of the stage's head rows and their per-token max, sum of
// exponentials and target logit; C1 all-gathers those statistics and every
// stage combines them in stage order (so every stage knows the loss, and
// the combination is the same bits everywhere); the head backward computes
// the stage's head gradient and its part of ∂L/∂X, and the parts are
// reduced (summed in a fixed order) onto the loss stage — inside C1 under
// Algorithm 2, at T and C2 under Algorithm 1. Under Algorithm 2 the head
// weight gradient is therefore computed at C1, not at T (T is then empty):
// the same arithmetic as the reference's split, done earlier.
type pipeline struct {
	stage  *model.Stage
	sched  *parallel.Schedule
	layout parallel.Layout
	pp, p  int
	pipe   *comm.Group
	b, t   int
	d      int
	scale  float32
	mbs    []*microbatch
	step   int64 // numbers the point-to-point messages
	// free holds activation buffers no microbatch uses: a microbatch takes
	// one at its F and returns it once its backward (blocks and head) is
	// done, so a stage holds as many as its schedule keeps in flight
	// (1F1B: about p − stage; GPipe: all M), not one per microbatch.
	free     []*model.Acts
	actsMade int
	sendBuf  []byte
}

// microbatch is one microbatch's state on a stage during a step.
type microbatch struct {
	tokens, targets []int32
	acts            *model.Acts
	emb             []float32 // embedding lookup of the stage's rows; on stage 0, X₀ after IFsum
	in              []float32 // activations received from the previous stage
	out             []float32 // this stage's F output (owned by acts)
	x               []float32 // X, the final hidden states, after C0
	gMax, gSum      []float32 // global softmax statistics
	dh              []float32 // ∂L/∂X: this stage's part, then (loss stage) the sum
	dy              []float32 // ∂L/∂out received from the next stage
	dx              []float32 // ∂L/∂in from B, copied out of acts
	dx0             []float32 // ∂L/∂X₀, broadcast from stage 0 for IB
	stats           model.HeadStats
	headDone        bool
	blocksDone      bool
	lossSum         float64
	count           int
}

// newPipeline builds this rank's stage: the layout and schedule from
// spec.parallel, the stage's parameters (initialised as the same rows of
// the whole model would be), buffers for every microbatch, and the group of
// the replica's stages.
func newPipeline(job *spec.TrainingJob, cfg model.Config, d *replicas, devOpts ...model.Option) (*pipeline, error) {
	ps := job.Spec.Parallel
	mode := parallel.VocabNaive
	if ps.VocabParallel {
		mode = parallel.VocabParallel
	}
	layout, err := parallel.Partition(cfg, ps.Pipeline, mode)
	if err != nil {
		return nil, fmt.Errorf("spec.parallel: %w", err)
	}
	m := job.Spec.Batch.MicroBatches
	alg := ps.VocabAlgorithm
	if mode != parallel.VocabParallel {
		alg = 0 // the algorithms are the vocabulary-parallel output layer's
	}
	// The runtime runs each collective in place, blocking, so the schedule
	// is shaped for that: no extra warmup forwards to hide barriers behind
	// (they would only add memory and idle time when nothing overlaps).
	sched, err := parallel.Build(parallel.Plan{PP: ps.Pipeline, DP: ps.Data, M: m, Schedule: ps.Schedule, Vocab: mode, Algorithm: alg, BlockingCollectives: true})
	if err != nil {
		return nil, fmt.Errorf("spec.parallel: %w", err)
	}
	topo, err := parallel.NewTopology(ps.Data, ps.Pipeline)
	if err != nil {
		return nil, err
	}
	ranks, err := topo.PipelineGroup(d.rank)
	if err != nil {
		return nil, err
	}
	pipe, err := comm.NewSubGroup(d.tr, ranks, comm.GroupOptions{ID: 1 + uint32(d.rank)})
	if err != nil {
		return nil, err
	}
	scfg := cfg
	scfg.Vocab = layout.PaddedVocab
	sspec := layout.Stages[d.pp]
	sspec.Recompute = job.Spec.Model.Recompute
	stage, err := model.NewStage(scfg, sspec, job.Spec.Seed, devOpts...)
	if err != nil {
		return nil, err
	}
	b, t := job.Spec.Batch.MicroBatchSize, cfg.SeqLen
	pl := &pipeline{stage: stage, sched: sched, layout: layout, pp: d.pp, p: ps.Pipeline, pipe: pipe, b: b, t: t, d: cfg.Dim,
		scale: float32(1 / float64(b*t*m))}
	dev, n := stage.Device(), b*t
	for range m {
		pl.mbs = append(pl.mbs, &microbatch{
			tokens: make([]int32, n), targets: make([]int32, n), dx: dev.Alloc(n * cfg.Dim),
			emb: dev.Alloc(n * cfg.Dim), in: dev.Alloc(n * cfg.Dim), x: dev.Alloc(n * cfg.Dim),
			gMax: dev.Alloc(n), gSum: dev.Alloc(n), dh: dev.Alloc(n * cfg.Dim), dy: dev.Alloc(n * cfg.Dim),
			dx0: dev.Alloc(n * cfg.Dim),
		})
	}
	return pl, nil
}

// activationBytes counts the stage's activation buffers made so far (as
// many as the schedule has kept in flight at once), every microbatch's
// boundary buffers (inputs, outputs and gradients of the stage, n×d each)
// and the backward scratch.
func (pl *pipeline) activationBytes() int64 {
	acts, ws := model.StageActivationBytes(pl.stage.Config(), pl.stage.Spec(), pl.b, pl.t)
	n := int64(pl.b * pl.t)
	per := 4*(7*n*int64(pl.d)+2*n) + 8*n
	return int64(pl.actsMade)*acts + int64(len(pl.mbs))*per + ws
}

// InFlight is the most activation buffers the stage has held at once.
func (pl *pipeline) inFlight() int { return pl.actsMade }

// loss runs one batch forward through the replica's stages (evaluation)
// and returns the summed loss and target count on the stages that know it:
// every stage with vocabulary parallelism, the last one otherwise.
func (pl *pipeline) loss(ctx context.Context, tokens, targets []int32) (float64, int, error) {
	m := pl.mbs[0]
	copy(m.tokens, tokens)
	copy(m.targets, targets)
	vp := pl.sched.Vocab == parallel.VocabParallel
	last := pl.p - 1
	ops := []parallel.Op{}
	op := func(k parallel.Kind, peer int, tag parallel.CollTag) {
		ops = append(ops, parallel.Op{Kind: k, Stage: pl.pp, Peer: peer, Tag: tag})
	}
	if vp || pl.pp == 0 {
		op(parallel.IF, -1, parallel.NoTag)
	}
	if vp {
		op(parallel.AllReduce, 0, parallel.IFSum)
	}
	if pl.pp > 0 {
		op(parallel.RecvAct, pl.pp-1, parallel.NoTag)
	}
	op(parallel.F, -1, parallel.NoTag)
	if pl.pp < last {
		op(parallel.SendAct, pl.pp+1, parallel.NoTag)
	}
	if vp {
		op(parallel.Bcast, last, parallel.C0)
	}
	if vp || pl.pp == last {
		op(parallel.S, -1, parallel.NoTag)
	}
	m.headDone, m.lossSum, m.count = false, 0, 0
	defer func() {
		if m.acts != nil {
			pl.free = append(pl.free, m.acts)
			m.acts = nil
		}
	}()
	for _, o := range ops {
		if o.Kind == parallel.Bcast || o.Kind == parallel.AllReduce {
			if err := pl.collective(ctx, o, m); err != nil {
				return 0, 0, err
			}
			continue
		}
		if err := pl.exec(ctx, o); err != nil {
			return 0, 0, err
		}
	}
	if vp {
		// The statistics exchange of C1, without the backward.
		if err := pl.combineStats(ctx, m); err != nil {
			return 0, 0, err
		}
	}
	pl.step++
	return m.lossSum, m.count, nil
}

// p2pID numbers a transfer uniquely within the run: the transport requires
// a (sender, receiver, id) to be used once.
func (pl *pipeline) p2pID(mb int, grad bool) uint64 {
	id := (uint64(pl.step)*uint64(len(pl.mbs)) + uint64(mb)) * 2
	if grad {
		id++
	}
	return id
}

func (pl *pipeline) lossStage() bool { return pl.pp == pl.sched.LossStage }

// run executes one step's schedule for the microbatches already sampled
// into pl.mbs and returns the loss sum and target count (on stages that
// know the loss: every stage under vocabulary parallelism, the loss stage
// otherwise).
func (pl *pipeline) run(ctx context.Context) (lossSum float64, count int, err error) {
	for _, m := range pl.mbs {
		m.headDone, m.blocksDone, m.lossSum, m.count = false, false, 0, 0
	}
	for _, op := range pl.sched.Stages[pl.pp] {
		if err := pl.exec(ctx, op); err != nil {
			return 0, 0, fmt.Errorf("stage %d %v: %w", pl.pp, op, err)
		}
	}
	// The gradient exchange, clipping and optimizer that follow read the
	// gradients on the host; the last backward kernels may still be queued.
	pl.stage.Device().Sync()
	pl.step++
	for _, m := range pl.mbs {
		lossSum += m.lossSum
		count += m.count
	}
	return lossSum, count, nil
}

func (pl *pipeline) exec(ctx context.Context, op parallel.Op) error {
	m := pl.mbs[op.MB]
	st := pl.stage
	switch op.Kind {
	case parallel.IF:
		st.EmbedForward(m.tokens, m.emb)
	case parallel.F:
		in := m.in
		if pl.pp == 0 {
			in = m.emb
		}
		if m.acts == nil {
			m.acts = pl.takeActs()
		}
		m.out = st.BlocksForward(m.acts, in)
		if pl.lossStage() {
			devCopy(st.Device(), m.x, m.out)
		}
	case parallel.SendAct:
		st.Device().Sync() // the host reads m.out
		return pl.pipe.Send(ctx, op.Peer, pl.p2pID(op.MB, false), pl.sendBytes(m.out))
	case parallel.RecvAct:
		st.Device().Sync() // the host writes m.in
		return pl.recv(ctx, op.Peer, pl.p2pID(op.MB, false), m.in)
	case parallel.S:
		m.stats = st.HeadForward(m.acts, m.x, m.targets)
		if pl.sched.Vocab != parallel.VocabParallel {
			m.lossSum, m.count = model.CombineHeadStats([]model.HeadStats{m.stats}, m.gMax, m.gSum)
		}
	case parallel.Loss:
		// The loss is known once the statistics are combined (S or C1).
	case parallel.T:
		if !m.headDone {
			pl.headBackward(m)
		}
		pl.maybeRelease(m)
	case parallel.B:
		dy := m.dy
		if pl.lossStage() {
			dy = m.dh
		}
		dx := st.BlocksBackward(m.acts, dy)
		if pl.pp == 0 {
			devCopy(st.Device(), m.dx0, dx)
		} else {
			devCopy(st.Device(), m.dx, dx)
		}
		m.blocksDone = true
		pl.maybeRelease(m)
	case parallel.SendGrad:
		st.Device().Sync()
		return pl.pipe.Send(ctx, op.Peer, pl.p2pID(op.MB, true), pl.sendBytes(m.dx))
	case parallel.RecvGrad:
		st.Device().Sync()
		return pl.recv(ctx, op.Peer, pl.p2pID(op.MB, true), m.dy)
	case parallel.IB:
		st.EmbedBackward(m.tokens, m.dx0)
	case parallel.Bcast, parallel.AllReduce:
		return pl.collective(ctx, op, m)
	default:
		return fmt.Errorf("op kind %v has no executor", op.Kind)
	}
	return nil
}

// takeActs returns a free activation buffer, making one when none is free.
func (pl *pipeline) takeActs() *model.Acts {
	if n := len(pl.free); n > 0 {
		a := pl.free[n-1]
		pl.free = pl.free[:n-1]
		return a
	}
	pl.actsMade++
	return pl.stage.NewActs(pl.b, pl.t)
}

// maybeRelease returns m's activations once nothing of this step needs
// them: the blocks' backward has run, and so has the head's where the stage
// holds head rows (its logits live in the same buffer).
func (pl *pipeline) maybeRelease(m *microbatch) {
	hasHead := pl.stage.Spec().Head.Len() > 0
	if m.acts == nil || !m.blocksDone || (hasHead && !m.headDone) {
		return
	}
	pl.free = append(pl.free, m.acts)
	m.acts = nil
}

func (pl *pipeline) headBackward(m *microbatch) {
	pl.stage.Device().Zero(m.dh)
	pl.stage.HeadBackward(m.acts, m.x, m.targets, m.gMax, m.gSum, pl.scale, m.dh)
	m.headDone = true
}

func (pl *pipeline) collective(ctx context.Context, op parallel.Op, m *microbatch) error {
	g := pl.pipe
	// Collectives read and write device buffers from the host.
	pl.stage.Device().Sync()
	switch op.Tag {
	case parallel.IFSum:
		// Every token's row lives on exactly one stage; the others add
		// zeros, so the sum is exact.
		return g.Reduce(ctx, op.Peer, m.emb, comm.Sum, comm.WireFloat32)
	case parallel.C0:
		return g.BroadcastFloat32(ctx, op.Peer, m.x)
	case parallel.C1:
		if err := pl.combineStats(ctx, m); err != nil {
			return err
		}
		if pl.sched.Algorithm == 2 {
			pl.headBackward(m)
			pl.maybeRelease(m)
			pl.stage.Device().Sync()
			return g.Reduce(ctx, op.Peer, m.dh, comm.Sum, comm.WireFloat32)
		}
		return nil
	case parallel.C2:
		return g.Reduce(ctx, op.Peer, m.dh, comm.Sum, comm.WireFloat32)
	case parallel.IBBcast:
		return g.BroadcastFloat32(ctx, op.Peer, m.dx0)
	}
	return fmt.Errorf("collective %v has no executor", op.Tag)
}

// combineStats all-gathers every stage's softmax statistics of m and
// combines them in stage order into the global max and sum of exponentials
// and the loss, the same bits on every stage.
func (pl *pipeline) combineStats(ctx context.Context, m *microbatch) error {
	all, err := pl.pipe.AllGather(ctx, encodeStats(m.stats))
	if err != nil {
		return err
	}
	parts := make([]model.HeadStats, len(all))
	for r, b := range all {
		if parts[r], err = decodeStats(b, len(m.targets)); err != nil {
			return fmt.Errorf("softmax statistics from stage %d: %w", r, err)
		}
	}
	m.lossSum, m.count = model.CombineHeadStats(parts, m.gMax, m.gSum)
	return nil
}

// devCopy copies what copy(dst, src) would on the device that holds both,
// so an asynchronous device (cuda) orders it with its kernels.
func devCopy(dev tensor.Device, dst, src []float32) {
	n := min(len(dst), len(src))
	dev.Copy(dst[:n], src[:n])
}

func (pl *pipeline) recv(ctx context.Context, from int, id uint64, dst []float32) error {
	b, err := pl.pipe.Recv(ctx, from, id)
	if err != nil {
		return err
	}
	if len(b) != 4*len(dst) {
		return fmt.Errorf("stage %d sent %d bytes, want %d (%d float32 values)", from, len(b), 4*len(dst), len(dst))
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return nil
}

// sendBytes encodes x into the stage's send buffer, reused from send to
// send: comm's Send copies the payload before it returns.
func (pl *pipeline) sendBytes(x []float32) []byte {
	if cap(pl.sendBuf) < 4*len(x) {
		pl.sendBuf = make([]byte, 4*len(x))
	}
	b := pl.sendBuf[:4*len(x)]
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func floatBytes(x []float32) []byte {
	b := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// encodeStats packs a shard's per-token statistics: max, sum of
// exponentials and target logit as float32, then one byte per token for
// whether the target is in the shard.
func encodeStats(s model.HeadStats) []byte {
	n := len(s.Max)
	b := make([]byte, 0, 13*n)
	for _, v := range [][]float32{s.Max, s.SumExp, s.TargetLogit} {
		b = append(b, floatBytes(v)...)
	}
	for _, h := range s.HasTarget {
		if h {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	}
	return b
}

func decodeStats(b []byte, n int) (model.HeadStats, error) {
	if len(b) != 13*n {
		return model.HeadStats{}, fmt.Errorf("%d bytes for %d tokens, want %d", len(b), n, 13*n)
	}
	st := model.HeadStats{Max: make([]float32, n), SumExp: make([]float32, n), TargetLogit: make([]float32, n), HasTarget: make([]bool, n)}
	for k, dst := range [][]float32{st.Max, st.SumExp, st.TargetLogit} {
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*(k*n+i):]))
		}
	}
	for i := range st.HasTarget {
		switch b[12*n+i] {
		case 0:
		case 1:
			st.HasTarget[i] = true
		default:
			return model.HeadStats{}, fmt.Errorf("token %d: target flag %d", i, b[12*n+i])
		}
	}
	return st, nil
}

// sample fills every microbatch's tokens and targets for step: all stages
// of a replica draw the same windows (the sampler is a pure function).
func (pl *pipeline) sample(s *data.Sampler, step int64, dpRank, dpSize int) error {
	for mb, m := range pl.mbs {
		if err := s.Batch(step, dpRank, dpSize, mb, len(pl.mbs), pl.b, m.tokens, m.targets); err != nil {
			return err
		}
	}
	return nil
}
