package job

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/ternml/tern/pkg/coordinator/sched"
)

// Job is one training job's lifecycle state: the record the coordinator
// keeps in etcd. Change it only through Step; read its fields freely.
type Job struct {
	Spec Spec `json:"spec"`
	// Phase and Reason are what `get` and `describe` show: Reason says, in
	// a sentence, why the job is in Phase.
	Phase  Phase  `json:"phase"`
	Reason string `json:"reason"`
	// Version counts accepted changes; each Persist carries it, so the loop
	// can guard its etcd write with it.
	Version uint64 `json:"version"`
	// Attempt is the number of the latest attempt launched (0: none yet).
	// Every launch, including the replacement attempt of a recovery and
	// the relaunch after a resume, gets the next number.
	Attempt int `json:"attempt"`
	// Restarts counts recoveries from failures, checked against
	// Spec.MaxRestarts. Nothing resets it: not a resume, not a successful
	// step, not a coordinator restart.
	Restarts int `json:"restarts"`
	// CommittedStep is the last step committed (0: none; training starts
	// from the initial state). Every launch and recovery restores it.
	CommittedStep int64 `json:"committedStep"`
	// DP is the data-parallel size the job runs at after a shrink
	// (Spec.Shrink), below Spec.DP; 0 while it runs at Spec.DP. The
	// latest attempt has DP×PP ranks.
	DP int `json:"dp,omitempty"`
	// Growing is set while the job runs shrunk and a placement of its
	// missing replicas is outstanding (RequestGrowth).
	Growing bool `json:"growing,omitempty"`
	// Assignment places the ranks of the latest attempt. The job holds
	// those slots while HoldsSlots reports true.
	Assignment sched.Assignment `json:"assignment,omitempty"`
	// Recovery is set while Phase is Recovering.
	Recovery *Recovery `json:"recovery,omitempty"`
	// LastFailure is the most recent failure, for `describe`.
	LastFailure *Failure `json:"lastFailure,omitempty"`
}

// Recovery is a recovery in progress.
type Recovery struct {
	// Ranks are the ranks being replaced, ascending.
	Ranks []int `json:"ranks"`
	// Avoid lists the workers the failures happened on, sorted.
	Avoid []string `json:"avoid,omitempty"`
	// Launched is false while replacements are being placed, true once
	// the recovery attempt (Job.Attempt) was started.
	Launched bool `json:"launched"`
	// Sources is set when the recovery attempt changes the data-parallel
	// size (a shrink or a growth): rank r of the recovery attempt restores
	// the state rank Sources[r] of the previous attempt held at the
	// committed step. Without it every rank restores its own.
	Sources []int `json:"sources,omitempty"`
}

// Failure describes a failure for `describe`.
type Failure struct {
	Attempt int    `json:"attempt"`
	Ranks   []int  `json:"ranks"`
	Worker  string `json:"worker,omitempty"`
	Message string `json:"message"`
}

// New accepts a job: it starts Pending and asks for a placement.
func New(spec Spec) (*Job, []Action, error) {
	if err := spec.validate(); err != nil {
		return nil, nil, err
	}
	j := &Job{Spec: spec, Version: 1}
	j.to(Pending, "waiting for a placement of "+j.shape())
	return j, []Action{
		Persist{Version: 1},
		j.requestPlacement(),
		Emit{Normal, "Submitted", fmt.Sprintf("job %s accepted: %s, %s", spec.Name, j.shape(), j.budget())},
	}, nil
}

// Step applies one event. On success it returns the actions the I/O loop
// must carry out, in order; Persist comes first whenever the record
// changed, and an event that changes nothing returns no actions. On error
// (wrapping ErrInvalidEvent, ErrStale or ErrFinished) the job is unchanged
// and there is nothing to do.
func (j *Job) Step(ev Event) ([]Action, error) {
	if j.Phase.Terminal() {
		return nil, fmt.Errorf("job %s: %s: %w (it is %s)", j.Spec.Name, ev.kind(), ErrFinished, j.Phase)
	}
	// Handlers work on a copy, so a rejected event cannot leave a half-made
	// change behind.
	next := j.clone()
	acts, err := next.apply(ev)
	if err != nil {
		return nil, fmt.Errorf("job %s: %s: %w", j.Spec.Name, ev.kind(), err)
	}
	// The record changed exactly when its encoding did: that is what
	// decides whether etcd needs a write.
	before, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("job %s: encode record: %w", j.Spec.Name, err)
	}
	after, err := json.Marshal(next)
	if err != nil {
		return nil, fmt.Errorf("job %s: encode record: %w", j.Spec.Name, err)
	}
	if !bytes.Equal(before, after) {
		next.Version++
		acts = append([]Action{Persist{Version: next.Version}}, acts...)
	}
	*j = *next
	return acts, nil
}

func (j *Job) apply(ev Event) ([]Action, error) {
	switch ev := ev.(type) {
	case CapacityChanged:
		return j.onCapacityChanged()
	case Placed:
		return j.onPlaced(ev)
	case Unplaceable:
		return j.onUnplaceable(ev)
	case RanksStarted:
		return j.onRanksStarted(ev)
	case StepCommitted:
		return j.onStepCommitted(ev)
	case RankFailed:
		return j.onRankFailed(ev)
	case WorkerLost:
		return j.onWorkerLost(ev)
	case Finished:
		return j.onFinished(ev)
	case Cancel:
		return j.onCancel()
	case Pause:
		return j.onPause()
	case Resume:
		return j.onResume()
	case RecoveryDone:
		return j.onRecoveryDone(ev)
	case TimerFired:
		return j.onTimerFired(ev)
	default:
		return nil, fmt.Errorf("%w: unknown event type %T", ErrInvalidEvent, ev)
	}
}

// HoldsSlots reports whether the slots in Assignment belong to this job:
// while an attempt's ranks may be running.
func (j *Job) HoldsSlots() bool { return j.Phase.live() }

// Reconcile returns the actions that bring the world in line with the
// job's record, for a coordinator that just restored it from etcd: the
// previous leader may have persisted a change and died before carrying out
// its actions. All of them are idempotent. Timers are armed afresh.
func (j *Job) Reconcile() []Action {
	switch j.Phase {
	case Pending:
		return []Action{j.requestPlacement()}
	case Scheduling:
		return []Action{j.launch(), StartTimer{TimerStart, j.Attempt}}
	case Recovering:
		if !j.Recovery.Launched {
			acts := []Action{AbortAttempt{j.Attempt}, j.requestReplacement(), StartTimer{TimerRecovery, j.Attempt}}
			if j.canShrink() {
				acts = append(acts, StartTimer{TimerShrink, j.Attempt})
			}
			return acts
		}
		return []Action{j.startRecovery(), StartTimer{TimerRecovery, j.Attempt}}
	case Running:
		if j.Growing {
			return []Action{j.requestGrowth()}
		}
	case Paused, Failed, Cancelled:
		if j.Attempt > 0 {
			return []Action{StopRanks{j.Attempt}}
		}
	}
	return nil
}

// Restore decodes a job record written from a Job (by json.Marshal, as
// Persist asks) and checks its invariants, so a damaged record is refused
// rather than driven.
func Restore(data []byte) (*Job, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var j Job
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the record", ErrCorrupt)
	}
	if err := j.check(); err != nil {
		return nil, fmt.Errorf("%w: job %s: %v", ErrCorrupt, j.Spec.Name, err)
	}
	return &j, nil
}

// check verifies the invariants Step maintains.
func (j *Job) check() error {
	if err := j.Spec.validate(); err != nil {
		return err
	}
	if !slices.Contains(phases, j.Phase) {
		return fmt.Errorf("unknown phase %q", j.Phase)
	}
	switch {
	case j.Version < 1:
		return fmt.Errorf("version %d: must be at least 1", j.Version)
	case j.Attempt < 0:
		return fmt.Errorf("attempt %d is negative", j.Attempt)
	case j.Restarts < 0 || j.Restarts > j.Spec.MaxRestarts:
		return fmt.Errorf("restarts %d: must be between 0 and maxRestarts %d", j.Restarts, j.Spec.MaxRestarts)
	case j.CommittedStep < 0:
		return fmt.Errorf("committed step %d is negative", j.CommittedStep)
	case j.Phase.live() && j.Attempt < 1:
		return fmt.Errorf("phase %s without an attempt", j.Phase)
	case (j.Phase == Recovering) != (j.Recovery != nil):
		return fmt.Errorf("phase %s with recovery %v", j.Phase, j.Recovery != nil)
	case j.DP != 0 && (!j.Spec.Shrink || j.DP < j.Spec.minDP() || j.DP >= j.Spec.DP):
		return fmt.Errorf("DP %d: a job runs shrunk only with restartPolicy.shrink, between minData %d and DP %d",
			j.DP, j.Spec.minDP(), j.Spec.DP-1)
	case j.Growing && (j.Phase != Running || j.DP == 0):
		return fmt.Errorf("growing while %s at DP %d: only a shrunk, running job grows", j.Phase, j.dp())
	}
	if j.Phase.live() || j.Assignment != nil {
		if err := j.Assignment.Validate(j.world()); err != nil {
			return err
		}
	}
	if r := j.Recovery; r != nil {
		if (len(r.Ranks) == 0 && r.Sources == nil) || !slices.IsSorted(r.Ranks) || len(slices.Compact(slices.Clone(r.Ranks))) != len(r.Ranks) ||
			(len(r.Ranks) > 0 && (r.Ranks[0] < 0 || r.Ranks[len(r.Ranks)-1] >= j.world())) {
			return fmt.Errorf("recovery ranks %v: must be ascending, distinct, within 0..%d", r.Ranks, j.world()-1)
		}
		if r.Sources != nil {
			if !r.Launched || len(r.Sources) != j.world() {
				return fmt.Errorf("recovery sources %v: a launched recovery names one for each of the %d ranks", r.Sources, j.world())
			}
			for _, src := range r.Sources {
				if src < 0 || src >= j.Spec.World() {
					return fmt.Errorf("recovery source rank %d is outside 0..%d", src, j.Spec.World()-1)
				}
			}
		}
	}
	return nil
}

// clone deep-copies j.
func (j *Job) clone() *Job {
	c := *j
	c.Assignment = slices.Clone(j.Assignment)
	if j.Recovery != nil {
		r := *j.Recovery
		r.Ranks = slices.Clone(r.Ranks)
		r.Avoid = slices.Clone(r.Avoid)
		r.Sources = slices.Clone(r.Sources)
		c.Recovery = &r
	}
	if j.LastFailure != nil {
		f := *j.LastFailure
		f.Ranks = slices.Clone(f.Ranks)
		c.LastFailure = &f
	}
	return &c
}

// to moves the job to phase p for the stated reason.
func (j *Job) to(p Phase, reason string) {
	j.Phase, j.Reason = p, reason
	if p != Recovering {
		j.Recovery = nil
	}
	if p != Running {
		j.Growing = false
	}
}

func (j *Job) requestPlacement() Action {
	return RequestPlacement{Attempt: j.Attempt + 1, Layout: j.Spec.Layout()}
}

func (j *Job) requestReplacement() Action {
	return RequestReplacement{Attempt: j.Attempt + 1, Layout: j.layout(), Ranks: slices.Clone(j.Recovery.Ranks), Avoid: slices.Clone(j.Recovery.Avoid)}
}

func (j *Job) launch() Action {
	return Launch{Attempt: j.Attempt, FromStep: j.CommittedStep, Assignment: slices.Clone(j.Assignment)}
}

func (j *Job) startRecovery() Action {
	return StartRecovery{Attempt: j.Attempt, FromStep: j.CommittedStep, Assignment: slices.Clone(j.Assignment),
		Replaced: slices.Clone(j.Recovery.Ranks), Sources: slices.Clone(j.Recovery.Sources)}
}

// dp is the data-parallel size of the latest attempt.
func (j *Job) dp() int {
	if j.DP > 0 {
		return j.DP
	}
	return j.Spec.DP
}

// layout is the latest attempt's shape; world its number of ranks.
func (j *Job) layout() sched.Layout { return sched.Layout{DP: j.dp(), PP: j.Spec.PP} }
func (j *Job) world() int           { return j.layout().World() }
