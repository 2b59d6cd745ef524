package job

import "fmt"

// The user's verbs. Cancel and pause work from every phase that is not
// over; both stop the running ranks, if any, and free the job's slots.

func (j *Job) onCancel() ([]Action, error) {
	var acts []Action
	if j.Phase.live() {
		acts = append(acts, StopRanks{j.Attempt})
	}
	j.to(Cancelled, fmt.Sprintf("cancelled by the user while %s, %s", j.Phase, committed(j.CommittedStep)))
	return append(acts, Emit{Normal, "Cancelled", j.Reason}), nil
}

func (j *Job) onPause() ([]Action, error) {
	if j.Phase == Paused {
		return nil, fmt.Errorf("%w: the job is already paused", ErrInvalidEvent)
	}
	var acts []Action
	if j.Phase.live() {
		acts = append(acts, StopRanks{j.Attempt})
	}
	// A recovery in progress is dropped: resume relaunches every rank from
	// the committed step anyway. The restart it used stays counted.
	j.to(Paused, fmt.Sprintf("paused by the user while %s; resume continues %s", j.Phase, from(j.CommittedStep)))
	return append(acts, Emit{Normal, "Paused", j.Reason}), nil
}

func (j *Job) onResume() ([]Action, error) {
	if j.Phase != Paused {
		return nil, fmt.Errorf("%w: only a paused job can resume (the job is %s)", ErrInvalidEvent, j.Phase)
	}
	j.to(Pending, fmt.Sprintf("resumed by the user; waiting for a placement of %s to continue %s", j.shape(), from(j.CommittedStep)))
	return []Action{j.requestPlacement(), Emit{Normal, "Resumed", j.Reason}}, nil
}
