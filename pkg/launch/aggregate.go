package launch

import (
	"fmt"
	"math"
	"sort"

	"github.com/ternml/tern/pkg/train"
)

// aggregator merges the ranks' reports into what one process would have
// reported for the whole job.
type aggregator struct {
	n         int
	stages    int
	obs       train.Observer
	started   int
	pending   map[int][]train.StepReport // step -> reports so far, by arrival
	sums      []*train.Summary
	summaries int
	stepMS    []float64
}

// newAggregator merges n ranks' reports; stages is the pipeline size: the
// stages of a replica all report that replica's tokens.
func newAggregator(n, stages int, obs train.Observer) *aggregator {
	return &aggregator{n: n, stages: max(stages, 1), obs: obs, pending: map[int][]train.StepReport{}, sums: make([]*train.Summary, n)}
}

func (a *aggregator) add(rank int, m fromChild) error {
	switch {
	case m.Started != nil:
		a.started++
		if rank == 0 {
			info := *m.Started
			info.TokensPerStep *= a.n / a.stages // the global batch: every replica's
			a.obs.Started(info)
		}
	case m.Log != "":
		// The replicas run in lockstep and log the same things.
		if rank == 0 {
			a.obs.Log(m.Log)
		}
	case m.Step != nil:
		r := m.Step.report()
		s := r.Step
		a.pending[s] = append(a.pending[s], r)
		if len(a.pending[s]) == a.n {
			a.emit(s)
		}
	case m.Summary != nil:
		if a.sums[rank] != nil {
			return fmt.Errorf("rank %d sent two summaries", rank)
		}
		a.sums[rank] = m.Summary.summary()
		a.summaries++
	}
	return nil
}

// emit reports step s once every rank has: the loss is the global batch's
// (every rank computed the same value), the time is the slowest rank's, and
// traffic and memory are per-worker maxima.
func (a *aggregator) emit(s int) {
	reps := a.pending[s]
	delete(a.pending, s)
	out := reps[0]
	var eta float64
	for _, r := range reps {
		out.StepMS = max(out.StepMS, r.StepMS)
		out.BytesSent = max(out.BytesSent, r.BytesSent)
		out.BytesRecv = max(out.BytesRecv, r.BytesRecv)
		out.PayloadSent = max(out.PayloadSent, r.PayloadSent)
		out.PayloadRecv = max(out.PayloadRecv, r.PayloadRecv)
		out.OptimizerStateBytes = max(out.OptimizerStateBytes, r.OptimizerStateBytes)
		if r.EvalLoss != nil {
			out.EvalLoss = r.EvalLoss
		}
		eta = max(eta, r.ETASeconds)
	}
	if out.StepMS > 0 {
		// Every rank's TokensPerS is its own share over its own time.
		out.TokensPerS = 0
		for _, r := range reps {
			out.TokensPerS += r.TokensPerS * r.StepMS / out.StepMS
		}
		out.TokensPerS /= float64(a.stages)
	}
	out.ETASeconds = eta
	a.stepMS = append(a.stepMS, out.StepMS)
	a.obs.Step(out)
}

// summary combines the ranks' summaries.
func (a *aggregator) summary() *train.Summary {
	sum := *a.sums[0]
	sum.TokensPerS = 0
	for _, s := range a.sums {
		sum.TokensPerS += s.TokensPerS / float64(a.stages)
		sum.PeakRSSBytes = max(sum.PeakRSSBytes, s.PeakRSSBytes)
		sum.OptimizerStateBytes = max(sum.OptimizerStateBytes, s.OptimizerStateBytes)
		sum.BytesSentPerStep = max(sum.BytesSentPerStep, s.BytesSentPerStep)
		sum.BytesRecvPerStep = max(sum.BytesRecvPerStep, s.BytesRecvPerStep)
		sum.Stopped = sum.Stopped || s.Stopped
	}
	if len(a.stepMS) > 0 {
		ms := append([]float64(nil), a.stepMS...)
		sort.Float64s(ms)
		sum.StepMSMedian = ms[len(ms)/2]
		if len(ms)%2 == 0 {
			sum.StepMSMedian = (ms[len(ms)/2-1] + ms[len(ms)/2]) / 2
		}
	}
	if sum.TokensPerS > 0 && sum.StepMSMedian > 0 && !math.IsNaN(sum.ModelGFLOPS) && a.sums[0].TokensPerS > 0 {
		// Rank 0's figure is its replica's tokens over the whole model.
		sum.ModelGFLOPS *= sum.TokensPerS / a.sums[0].TokensPerS
	}
	return &sum
}
