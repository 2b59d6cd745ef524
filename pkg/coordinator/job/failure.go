package job

import (
	"fmt"
	"slices"
)

func (j *Job) onRankFailed(ev RankFailed) ([]Action, error) {
	if err := j.checkAttempt(ev.Attempt); err != nil {
		return nil, err
	}
	if ev.Rank < 0 || ev.Rank >= j.world() {
		return nil, fmt.Errorf("%w: rank %d is outside 0..%d", ErrInvalidEvent, ev.Rank, j.world()-1)
	}
	worker := j.Assignment[ev.Rank].Worker
	if ev.Worker != "" && ev.Worker != worker {
		return nil, fmt.Errorf("%w: rank %d of attempt %d runs on worker %s, not %s", ErrInvalidEvent, ev.Rank, j.Attempt, worker, ev.Worker)
	}
	msg := fmt.Sprintf("rank %d on worker %s failed", ev.Rank, worker)
	if ev.Reason != "" {
		msg += ": " + ev.Reason
	}
	if ev.Exited {
		msg += fmt.Sprintf(" (exit status %d)", ev.ExitStatus)
	}
	return j.failRanks([]int{ev.Rank}, worker, "RankFailed", msg), nil
}

func (j *Job) onWorkerLost(ev WorkerLost) ([]Action, error) {
	if ev.Worker == "" {
		return nil, fmt.Errorf("%w: no worker named", ErrInvalidEvent)
	}
	if !j.Phase.live() {
		return nil, nil // no ranks run anywhere
	}
	var ranks []int
	for _, p := range j.Assignment {
		if p.Worker == ev.Worker {
			ranks = append(ranks, p.Rank)
		}
	}
	if len(ranks) == 0 {
		return nil, nil // not one of ours
	}
	msg := fmt.Sprintf("worker %s was lost", ev.Worker)
	if ev.Reason != "" {
		msg += " (" + ev.Reason + ")"
	}
	msg += " with " + rankList(ranks)
	return j.failRanks(ranks, ev.Worker, "WorkerLost", msg), nil
}

// failRanks handles ranks of the current attempt that are gone.
//
// A failure while replacements are still being placed joins that recovery:
// no attempt has run in between, so it is the same incident and costs no
// further restart. Any other failure counts one restart and starts a
// recovery, or fails the job once restartPolicy.maxRestarts is used up.
func (j *Job) failRanks(ranks []int, worker, code, msg string) []Action {
	if j.Phase == Recovering && !j.Recovery.Launched {
		merged := mergeSorted(j.Recovery.Ranks, ranks)
		if slices.Equal(merged, j.Recovery.Ranks) {
			return nil // already being replaced
		}
		j.Recovery.Ranks = merged
		j.Recovery.Avoid = mergeSorted(j.Recovery.Avoid, []string{worker})
		j.LastFailure = &Failure{Attempt: j.Attempt, Ranks: slices.Clone(ranks), Worker: worker, Message: msg}
		j.Reason = fmt.Sprintf("%s; replacing %s in the same recovery %s, all resuming %s", msg, rankList(merged), j.restartNote(), from(j.CommittedStep))
		return []Action{j.requestReplacement(), Emit{Warning, code, j.Reason}}
	}
	j.LastFailure = &Failure{Attempt: j.Attempt, Ranks: slices.Clone(ranks), Worker: worker, Message: msg}
	if j.Restarts >= j.Spec.MaxRestarts {
		j.to(Failed, msg+"; "+j.exhausted())
		return []Action{StopRanks{j.Attempt}, Emit{Warning, "Failed", j.Reason}}
	}
	j.Restarts++
	j.to(Recovering, fmt.Sprintf("%s; replacing %s, all ranks resuming %s %s", msg, rankList(ranks), from(j.CommittedStep), j.restartNote()))
	j.Recovery = &Recovery{Ranks: slices.Sorted(slices.Values(ranks)), Avoid: []string{worker}}
	acts := []Action{
		AbortAttempt{j.Attempt},
		j.requestReplacement(),
		StartTimer{TimerRecovery, j.Attempt},
	}
	if j.canShrink() {
		acts = append(acts, StartTimer{TimerShrink, j.Attempt})
	}
	return append(acts, Emit{Warning, code, j.Reason})
}

func (j *Job) onTimerFired(ev TimerFired) ([]Action, error) {
	if ev.Timer != TimerStart && ev.Timer != TimerRecovery && ev.Timer != TimerShrink {
		return nil, fmt.Errorf("%w: unknown timer %q (known: %s, %s, %s)", ErrInvalidEvent, ev.Timer, TimerStart, TimerRecovery, TimerShrink)
	}
	if err := j.checkAttempt(ev.Attempt); err != nil {
		return nil, err
	}
	switch {
	case ev.Timer == TimerShrink && !j.Spec.Shrink:
		return nil, fmt.Errorf("%w: the job does not shrink (restartPolicy.shrink is off), so it arms no shrink timer", ErrInvalidEvent)
	case ev.Timer == TimerShrink && j.Phase == Recovering && !j.Recovery.Launched:
		return j.shrink(), nil
	case ev.Timer == TimerStart && j.Phase == Scheduling:
		msg := fmt.Sprintf("the ranks of attempt %d did not all start before the start deadline", j.Attempt)
		return j.restartWhole(msg, "StartTimeout", true), nil
	case ev.Timer == TimerRecovery && j.Phase == Recovering && !j.Recovery.Launched:
		// The failure was counted when it happened; giving up on in-place
		// replacement is the same restart taking its slower path.
		msg := fmt.Sprintf("no slots to replace %s were found before the recovery deadline", rankList(j.Recovery.Ranks))
		return j.restartWhole(msg, "RecoveryTimeout", false), nil
	case ev.Timer == TimerRecovery && j.Phase == Recovering:
		msg := fmt.Sprintf("attempt %d did not finish restoring step %d before the recovery deadline", j.Attempt, j.CommittedStep)
		return j.restartWhole(msg, "RecoveryTimeout", true), nil
	}
	return nil, fmt.Errorf("%w: the %s timer of attempt %d outlived its purpose (the job is %s)", ErrStale, ev.Timer, ev.Attempt, j.Phase)
}

// restartWhole stops every rank of the current attempt and places the
// whole job again: the slow path when starting or recovering in place did
// not work out. counts says whether this is a new failure that uses a
// restart (and may fail the job).
func (j *Job) restartWhole(msg, code string, counts bool) []Action {
	j.LastFailure = &Failure{Attempt: j.Attempt, Message: msg}
	if counts {
		if j.Restarts >= j.Spec.MaxRestarts {
			j.to(Failed, msg+"; "+j.exhausted())
			return []Action{StopRanks{j.Attempt}, Emit{Warning, "Failed", j.Reason}}
		}
		j.Restarts++
	}
	j.to(Pending, fmt.Sprintf("%s; stopped all ranks, waiting for a placement of %s to resume %s %s",
		msg, j.shape(), from(j.CommittedStep), j.restartNote()))
	return []Action{StopRanks{j.Attempt}, j.requestPlacement(), Emit{Warning, code, j.Reason}}
}

// mergeSorted returns the sorted union of a (sorted) and b.
func mergeSorted[T int | string](a, b []T) []T {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}
