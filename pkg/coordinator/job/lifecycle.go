package job

import (
	"fmt"
	"slices"
	"strings"
)

// checkAttempt accepts a report about attempt a only if a is the current,
// live attempt.
func (j *Job) checkAttempt(a int) error {
	switch {
	case !j.Phase.live():
		return fmt.Errorf("%w: attempt %d is not running (the job is %s)", ErrStale, a, j.Phase)
	case a < j.Attempt:
		return fmt.Errorf("%w: attempt %d was replaced by attempt %d", ErrStale, a, j.Attempt)
	case a > j.Attempt:
		return fmt.Errorf("%w: attempt %d has not been launched; the latest is %d", ErrInvalidEvent, a, j.Attempt)
	}
	return nil
}

// awaitingPlacement reports whether a placement answer is expected.
func (j *Job) awaitingPlacement() bool {
	return j.Phase == Pending || (j.Phase == Recovering && !j.Recovery.Launched) || j.Growing
}

// checkPlacementAnswer accepts an answer only for the outstanding request.
func (j *Job) checkPlacementAnswer(a int) error {
	switch {
	case !j.awaitingPlacement():
		return fmt.Errorf("%w: no placement is outstanding (the job is %s)", ErrStale, j.Phase)
	case a <= j.Attempt:
		return fmt.Errorf("%w: placement for attempt %d, which was already launched", ErrStale, a)
	case a != j.Attempt+1:
		return fmt.Errorf("%w: placement for attempt %d, but the one waiting is attempt %d", ErrInvalidEvent, a, j.Attempt+1)
	}
	return nil
}

func (j *Job) onCapacityChanged() ([]Action, error) {
	if j.Phase == Running && j.DP > 0 {
		// Shrunk: ask for the missing replicas (again; a repeated request
		// is harmless, the answer for the attempt counts once).
		j.Growing = true
		return []Action{j.requestGrowth()}, nil
	}
	if j.awaitingPlacement() {
		if j.Phase == Pending {
			return []Action{j.requestPlacement()}, nil
		}
		return []Action{j.requestReplacement()}, nil
	}
	return nil, nil
}

func (j *Job) onPlaced(ev Placed) ([]Action, error) {
	if err := j.checkPlacementAnswer(ev.Attempt); err != nil {
		return nil, err
	}
	// A whole placement and a growth place the spec's shape; a
	// replacement keeps the current one.
	world := j.Spec.World()
	if j.Phase == Recovering {
		world = j.world()
	}
	if err := ev.Assignment.Validate(world); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidEvent, err)
	}
	if j.Growing {
		return j.grow(ev.Assignment)
	}
	if j.Phase == Pending {
		// A whole placement is always of the spec's shape: a shrunk job
		// placed afresh runs at its own size again.
		j.DP = 0
		j.Attempt++
		j.Assignment = slices.Clone(ev.Assignment)
		j.to(Scheduling, fmt.Sprintf("starting attempt %d on %s, training %s", j.Attempt, onWorkers(j.Assignment), from(j.CommittedStep)))
		return []Action{j.launch(), StartTimer{TimerStart, j.Attempt}, Emit{Normal, "Scheduled", j.Reason}}, nil
	}
	// A replacement: the survivors must stay where they are, since they
	// hold state and are about to be told to restore in place.
	for r, p := range ev.Assignment {
		if !slices.Contains(j.Recovery.Ranks, r) && p != j.Assignment[r] {
			return nil, fmt.Errorf("%w: placement moves surviving rank %d from %s slot %d to %s slot %d",
				ErrInvalidEvent, r, j.Assignment[r].Worker, j.Assignment[r].Slot, p.Worker, p.Slot)
		}
	}
	var to []string
	for _, r := range j.Recovery.Ranks {
		to = append(to, ev.Assignment[r].Worker)
	}
	slices.Sort(to)
	j.Attempt++
	j.Assignment = slices.Clone(ev.Assignment)
	j.Recovery.Launched = true
	j.Reason = fmt.Sprintf("attempt %d restoring every rank %s; %s replaced on %s",
		j.Attempt, from(j.CommittedStep), rankList(j.Recovery.Ranks), strings.Join(slices.Compact(to), ", "))
	return []Action{j.startRecovery(), StartTimer{TimerRecovery, j.Attempt}, Emit{Normal, "RecoveryStarted", j.Reason}}, nil
}

func (j *Job) onUnplaceable(ev Unplaceable) ([]Action, error) {
	if err := j.checkPlacementAnswer(ev.Attempt); err != nil {
		return nil, err
	}
	if ev.Reason == "" {
		return nil, fmt.Errorf("%w: an unplaceable answer needs a reason", ErrInvalidEvent)
	}
	if j.Growing {
		// The shrunk job keeps running; the next capacity change asks again.
		j.Growing = false
		return []Action{}, nil
	}
	reason := "waiting for capacity: " + ev.Reason
	if j.Phase == Recovering {
		reason = fmt.Sprintf("waiting for capacity %s: %s", j.restartNote(), ev.Reason)
	}
	if reason == j.Reason {
		return nil, nil // the same answer again: nothing new to tell anyone
	}
	j.Reason = reason
	return []Action{Emit{Warning, "FailedScheduling", reason}}, nil
}

func (j *Job) onRanksStarted(ev RanksStarted) ([]Action, error) {
	if err := j.checkAttempt(ev.Attempt); err != nil {
		return nil, err
	}
	switch j.Phase {
	case Running:
		return nil, nil // a repeated report, as after a coordinator restart
	case Recovering:
		return nil, fmt.Errorf("%w: a recovering attempt reports recovery-done, not ranks-started", ErrInvalidEvent)
	}
	j.to(Running, fmt.Sprintf("attempt %d running: %s started, training %s", j.Attempt, j.allRanks(), from(j.CommittedStep)))
	return []Action{Emit{Normal, "Started", j.Reason}}, nil
}

func (j *Job) onStepCommitted(ev StepCommitted) ([]Action, error) {
	if err := j.checkAttempt(ev.Attempt); err != nil {
		return nil, err
	}
	if j.Phase != Running {
		return nil, fmt.Errorf("%w: steps commit only while Running (the job is %s)", ErrInvalidEvent, j.Phase)
	}
	switch {
	case ev.Step < j.CommittedStep:
		return nil, fmt.Errorf("%w: step %d is before the committed step %d", ErrStale, ev.Step, j.CommittedStep)
	case ev.Step == j.CommittedStep:
		return nil, nil // committed already
	}
	// Persist only: a committed step is progress, not news.
	j.CommittedStep = ev.Step
	return []Action{}, nil
}

func (j *Job) onFinished(ev Finished) ([]Action, error) {
	if err := j.checkAttempt(ev.Attempt); err != nil {
		return nil, err
	}
	if j.Phase != Running {
		return nil, fmt.Errorf("%w: training can finish only while Running (the job is %s)", ErrInvalidEvent, j.Phase)
	}
	if ev.Step < j.CommittedStep {
		return nil, fmt.Errorf("%w: finished at step %d, before the committed step %d", ErrInvalidEvent, ev.Step, j.CommittedStep)
	}
	j.CommittedStep = ev.Step
	restarts := "with no restarts"
	if j.Restarts > 0 {
		restarts = "after " + plural(j.Restarts, "restart")
	}
	j.to(Succeeded, fmt.Sprintf("training finished at step %d in attempt %d %s", ev.Step, j.Attempt, restarts))
	return []Action{Emit{Normal, "Succeeded", j.Reason}}, nil
}

func (j *Job) onRecoveryDone(ev RecoveryDone) ([]Action, error) {
	if err := j.checkAttempt(ev.Attempt); err != nil {
		return nil, err
	}
	if j.Phase != Recovering || !j.Recovery.Launched {
		return nil, fmt.Errorf("%w: no recovery attempt is running (the job is %s)", ErrInvalidEvent, j.Phase)
	}
	if ev.Step != j.CommittedStep {
		return nil, fmt.Errorf("%w: recovery restored step %d, but the committed step is %d", ErrInvalidEvent, ev.Step, j.CommittedStep)
	}
	j.to(Running, fmt.Sprintf("attempt %d running: %s recovered, training %s", j.Attempt, j.allRanks(), from(j.CommittedStep)))
	return []Action{Emit{Normal, "Recovered", j.Reason}}, nil
}
