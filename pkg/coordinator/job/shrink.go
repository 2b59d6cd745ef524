package job

import (
	"fmt"
	"slices"
	"strings"

	"github.com/ternml/tern/pkg/coordinator/sched"
)

// Shrinking and growing (restartPolicy.shrink).
//
// A job with Spec.Shrink whose failed ranks are not replaced before the
// shrink timer fires drops every replica that lost a rank (all its
// pipeline stages) and continues with the surviving replicas, renumbered
// in order, from the committed step: a recovery attempt whose Sources
// map each new rank to the rank whose state it restores (its own, since
// survivors stay where they are). The global batch stays as the spec
// says, DP × MicroBatches microbatches per step: each remaining replica
// trains more microbatches, so the learning rate and its schedule keep
// their meaning and every step sees the same samples whatever the layout
// (the sampler numbers samples by step). A job shrinks only to a DP that
// divides the global microbatch count, dropping healthy replicas beyond
// the largest such DP. A run is reproducible given the same sequence of
// layouts; across layouts steps agree up to float32 summation order.
//
// While it runs shrunk, every capacity change asks the scheduler for the
// missing replicas (RequestGrowth). Once they are placed, the running
// ranks abort their current step and every rank of the spec's full shape
// restores the committed step as a new attempt: the running ranks their
// own state, each new rank that of the same stage of replica 0 (replicas
// hold identical weights; per-replica optimizer state is copied from
// replica 0). A shrink or a growth counts no restart: the failure before
// a shrink already did. A whole relaunch (after a recovery deadline, or a
// resume) places the spec's full shape, as it always does.
//
// The coordinator launches an attempt on another layout with the spec
// rewritten to it (parallel.data, and batch.microBatches so the global
// batch stays) and, since in-memory snapshots restore only on the layout
// that took them, every rank resumes from the durable checkpoint, which
// train reshards to the new layout; Sources says which rank's state each
// new rank continues for a restore from memory.

// canShrink reports whether a failure now may end in a shrink.
func (j *Job) canShrink() bool { return j.Spec.Shrink && j.Spec.shrinkTo(j.dp()-1) > 0 }

// shrink drops the replicas that lost ranks in the recovery being placed,
// if enough replicas are left; otherwise the recovery keeps waiting for
// replacements until its deadline.
func (j *Job) shrink() []Action {
	lost := map[int]bool{}
	for _, r := range j.Recovery.Ranks {
		lost[r/j.Spec.PP] = true
	}
	keep := j.Spec.shrinkTo(j.dp() - len(lost))
	if keep == 0 {
		return nil // too few replicas left: wait for replacements
	}
	next, sources, err := sched.Shrink(j.layout(), j.Assignment, j.Recovery.Ranks, keep)
	if err != nil {
		return nil
	}
	was, now := j.dp(), len(next)/j.Spec.PP
	cause := "ranks " + ints(j.Recovery.Ranks) + " were lost"
	if j.LastFailure != nil {
		cause = j.LastFailure.Message
	}
	avoid := j.Recovery.Avoid
	j.Attempt++
	j.Assignment = next
	j.DP = now
	j.Recovery = &Recovery{Avoid: avoid, Launched: true, Sources: sources}
	j.Reason = fmt.Sprintf("shrunk from DP %d to %d (%s; no replacement before the shrink deadline); attempt %d restoring %s %s",
		was, now, cause, j.Attempt, j.allRanks(), from(j.CommittedStep))
	return []Action{j.startRecovery(), StartTimer{TimerRecovery, j.Attempt}, Emit{Warning, "Shrunk", j.Reason}}
}

// grow starts the attempt that brings a shrunk job back to the spec's
// shape on a, the scheduler's answer to RequestGrowth.
func (j *Job) grow(a sched.Assignment) ([]Action, error) {
	n := len(j.Assignment)
	for r, p := range j.Assignment {
		if a[r] != p {
			return nil, fmt.Errorf("%w: growth moves running rank %d from %s slot %d to %s slot %d",
				ErrInvalidEvent, r, p.Worker, p.Slot, a[r].Worker, a[r].Slot)
		}
	}
	sources := make([]int, len(a))
	var added []int
	for r := range sources {
		sources[r] = r
		if r >= n {
			sources[r] = r % j.Spec.PP // stage r%PP of replica 0
			added = append(added, r)
		}
	}
	var to []string
	for _, r := range added {
		to = append(to, a[r].Worker)
	}
	slices.Sort(to)
	prev := j.Attempt
	j.Attempt++
	j.Assignment = slices.Clone(a)
	j.DP = 0
	j.to(Recovering, fmt.Sprintf("grew back to DP %d: attempt %d restoring %s %s; %s added on %s",
		j.Spec.DP, j.Attempt, j.allRanks(), from(j.CommittedStep), rankList(added), strings.Join(slices.Compact(to), ", ")))
	j.Recovery = &Recovery{Ranks: added, Launched: true, Sources: sources}
	return []Action{AbortAttempt{prev}, j.startRecovery(), StartTimer{TimerRecovery, j.Attempt}, Emit{Normal, "Grown", j.Reason}}, nil
}

func (j *Job) requestGrowth() Action {
	return RequestGrowth{Attempt: j.Attempt + 1, Layout: j.Spec.Layout()}
}

// Layout is the latest attempt's shape: the spec's, or smaller while the
// job runs shrunk.
func (j *Job) Layout() sched.Layout { return j.layout() }
