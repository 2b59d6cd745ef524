package parallel

import "fmt"

// Plan says which schedule to build.
type Plan struct {
	PP int // pipeline stages, ≥ 1
	DP int // data-parallel replicas, ≥ 1; every replica runs the same schedule
	M  int // microbatches per step, ≥ 1 (fewer than PP is allowed: more bubble)
	// Schedule is "1f1b" (the default when empty) or "gpipe".
	Schedule string
	// Vocab is where the vocabulary layers go: "parallel" (the default when
	// empty), "naive", or "none" (blocks only, for simulation).
	Vocab VocabMode
	// Algorithm picks the vocabulary-parallel output layer: 2 (the default
	// when 0; one barrier, C1) or 1 (two barriers, C1 and C2).
	Algorithm int
	// Costs place the vocabulary-parallel passes in time; nil means
	// UnitCosts. Only the relative costs of F and B matter much.
	Costs Costs
	// BlockingCollectives shapes a vocabulary-parallel 1F1B schedule for
	// a runtime that waits inside each collective. By default the
	// schedule is shaped for a runtime that runs the vocabulary
	// collectives on a lane of their own (SimOptions.AsyncCollectives):
	// every stage runs one more warmup forward per barrier between the
	// loss stage's F(i) and B(i) (Algorithm 2: C1; Algorithm 1: C1 and
	// C2), so the loss stage computes while they complete and the step
	// keeps the plain 1F1B bubble; stage 0 then holds p+1 (Algorithm 2)
	// or p+2 (Algorithm 1) microbatches. A runtime that blocks cannot
	// hide a barrier behind compute; for it, the schedule adds no warmup
	// (stage 0 holds p) and groups each microbatch's output-layer ops so
	// the stages meet once per microbatch. Either schedule runs correctly
	// under either runtime; only the time differs.
	BlockingCollectives bool

	// extraWarmup overrides the default, for experiments.
	extraWarmup *int
}

// normalize fills defaults and checks the plan.
func (p Plan) normalize() (Plan, error) {
	if p.Schedule == "" {
		p.Schedule = Schedule1F1B
	}
	if p.Vocab == "" {
		p.Vocab = VocabParallel
	}
	if p.DP == 0 {
		p.DP = 1
	}
	if p.Costs == nil {
		p.Costs = UnitCosts()
	}
	switch {
	case p.PP < 1:
		return p, fmt.Errorf("plan: pipeline stages must be at least 1, got %d", p.PP)
	case p.DP < 1:
		return p, fmt.Errorf("plan: data-parallel replicas must be at least 1, got %d", p.DP)
	case p.M < 1:
		return p, fmt.Errorf("plan: microbatches must be at least 1, got %d", p.M)
	case p.Schedule != Schedule1F1B && p.Schedule != ScheduleGPipe:
		return p, fmt.Errorf("plan: schedule %q not allowed (allowed: %s, %s)", p.Schedule, Schedule1F1B, ScheduleGPipe)
	}
	switch p.Vocab {
	case VocabParallel:
		if p.Algorithm == 0 {
			p.Algorithm = 2
		}
		if p.Algorithm != 1 && p.Algorithm != 2 {
			return p, fmt.Errorf("plan: vocabulary-parallel algorithm %d not allowed (allowed: 1, 2)", p.Algorithm)
		}
	case VocabNaive, VocabNone:
		if p.Algorithm != 0 {
			return p, fmt.Errorf("plan: algorithm %d applies only to vocab=%s, not %s", p.Algorithm, VocabParallel, p.Vocab)
		}
	default:
		return p, fmt.Errorf("plan: vocabulary mode %q not allowed (allowed: %s, %s, %s)", p.Vocab, VocabParallel, VocabNaive, VocabNone)
	}
	return p, nil
}

// ExtraWarmup is how many more warmup forwards than plain 1F1B each stage
// runs under p: under 1F1B, stage r holds at most min(PP−r+ExtraWarmup, M)
// microbatches' activations. It is 0 for an invalid plan.
func (p Plan) ExtraWarmup() int {
	if p.extraWarmup != nil {
		return *p.extraWarmup
	}
	p, err := p.normalize()
	if err != nil {
		return 0
	}
	if p.Vocab == VocabParallel && p.Schedule == Schedule1F1B && !p.BlockingCollectives {
		return barriers(p.Algorithm)
	}
	return 0
}

// barriers is how many collectives stand between the loss stage's F(i) and
// B(i) under each algorithm: C1 for Algorithm 2; C1 and C2 for Algorithm 1.
// Each needs one more forward in flight to hide it behind, which is the
// reference's warmup of p−r forwards (p−r+1 with --disable-backward-fusion)
// and the p+1 and p+2 microbatches stage 0 holds.
func barriers(alg int) int {
	if alg == 1 {
		return 2
	}
	return 1
}

// Build makes the schedule of p: each stage's ops in execution order, with
// the vocabulary passes, sends, receives and collectives in place, and
// checked by Validate.
func Build(p Plan) (*Schedule, error) {
	p, err := p.normalize()
	if err != nil {
		return nil, err
	}
	base, err := generate(p.Schedule, p.PP, p.M, p.ExtraWarmup())
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	s := &Schedule{P: p.PP, M: p.M, Vocab: p.Vocab, LossStage: p.PP - 1}
	switch p.Vocab {
	case VocabParallel:
		s.Algorithm = p.Algorithm
		if base, err = insertVocabParallel(base, p.M, p.Algorithm, p.Costs, p.BlockingCollectives); err != nil {
			return nil, fmt.Errorf("plan: %w", err)
		}
	case VocabNaive:
		base = insertNaive(base)
	}
	s.Stages = addP2P(base)
	if err := Validate(s); err != nil {
		return nil, fmt.Errorf("plan %s/%s: built an invalid schedule: %w", p.Schedule, p.Vocab, err)
	}
	return s, nil
}
