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

	"github.com/ternml/tern/pkg/data"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/spec"
)

// Options are the run-time choices that are not part of the job spec.
type Options struct {
	// CheckpointDir overrides spec.checkpoint.dir when non-empty.
	CheckpointDir string
	// Resume is a checkpoint root (latest complete step) or one step directory.
	Resume string
	// Observer receives progress; nil means none.
	Observer Observer
	// Progress receives data-loading progress bars; nil means none.
	Progress io.Writer
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
		if ctx.Err() != nil {
			sum.Stopped = true
			break
		}
		t0 := time.Now()
		rep := r.trainStep()
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
			ev := r.evaluate()
			rep.EvalLoss = &ev
			sum.FinalEvalLoss = ev
		}
		obs.Step(rep)
		if r.checkpointDue() {
			path, err := r.checkpoint()
			if err != nil {
				return nil, err
			}
			sum.Checkpoint = path
		}
	}
	if sum.Stopped && r.ckptDir != "" && r.lastCkptStep != r.step && r.step > 0 {
		path, err := r.checkpoint()
		if err != nil {
			return nil, fmt.Errorf("checkpoint on interrupt: %w", err)
		}
		sum.Checkpoint = path
		obs.Log("interrupted: wrote checkpoint " + path)
	}
	if !sum.Stopped && math.IsNaN(sum.FinalEvalLoss) && r.eval != nil {
		sum.FinalEvalLoss = r.evaluate()
	}
	sum.Steps = r.step
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
}

func newRunner(ctx context.Context, job *spec.TrainingJob, opts Options) (*runner, error) {
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
	if r.model, err = model.New(cfg, s.Seed, s.Model.Recompute); err != nil {
		return nil, err
	}
	o := s.Optimizer
	if r.opt, err = newOptimizer(job, cfg, r.model.Params()); err != nil {
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
	return r, nil
}

// memory accounts for the resident training state.
func (r *runner) memory() Memory {
	var n, g int64
	for _, p := range r.model.Params() {
		n += int64(len(p.W))
		// Gradients as held between steps: GRASS keeps only the selected
		// rows (GSel) of its weights and forms G just at selection steps.
		g += int64(len(p.G) + len(p.GSel))
	}
	tokens := int64(r.ds.Train.Len() + r.ds.Val.Len())
	return Memory{
		Weights: 4 * n, Grads: 4 * g, Optimizer: r.opt.StateBytes(),
		Activations: r.model.ActivationBytes(r.B, r.T),
		Data:        tokens * int64(data.TokenWidth(r.cfg.Vocab)),
	}
}

func (r *runner) tokensPerStep() int { return r.B * r.T * r.micro }

// trainStep runs forward/backward over every microbatch (gradient
// accumulation), clips and applies one optimizer update.
func (r *runner) trainStep() StepReport {
	r.model.ZeroGrad()
	scale := float32(1 / float64(r.tokensPerStep()))
	var lossSum float64
	var count int
	for mb := 0; mb < r.micro; mb++ {
		if err := r.sampler.Batch(int64(r.step), 0, 1, mb, r.micro, r.B, r.inputs, r.targets); err != nil {
			// The sampler was built for these shapes: this is a programming error.
			panic(fmt.Sprintf("sample step %d microbatch %d: %v", r.step, mb, err))
		}
		l, n := r.model.ForwardBackward(r.inputs, r.targets, r.B, r.T, scale)
		lossSum += l
		count += n
	}
	norm := optim.ClipGradNorm(r.model.Params(), r.job.Spec.Optimizer.ClipNorm)
	lr := r.sched.LR(r.step)
	r.opt.Step(lr)
	r.step++
	return StepReport{Step: r.step, Loss: lossSum / float64(max(count, 1)), LR: lr, GradNorm: norm, OptimizerStateBytes: r.opt.StateBytes()}
}

func (r *runner) evalDue() bool {
	e := r.job.Spec.Eval
	return r.eval != nil && e.EverySteps > 0 && (r.step%e.EverySteps == 0 || r.step == r.steps)
}

// evaluate returns the mean loss over the first spec.eval.batches validation
// batches (the same windows every time, so evals are comparable).
func (r *runner) evaluate() float64 {
	if r.eval == nil {
		return math.NaN()
	}
	var lossSum float64
	var count int
	for i := 0; i < r.job.Spec.Eval.Batches; i++ {
		if err := r.eval.EvalBatch(i, r.B, r.inputs, r.targets); err != nil {
			panic(fmt.Sprintf("eval batch %d: %v", i, err))
		}
		l, n := r.model.Loss(r.inputs, r.targets, r.B, r.T)
		lossSum += l
		count += n
	}
	return lossSum / float64(max(count, 1))
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
