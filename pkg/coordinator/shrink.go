package coordinator

import (
	"time"

	"github.com/ternml/tern/pkg/coordinator/job"
	"github.com/ternml/tern/pkg/spec"
)

// Elastic data parallelism (restartPolicy.shrink): the state machine
// decides when a job shrinks and grows (pkg/coordinator/job, shrink.go);
// this carries out the two things that differ from a recovery in place.

// startShrinkTimer arms the job's shrink deadline,
// restartPolicy.shrinkTimeoutSeconds.
func (l *loop) startShrinkTimer(e *entry, t job.StartTimer) {
	secs := e.spec.Spec.RestartSettings().ShrinkTimeoutSeconds
	if secs == 0 {
		secs = spec.DefaultShrinkTimeoutSeconds
	}
	var tm *time.Timer
	tm = time.AfterFunc(time.Duration(secs)*time.Second, func() {
		select {
		case l.in <- timerFired{e.name, job.TimerFired(t), tm}:
		case <-l.done:
		}
	})
	l.timers[tm] = struct{}{}
}

// attemptSpec is the spec an attempt's ranks run: the job's, or, for an
// attempt at a data-parallel size other than the spec's, the job's with
// parallel.data set to it and batch.microBatches scaled so that the global
// batch (parallel.data × batch.microBatches microbatches) stays the same.
// The state machine shrinks only to sizes that divide it.
func (l *loop) attemptSpec(e *entry, run *attempt) []byte {
	pp := max(e.spec.Spec.Parallel.Pipeline, 1)
	dp := len(run.assignment) / pp
	full := e.spec.Spec.Parallel.Data
	if dp == full || dp == 0 {
		return e.specJSON
	}
	s := *e.spec
	s.Spec.Parallel.Data = dp
	s.Spec.Batch.MicroBatches = full * max(e.spec.Spec.Batch.MicroBatches, 1) / dp
	return s.CanonicalJSON()
}
