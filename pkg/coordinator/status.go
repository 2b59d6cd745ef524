package coordinator

import (
	"slices"

	"github.com/ternml/tern/pkg/coordinator/job"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

var phases = map[job.Phase]ternv1.JobPhase{
	job.Pending:    ternv1.JobPhase_JOB_PHASE_PENDING,
	job.Scheduling: ternv1.JobPhase_JOB_PHASE_SCHEDULING,
	job.Running:    ternv1.JobPhase_JOB_PHASE_RUNNING,
	job.Recovering: ternv1.JobPhase_JOB_PHASE_RECOVERING,
	job.Paused:     ternv1.JobPhase_JOB_PHASE_PAUSED,
	job.Succeeded:  ternv1.JobPhase_JOB_PHASE_SUCCEEDED,
	job.Failed:     ternv1.JobPhase_JOB_PHASE_FAILED,
	job.Cancelled:  ternv1.JobPhase_JOB_PHASE_CANCELLED,
}

// Terminal reports whether a job status is final: WatchJob ends after
// sending one.
func Terminal(p ternv1.JobPhase) bool {
	return p == ternv1.JobPhase_JOB_PHASE_SUCCEEDED || p == ternv1.JobPhase_JOB_PHASE_FAILED || p == ternv1.JobPhase_JOB_PHASE_CANCELLED
}

// status builds a job's status message; it is published and never
// changed afterwards.
func (l *loop) status(e *entry) *ternv1.Job {
	j := e.j
	out := &ternv1.Job{
		Name:             e.name,
		Phase:            phases[j.Phase],
		Reason:           j.Reason,
		DataParallel:     int32(j.Spec.DP),
		PipelineParallel: int32(j.Spec.PP),
		Steps:            int64(e.spec.Spec.Steps),
		CommittedStep:    j.CommittedStep,
		Attempt:          int32(j.Attempt),
		Restarts:         int32(j.Restarts),
		MaxRestarts:      int32(j.Spec.MaxRestarts),
		SpecJson:         e.specJSON,
		Version:          j.Version,
	}
	metaStatus(out, e)
	run := e.run
	if run == nil || run.n != j.Attempt {
		return out
	}
	for i, r := range run.ranks {
		p := run.assignment[i]
		out.Ranks = append(out.Ranks, &ternv1.RankStatus{
			Rank: int32(i), Worker: p.Worker, Slot: int32(p.Slot), Address: r.addr, Phase: r.phase, Step: r.step, Error: r.err,
		})
		// Every rank reports the global batch's loss; throughput adds up
		// over the replicas, each counted at its first stage.
		if r.last != nil && i%j.Spec.PP == 0 {
			out.TokensPerSecond += r.last.TokensPerSecond
		}
	}
	out.Summary = run.summary
	out.StepMs = median(run.stepMS)
	switch {
	case run.ranks[0].last != nil:
		out.LastLoss = run.ranks[0].last.Loss
	case run.summary != nil:
		out.LastLoss = run.summary.FinalLoss // restored: the ranks' reports are gone
	}
	return out
}

// median of xs (0 for none); xs is not modified.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
