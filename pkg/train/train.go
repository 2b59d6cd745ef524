package train

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ternml/tern/pkg/atomicfile"
	"github.com/ternml/tern/pkg/comm"

	"github.com/ternml/tern/pkg/data"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/parallel"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
)

// Options are the run-time choices that are not part of the job spec.
type Options struct {
	// LocalRank, when set, is this rank's index among the ranks sharing
	// its machine (a worker agent numbers its own ranks); spec.device.gpu
	// auto takes GPU LocalRank modulo the GPUs CUDA sees. Unset, the
	// rank's index in Group is used, as for ternctl train's processes,
	// which all run on one machine.
	LocalRank *int
	// CheckpointDir overrides spec.checkpoint.dir when non-empty.
	CheckpointDir string
	// Resume is a checkpoint root (latest complete step) or one step directory.
	Resume string
	// Observer receives progress; nil means none.
	Observer Observer
	// Progress receives data-loading progress bars; nil means none.
	Progress io.Writer
	// Group connects this process, as one data-parallel replica, to the
	// others; its transport's rank is the replica's rank. Required when
	// spec.parallel.data > 1, nil otherwise. With a group, collectives
	// are not cancelled by ctx (a replica cannot leave a collective alone):
	// cancelling ctx asks every replica to stop after the current step,
	// and the transport's timeout bounds any wait.
	Group *comm.Group
	// Snapshots, when set, is offered this rank's whole state after every
	// step (in-memory snapshots; see Snapshotter). Nil means none.
	Snapshots Snapshotter
	// RestoreState, when set, is an in-memory snapshot of this rank to
	// continue from instead of step 0 (captured by a run of the same job
	// and rank); it excludes Resume.
	RestoreState *snapshot.RankState
}

type nopObserver struct{}

func (nopObserver) Started(RunInfo) {}
func (nopObserver) Step(StepReport) {}
func (nopObserver) Log(msg string)  {}

// Run trains job in this process until spec.steps are done or ctx is
// cancelled. On cancellation it writes a checkpoint (when checkpointing is
// configured) and returns the summary with Stopped set and a nil error.
func Run(ctx context.Context, job *spec.TrainingJob, opts Options) (*Summary, error) {
	start := time.Now()
	obs := opts.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	r, err := newRunner(ctx, job, opts)
	if err != nil {
		return nil, err
	}
	defer r.device.release()
	sum, err := r.loop(ctx, obs)
	if err != nil {
		return nil, err
	}
	sum.WallS = time.Since(start).Seconds()
	return sum, nil
}

// loop runs the remaining steps, evaluating and checkpointing as the spec
// says, and stops early (with a checkpoint) when ctx is cancelled.
func (r *runner) loop(ctx context.Context, obs Observer) (*Summary, error) {
	job := r.job
	obs.Started(RunInfo{
		Job: job.Metadata.Name, Optimizer: job.Spec.Optimizer.Name, OptimizerStateBytes: r.opt.StateBytes(),
		Params: r.cfg.NumParams(), StartStep: r.step, Steps: r.steps,
		TokensPerStep: r.tokensPerStep(), TrainTokens: int64(r.ds.Train.Len()), ValTokens: int64(r.ds.Val.Len()),
	})
	if r.step > 0 {
		obs.Log(fmt.Sprintf("resumed from %s at step %d", r.resumedFrom, r.step))
	}
	sum := &Summary{Job: job.Metadata.Name, Optimizer: job.Spec.Optimizer.Name, Params: r.cfg.NumParams(), FinalEvalLoss: math.NaN()}
	var stepMS []float64
	// Throughput is steady-state: the first step of a process pays one-off
	// costs (page faults on fresh buffers, pool warm-up), so it is left out
	// whenever a later step exists.
	var steady time.Duration
	var steadySteps int
	for r.step < r.steps {
		if r.dp == nil && ctx.Err() != nil {
			sum.Stopped = true
			break
		}
		t0 := time.Now()
		rep, stop, err := r.trainStep(ctx)
		if err != nil {
			return nil, fmt.Errorf("step %d: %w", r.step+1, err)
		}
		dt := time.Since(t0)
		if len(stepMS) > 0 {
			steady += dt
			steadySteps++
		}
		stepMS = append(stepMS, float64(dt.Microseconds())/1e3)
		rep.StepMS = float64(dt.Microseconds()) / 1e3
		rep.TokensPerS = float64(r.tokensPerStep()) / dt.Seconds()
		rep.Steps = r.steps
		per := dt
		if steadySteps > 0 {
			per = steady / time.Duration(steadySteps)
		}
		rep.ETASeconds = per.Seconds() * float64(r.steps-r.step)
		sum.FinalLoss = rep.Loss
		if r.evalDue() {
			ev, err := r.evaluate(ctx)
			if err != nil {
				return nil, err
			}
			rep.EvalLoss = &ev
			sum.FinalEvalLoss = ev
		}
		sum.BytesSentPerStep = max(sum.BytesSentPerStep, rep.BytesSent)
		sum.BytesRecvPerStep = max(sum.BytesRecvPerStep, rep.BytesRecv)
		obs.Step(rep)
		if r.checkpointDue() {
			path, err := r.checkpoint(ctx)
			if err != nil {
				return nil, err
			}
			sum.Checkpoint = path
		}
		if r.snapshots != nil {
			if err := r.snapshots.AfterStep(r.step, r.captureState); err != nil {
				return nil, fmt.Errorf("snapshot after step %d: %w", r.step, err)
			}
		}
		if stop && r.step < r.steps {
			sum.Stopped = true
			break
		}
	}
	r.waitSnapshot()
	if sum.Stopped && r.ckptDir != "" && r.lastCkptStep != r.step && r.step > 0 {
		path, err := r.checkpoint(ctx)
		if err != nil {
			return nil, fmt.Errorf("checkpoint on interrupt: %w", err)
		}
		sum.Checkpoint = path
		obs.Log("interrupted: wrote checkpoint " + path)
	}
	if !sum.Stopped && math.IsNaN(sum.FinalEvalLoss) && r.eval != nil {
		ev, err := r.evaluate(ctx)
		if err != nil {
			return nil, err
		}
		sum.FinalEvalLoss = ev
	}
	sum.Steps = r.step
	sum.WeightsCRC32C = r.weightsCRC()
	if steadySteps > 0 {
		sum.TokensPerS = float64(steadySteps*r.tokensPerStep()) / steady.Seconds()
	} else if len(stepMS) == 1 {
		sum.TokensPerS = float64(r.tokensPerStep()) / (stepMS[0] / 1e3)
	}
	sum.StepMSMedian = median(stepMS)
	sum.ModelGFLOPS = sum.TokensPerS * r.cfg.TrainFLOPsPerToken(r.T) / 1e9
	sum.Memory = r.memory()
	sum.OptimizerStateBytes = sum.Memory.Optimizer
	sum.PeakRSSBytes = PeakRSS()
	return sum, nil
}

// runner is the state of one rank's loop.
type runner struct {
	job     *spec.TrainingJob
	cfg     model.Config
	ds      *data.Dataset
	sampler *data.Sampler
	eval    *data.Sampler
	model   *model.Model
	opt     optim.Optimizer
	sched   optim.Schedule

	B, T, micro int
	steps       int
	step        int // optimizer steps done
	inputs      []int32
	targets     []int32

	ckptDir      string
	lastCkptStep int
	resumedFrom  string

	dp *replicas // nil for a single process

	// params are the parameters this rank trains: the whole model's, or
	// its pipeline stage's. pipe is nil without pipeline parallelism.
	params []*model.Param
	pipe   *pipeline

	snapshots Snapshotter // nil: no in-memory snapshots

	device *computeDevice // spec.device; nil or zero means the CPU
}

func newRunner(ctx context.Context, job *spec.TrainingJob, opts Options) (_ *runner, err error) {
	s := &job.Spec
	cfg, err := s.Model.Resolve()
	if err != nil {
		return nil, err
	}
	tok, err := data.NewTokenizer(cfg.Tokenizer)
	if err != nil {
		return nil, fmt.Errorf("spec.data.tokenizer: %w", err)
	}
	src := s.Data.Source()
	src.SeqLen = cfg.SeqLen
	if s.Data.Kind == "text" {
		if src, err = inlineSource(src, s.Data.Text); err != nil {
			return nil, err
		}
	}
	ds, err := data.Load(ctx, src, tok, opts.Progress)
	if err != nil {
		return nil, err
	}
	r := &runner{job: job, cfg: cfg, ds: ds, B: s.Batch.MicroBatchSize, T: cfg.SeqLen, micro: s.Batch.MicroBatches, steps: s.Steps}
	if r.sampler, err = data.NewSampler(ds.Train, cfg.SeqLen, s.Seed); err != nil {
		return nil, fmt.Errorf("training data: %w", err)
	}
	if s.Eval.Batches > 0 && s.Eval.EverySteps > 0 && ds.Val.Len() > 0 {
		if r.eval, err = data.NewSampler(ds.Val, cfg.SeqLen, s.Seed); err != nil {
			return nil, fmt.Errorf("validation data: %w", err)
		}
	}
	o := s.Optimizer
	if err := r.connect(job, opts); err != nil {
		return nil, err
	}
	if r.device, err = openDevice(s, localRank(opts)); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			r.device.release() // a rank that fails to start must not keep its GPU
		}
	}()
	if s.Parallel.Pipeline > 1 {
		if r.pipe, err = newPipeline(job, cfg, r.dp, r.device.opts...); err != nil {
			return nil, err
		}
		r.params = r.pipe.stage.Params()
	} else {
		if r.model, err = model.New(cfg, s.Seed, s.Model.Recompute, r.device.opts...); err != nil {
			return nil, err
		}
		r.params = r.model.Params()
	}
	if opts.Resume == "" {
		if err := r.applyInit(); err != nil {
			return nil, err
		}
	}
	var dpg *comm.Group
	if r.dp != nil && r.dp.size > 1 {
		dpg = r.dp.g
	}
	if r.opt, err = newOptimizer(job, cfg, r.params, dpg); err != nil {
		return nil, err
	}
	if r.sched, err = optim.NewSchedule(o.Schedule, o.LR, o.MinLR, o.WarmupSteps, s.Steps); err != nil {
		return nil, fmt.Errorf("spec.optimizer: %w", err)
	}
	r.inputs = make([]int32, r.B*r.T)
	r.targets = make([]int32, r.B*r.T)
	r.ckptDir = s.Checkpoint.Dir
	if opts.CheckpointDir != "" {
		r.ckptDir = opts.CheckpointDir
	}
	r.lastCkptStep = -1
	if opts.Resume != "" {
		if err := r.resume(opts.Resume); err != nil {
			return nil, err
		}
	}
	r.snapshots = opts.Snapshots
	if opts.RestoreState != nil {
		if opts.Resume != "" {
			return nil, fmt.Errorf("both a checkpoint to resume (%s) and an in-memory snapshot to restore were given: pass one", opts.Resume)
		}
		if err := r.restoreState(opts.RestoreState); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// memory accounts for the resident training state.
func (r *runner) memory() Memory {
	var n, g int64
	for _, p := range r.params {
		n += int64(len(p.W))
		// Gradients as held between steps: GRASS keeps only the selected
		// rows (GSel) of its weights and forms G just at selection steps.
		g += int64(len(p.G) + len(p.GSel))
	}
	tokens := int64(r.ds.Train.Len() + r.ds.Val.Len())
	return Memory{
		Weights: 4 * n, Grads: 4 * g, Optimizer: r.opt.StateBytes(),
		Activations: r.activationBytes(),
		Data:        tokens * int64(data.TokenWidth(r.cfg.Vocab)),
	}
}

func (r *runner) tokensPerStep() int { return r.B * r.T * r.micro }

// trainStep runs forward/backward over this replica's microbatches
// (gradient accumulation), exchanges gradients with the other replicas,
// clips and applies one optimizer update. stop reports that some replica
// was asked to stop (always false for a single replica, which checks ctx
// itself).
func (r *runner) trainStep(ctx context.Context) (rep StepReport, stop bool, err error) {
	scale := float32(1 / float64(r.tokensPerStep()))
	var lossSum float64
	var count int
	dpRank, dpSize := 0, 1
	if r.dp != nil {
		dpRank, dpSize = r.dp.rank, r.dp.size
	}
	if r.pipe != nil {
		r.pipe.stage.ZeroGrad()
		if err := r.pipe.sample(r.sampler, int64(r.step), dpRank, dpSize); err != nil {
			panic(fmt.Sprintf("sample step %d: %v", r.step, err))
		}
		if lossSum, count, err = r.pipe.run(context.WithoutCancel(ctx)); err != nil {
			return rep, false, err
		}
	} else {
		r.model.ZeroGrad()
	}
	for mb := 0; r.pipe == nil && mb < r.micro; mb++ {
		if err := r.sampler.Batch(int64(r.step), dpRank, dpSize, mb, r.micro, r.B, r.inputs, r.targets); err != nil {
			// The sampler was built for these shapes: this is a programming error.
			panic(fmt.Sprintf("sample step %d microbatch %d: %v", r.step, mb, err))
		}
		l, n := r.model.ForwardBackward(r.inputs, r.targets, r.B, r.T, scale)
		lossSum += l
		count += n
	}
	var before comm.Stats
	cctx := ctx
	if r.dp != nil {
		// Collectives must not be abandoned by one replica alone: a stop
		// request travels in the step result instead.
		cctx = context.WithoutCancel(ctx)
		before = r.dp.tr.Stats()
		if err := r.dp.syncGrads(cctx, r.params); err != nil {
			return rep, false, err
		}
	}
	norm, err := r.clipGradNorm(cctx)
	if err != nil {
		return rep, false, err
	}
	r.waitSnapshot() // a background copy of the state must end before it changes
	lr := r.sched.LR(r.step)
	if err := r.stepOptimizer(cctx, lr); err != nil {
		return rep, false, err
	}
	r.step++
	rep = StepReport{Step: r.step, LR: lr, GradNorm: norm, OptimizerStateBytes: r.opt.StateBytes()}
	if r.dp != nil {
		d := r.dp.tr.Stats().Sub(before)
		rep.BytesSent, rep.BytesRecv = d.Sent.Total(), d.Recv.Total()
		rep.PayloadSent, rep.PayloadRecv = d.Sent.Payload, d.Recv.Payload
		tot, err := r.dp.combine(cctx, stepResult{LossSum: lossSum, Count: int64(count), Stop: ctx.Err() != nil})
		if err != nil {
			return rep, false, err
		}
		lossSum, count, stop = tot.LossSum, int(tot.Count), tot.Stop
	}
	rep.Loss = lossSum / float64(max(count, 1))
	return rep, stop, nil
}

// stepOptimizer applies the update. An optimizer that exchanges its own
// compressed state (DeMo) does so here, through the replicas' group.
func (r *runner) stepOptimizer(ctx context.Context, lr float64) error {
	if s, ok := r.opt.(optim.ContextStepper); ok {
		return s.StepContext(ctx, lr)
	}
	r.opt.Step(lr)
	r.device.sync() // the host reads parameters next (checkpoints, snapshots)
	return nil
}

// connect validates and records the data-parallel group.
func (r *runner) connect(job *spec.TrainingJob, opts Options) error {
	n := job.Spec.Parallel.Data
	if opts.Group == nil {
		if n > 1 || job.Spec.Parallel.Pipeline > 1 {
			return fmt.Errorf("spec.parallel asks for %d replicas × %d stages: this process is one rank and needs its peers (ternctl train starts them; the worker command takes --rank, --world and --peers)", n, job.Spec.Parallel.Pipeline)
		}
		return nil
	}
	p := job.Spec.Parallel.Pipeline
	topo, err := parallel.NewTopology(n, p)
	if err != nil {
		return fmt.Errorf("spec.parallel: %w", err)
	}
	tr := opts.Group.Transport()
	if tr.World() != topo.World() {
		return fmt.Errorf("spec.parallel asks for %d data-parallel replicas × %d pipeline stages = %d ranks, but the transport connects %d", n, p, topo.World(), tr.World())
	}
	dp, pp, err := topo.Coords(tr.Rank())
	if err != nil {
		return err
	}
	r.dp = &replicas{world: opts.Group, g: opts.Group, tr: tr, rank: dp, size: n, pp: pp, stages: p, exchange: job.Spec.Communication.Exchange}
	if p > 1 {
		// Group ids: 0 is the world; 1+dp a replica's pipeline; 1<<20+pp a
		// stage's replicas. Explicit, because with one replica the pipeline
		// has the world's members.
		if n > 1 {
			ranks, err := topo.DPGroup(pp)
			if err != nil {
				return err
			}
			if r.dp.g, err = comm.NewSubGroup(tr, ranks, comm.GroupOptions{ID: 1<<20 + uint32(pp)}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *runner) evalDue() bool {
	e := r.job.Spec.Eval
	return r.eval != nil && e.EverySteps > 0 && (r.step%e.EverySteps == 0 || r.step == r.steps)
}

// evaluate returns the mean loss over the first spec.eval.batches validation
// batches (the same windows every time, so evals are comparable).
// evaluate returns the mean loss over the first eval.batches validation
// batches. Replicas share the batches (batch i goes to replica i mod
// data) and gather the per-batch sums, which are added in batch order: the
// result is the same bits for any number of replicas.
func (r *runner) evaluate(ctx context.Context) (float64, error) {
	if r.eval == nil {
		return math.NaN(), nil
	}
	nb := r.job.Spec.Eval.Batches
	rank, size := 0, 1
	if r.dp != nil {
		rank, size = r.dp.rank, r.dp.size
	}
	// mine[2*j], mine[2*j+1]: loss sum and tokens of this replica's j-th batch.
	mine := make([]float64, 2*((nb+size-1)/size))
	for i, j := rank, 0; i < nb; i, j = i+size, j+1 {
		if err := r.eval.EvalBatch(i, r.B, r.inputs, r.targets); err != nil {
			panic(fmt.Sprintf("eval batch %d: %v", i, err))
		}
		var l float64
		var n int
		if r.pipe != nil {
			var err error
			if l, n, err = r.pipe.loss(context.WithoutCancel(ctx), r.inputs, r.targets); err != nil {
				return 0, fmt.Errorf("evaluation: %w", err)
			}
		} else {
			l, n = r.model.Loss(r.inputs, r.targets, r.B, r.T)
		}
		mine[2*j], mine[2*j+1] = l, float64(n)
	}
	all := [][]float64{mine}
	stages := 1
	if r.dp != nil {
		var err error
		if all, err = r.dp.gatherFloat64s(context.WithoutCancel(ctx), mine); err != nil {
			return 0, fmt.Errorf("evaluation exchange: %w", err)
		}
		stages = r.dp.stages
	}
	var lossSum, count float64
	for i := 0; i < nb; i++ {
		// Batch i was evaluated by replica i mod size; its loss stage
		// (world rank replica·stages + stages−1) reports it.
		src := all[(i%size)*stages+stages-1]
		lossSum += src[2*(i/size)]
		count += src[2*(i/size)+1]
	}
	return lossSum / max(count, 1), nil
}

func (r *runner) checkpointDue() bool {
	c := r.job.Spec.Checkpoint
	if r.ckptDir == "" {
		return false
	}
	return (c.EverySteps > 0 && r.step%c.EverySteps == 0) || r.step == r.steps
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// PeakRSS returns the process's peak resident set size in bytes (VmHWM), or 0
// where /proc is not available.
func PeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if n, _ := fmt.Sscanf(line, "VmHWM: %d kB", &kb); n == 1 {
			return kb * 1024
		}
	}
	return 0
}

// inlineSource turns the inline corpus of a kind-text spec into a one-file
// dir source: the text is written once, content-addressed, into the cache
// directory, so the usual tokenise-and-cache path (and its fingerprint) apply.
func inlineSource(src data.Source, text string) (data.Source, error) {
	src = src.WithDefaults()
	sum := sha256.Sum256([]byte(text))
	path := filepath.Join(src.CacheDir, fmt.Sprintf("inline-%x.txt", sum[:12]))
	if _, err := os.Stat(path); err != nil {
		if err := os.MkdirAll(src.CacheDir, 0o755); err != nil {
			return src, fmt.Errorf("spec.data.text: %w", err)
		}
		if err := atomicfile.Write(path, 0o644, func(w io.Writer) error {
			_, err := io.WriteString(w, text)
			return err
		}); err != nil {
			return src, fmt.Errorf("spec.data.text: %w", err)
		}
	}
	src.Kind = data.KindDir
	src.Path = path
	return src, nil
}

// clipGradNorm clips the gradients to spec.optimizer.clipNorm by their
// global norm, which under pipeline parallelism sums every stage's squares
// (gathered over the world in rank order, so every rank computes the same
// coefficient).
func (r *runner) clipGradNorm(ctx context.Context) (float64, error) {
	maxNorm := r.job.Spec.Optimizer.ClipNorm
	if r.pipe == nil {
		return optim.ClipGradNorm(r.params, maxNorm), nil
	}
	local := optim.GradNorm(r.params)
	all, err := r.dp.gatherFloat64s(ctx, []float64{local * local})
	if err != nil {
		return 0, fmt.Errorf("gradient norm exchange: %w", err)
	}
	// Sum this replica's stages (world ranks rank·stages + pp).
	var sq float64
	for pp := 0; pp < r.dp.stages; pp++ {
		sq += all[r.dp.rank*r.dp.stages+pp][0]
	}
	norm := math.Sqrt(sq)
	optim.ClipToNorm(r.params, norm, maxNorm)
	return norm, nil
}

// activationBytes is the activation memory of this rank's model or stage.
func (r *runner) activationBytes() int64 {
	if r.pipe != nil {
		return r.pipe.activationBytes()
	}
	return r.model.ActivationBytes(r.B, r.T)
}
