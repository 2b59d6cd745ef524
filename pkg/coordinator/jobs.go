package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/ternml/tern/pkg/coordinator/job"
	"github.com/ternml/tern/pkg/coordinator/sched"
	"github.com/ternml/tern/pkg/spec"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// entry is one job as the loop holds it: the state machine, the spec it
// runs, and what the loop knows beyond the record (the ranks' reports).
type entry struct {
	name     string
	j        *job.Job
	spec     *spec.TrainingJob
	specJSON []byte // spec.CanonicalJSON, as stored in etcd and sent to workers
	// revision is the etcd revision of the job record as last written, 0
	// before it is created; every update is conditional on it.
	revision int64
	// persisted is the latest attempt whose record (token, assignment) is
	// in etcd.
	persisted int
	// run is the latest attempt's ranks; nil before the first launch.
	run *attempt
	// meta is the job's times, attempts and events, stored with the
	// record.
	meta jobMeta
	// held says a placement was put off until the last attempt's ranks
	// have stopped (holdPlacement); holdOver that the wait timed out.
	held, holdOver bool
	// snap is the job's in-memory snapshots (snapshots.go); metaDirty
	// says meta has events not yet written with the record.
	snap      *snapState
	metaDirty bool
}

type applyReq struct {
	spec     *spec.TrainingJob
	specJSON []byte
	reply    chan applyResult
}

type applyResult struct {
	job     *ternv1.Job
	created bool
	err     error
}

type cancelReq struct {
	name  string
	reply chan jobResult
}

type pauseReq struct {
	name  string
	reply chan jobResult
}

type resumeReq struct {
	name  string
	reply chan jobResult
}

type deleteReq struct {
	name  string
	reply chan jobResult
}

type jobResult struct {
	job *ternv1.Job
	err error
}

// apply accepts a new job, or answers for an identical one already there.
func (l *loop) apply(ctx context.Context, r *applyReq) error {
	name := r.spec.Metadata.Name
	if why, ok := l.broken[name]; ok {
		r.reply <- applyResult{err: fmt.Errorf("%w: a record of job %q is in etcd but cannot be read (%s); choose another metadata.name", ErrExists, name, why)}
		return nil
	}
	if e := l.jobs[name]; e != nil {
		if bytes.Equal(e.specJSON, r.specJSON) {
			r.reply <- applyResult{job: l.status(e)}
			return nil
		}
		r.reply <- applyResult{err: fmt.Errorf("%w: job %q exists with a different spec (it is %s); delete it first or choose another metadata.name", ErrExists, name, e.j.Phase)}
		return nil
	}
	j, acts, err := job.New(job.Spec{
		Name: name,
		DP:   r.spec.Spec.Parallel.Data,
		PP:   r.spec.Spec.Parallel.Pipeline,
		// A recovery relaunches every rank from the latest durable
		// checkpoint (or from step 0 without one).
		MaxRestarts:  r.spec.Spec.RestartSettings().MaxRestarts,
		Shrink:       r.spec.Spec.RestartSettings().Shrink,
		MinDP:        r.spec.Spec.RestartSettings().MinData,
		MicroBatches: r.spec.Spec.Batch.MicroBatches,
	})
	if err != nil {
		r.reply <- applyResult{err: err}
		return nil
	}
	// Logs left by an earlier job of this name (deleted while this
	// coordinator was down) are not this job's.
	if err := l.logs.remove(name); err != nil {
		l.log.Warn("old logs not removed", "job", name, "err", err)
	}
	e := &entry{name: name, j: j, spec: r.spec, specJSON: r.specJSON, meta: jobMeta{Created: time.Now()}}
	l.jobs[name] = e
	if err := l.carry(ctx, e, acts); err != nil {
		delete(l.jobs, name)
		l.views.putJob(name, nil)
		r.reply <- applyResult{err: err}
		return err
	}
	// Answer once the placement this queued has been tried, so the caller
	// sees Scheduling or the reason the job waits.
	l.after(func() { r.reply <- applyResult{job: l.status(e), created: true} })
	return nil
}

func (l *loop) cancelJob(ctx context.Context, r *cancelReq) error {
	return l.control(ctx, r.name, r.reply, job.Cancel{}, func(e *entry) error {
		if e.j.Phase.Terminal() {
			return fmt.Errorf("%w: job %q is already %s; there is nothing to cancel", ErrPhase, r.name, e.j.Phase)
		}
		return nil
	})
}

func (l *loop) pauseJob(ctx context.Context, r *pauseReq) error {
	return l.control(ctx, r.name, r.reply, job.Pause{}, func(e *entry) error {
		switch {
		case e.j.Phase.Terminal():
			return fmt.Errorf("%w: job %q is already %s; there is nothing to pause", ErrPhase, r.name, e.j.Phase)
		case e.j.Phase == job.Paused:
			return fmt.Errorf("%w: job %q is already paused; resume it with `ternctl resume %s`", ErrPhase, r.name, r.name)
		}
		return nil
	})
}

func (l *loop) resumeJob(ctx context.Context, r *resumeReq) error {
	return l.control(ctx, r.name, r.reply, job.Resume{}, func(e *entry) error {
		if e.j.Phase != job.Paused {
			return fmt.Errorf("%w: job %q is %s; only a paused job can resume", ErrPhase, r.name, e.j.Phase)
		}
		return nil
	})
}

// control carries out a user's verb on a job: the reply is NOT_FOUND for
// an unknown name, refuse's error when the job's phase does not allow the
// verb, and otherwise the job's status once the state machine has taken ev
// and its actions have been carried out.
func (l *loop) control(ctx context.Context, name string, reply chan jobResult, ev job.Event, refuse func(*entry) error) error {
	e := l.jobs[name]
	if e == nil {
		reply <- jobResult{err: fmt.Errorf("%w: no job named %q", ErrNotFound, name)}
		return nil
	}
	if err := refuse(e); err != nil {
		reply <- jobResult{err: err}
		return nil
	}
	if err := l.feed(ctx, e, ev); err != nil {
		return err
	}
	l.after(func() { reply <- jobResult{job: l.status(e)} })
	return nil
}

func (l *loop) deleteJob(ctx context.Context, r *deleteReq) error {
	e := l.jobs[r.name]
	switch {
	case e == nil:
		r.reply <- jobResult{err: fmt.Errorf("%w: no job named %q", ErrNotFound, r.name)}
		return nil
	case !e.j.Phase.Terminal():
		r.reply <- jobResult{err: fmt.Errorf("%w: job %q is %s; cancel it first", ErrPhase, r.name, e.j.Phase)}
		return nil
	}
	cctx, cancel := etcdCtx(ctx)
	defer cancel()
	if err := l.leader.DeleteJob(cctx, r.name, e.revision); err != nil {
		err = fmt.Errorf("coordinator: delete job %s: %w", r.name, err)
		r.reply <- jobResult{err: err}
		return err // etcd refused a write from the leader: stop leading
	}
	delete(l.jobs, r.name)
	l.views.putJob(r.name, nil)
	if err := l.logs.remove(r.name); err != nil {
		l.log.Warn("logs of a deleted job not removed", "job", r.name, "err", err)
	}
	r.reply <- jobResult{}
	return nil
}

// feed steps a job's state machine with one event and carries out the
// actions. Events the machine rejects change nothing: stale reports and
// reports on finished jobs are expected races; anything else is logged.
func (l *loop) feed(ctx context.Context, e *entry, ev job.Event) error {
	held := e.j.HoldsSlots()
	acts, err := e.j.Step(ev)
	switch {
	case errors.Is(err, job.ErrStale), errors.Is(err, job.ErrFinished):
		l.log.Debug("job event dropped", "job", e.name, "err", err)
		return nil
	case err != nil:
		l.log.Warn("job event refused", "job", e.name, "err", err)
		return nil
	}
	if err := l.carry(ctx, e, acts); err != nil {
		return err
	}
	if held && !e.j.HoldsSlots() {
		l.released(e)
	}
	return nil
}

// carry carries out a job's actions in order (the order is the state
// machine's contract: Persist first), then publishes the job's status.
// It fails only when etcd refuses the job's record.
func (l *loop) carry(ctx context.Context, e *entry, acts []job.Action) error {
	// The metadata goes into the same write as the record, events and
	// all; a step that emitted an event without changing the record
	// writes it too, so describe shows the same events after a restart.
	if noteMeta(e, acts, time.Now()) && !slices.ContainsFunc(acts, isPersist) && e.revision != 0 {
		if err := l.persist(ctx, e); err != nil {
			return err
		}
	}
	for _, a := range acts {
		switch a := a.(type) {
		case job.Persist:
			if err := l.persist(ctx, e); err != nil {
				return err
			}
		case job.RequestPlacement:
			if l.holdPlacement(e) {
				continue
			}
			asg, err := sched.Place(l.cluster(), a.Layout)
			l.answer(e, a.Attempt, asg, err)
		case job.RequestReplacement:
			asg, err := sched.Replace(l.clusterFreeing(e, a.Ranks), a.Layout, e.j.Assignment, a.Ranks, l.avoided(e, a.Avoid))
			l.answer(e, a.Attempt, asg, err)
		case job.RequestGrowth:
			asg, err := sched.Grow(l.cluster(), a.Layout, e.j.Assignment, nil)
			l.answer(e, a.Attempt, asg, err)
		case job.Launch:
			// A whole relaunch after a failure (a recovery that could
			// not replace in place) restores like a recovery; a first
			// launch or a resume after a pause does not.
			f := e.j.LastFailure
			l.launch(e, a.Attempt, f != nil && f.Attempt == a.Attempt-1)
		case job.StartRecovery:
			// A recovery launches every rank of the new attempt; each
			// restores the committed in-memory snapshot (from its
			// worker's copy or its peers' fragments) or, when that is
			// lost, the latest durable checkpoint (snapshots.go).
			l.launch(e, a.Attempt, true)
		case job.AbortAttempt:
			l.stopRanks(e, a.Attempt, "attempt aborted: "+e.j.Reason)
		case job.StopRanks:
			l.stopRanks(e, a.Attempt, e.j.Reason)
		case job.StartTimer:
			if a.Timer == job.TimerShrink {
				l.startShrinkTimer(e, a)
				continue
			}
			l.startTimer(e.name, a)
		case job.Emit:
			l.emit(e, a)
		default:
			l.log.Error("job action not carried out: unknown type", "job", e.name, "action", a.String())
		}
	}
	l.publish(e)
	return nil
}

// persist writes the job record, fenced by leadership and conditional on
// the revision last written. A new attempt's record (its token and
// placement) goes in the same transaction, so a coordinator that takes
// over can re-send exactly what the ranks were told; so does the
// attempt's summary once it has one.
func (l *loop) persist(ctx context.Context, e *entry) error {
	state, err := encodeState(e)
	if err != nil {
		return fmt.Errorf("coordinator: encode job %s: %w", e.name, err)
	}
	b := l.leader.Batch()
	if e.revision == 0 {
		b.CreateJob(e.name, e.specJSON, state)
	} else {
		b.UpdateJob(storeJob(e, state))
	}
	run, fresh := e.run, false
	if e.j.HoldsSlots() && e.j.Attempt > e.persisted {
		token, err := newToken()
		if err != nil {
			return err
		}
		run, fresh = newAttempt(attemptRecord{Attempt: e.j.Attempt, Token: token, FromStep: e.j.CommittedStep, Assignment: slices.Clone(e.j.Assignment)}), true
		asg, err := json.Marshal(run.assignment)
		if err != nil {
			return fmt.Errorf("coordinator: encode assignment of job %s: %w", e.name, err)
		}
		b.PutAssignment(e.name, asg)
	}
	if run != nil && (fresh || run.summary != nil && !run.summarySaved) {
		rec, err := run.encode()
		if err != nil {
			return fmt.Errorf("coordinator: encode attempt %d of job %s: %w", run.n, e.name, err)
		}
		b.PutAttempt(e.name, run.n, rec)
	}
	cctx, cancel := etcdCtx(ctx)
	defer cancel()
	rev, err := b.Commit(cctx)
	if err != nil {
		return fmt.Errorf("coordinator: persist job %s version %d: %w", e.name, e.j.Version, err)
	}
	e.revision, e.metaDirty = rev, false
	if fresh {
		e.run, e.persisted = run, run.n
		e.held, e.holdOver = false, false
	}
	if run != nil && run.summary != nil {
		run.summarySaved = true
	}
	return nil
}

// answer feeds the scheduler's answer back to the job.
func (l *loop) answer(e *entry, attempt int, asg sched.Assignment, err error) {
	var ce *sched.CapacityError
	switch {
	case err == nil:
		l.enqueue(e.name, job.Placed{Attempt: attempt, Assignment: asg})
	case errors.As(err, &ce):
		l.enqueue(e.name, job.Unplaceable{Attempt: attempt, Reason: ce.Error()})
	default:
		// The cluster state the loop built is malformed: a bug here, not
		// the user's; the job waits with the reason.
		l.log.Error("scheduler refused the cluster state", "job", e.name, "err", err)
		l.enqueue(e.name, job.Unplaceable{Attempt: attempt, Reason: "the scheduler refused the cluster state: " + err.Error()})
	}
}

// released runs when a job stops holding slots: its workers may forget
// its ranks, and jobs waiting for slots may fit now.
func (l *loop) released(e *entry) {
	if e.run != nil {
		l.stopRanks(e, e.run.n, "the job is "+string(e.j.Phase))
		if e.j.Phase.Terminal() {
			// Its workers may drop its in-memory snapshots too.
			for _, w := range e.run.workers() {
				msg := stopMsg(e.name, e.run.n, "the job is "+string(e.j.Phase))
				msg.GetStopRanks().Forget = true
				l.send(w, msg)
			}
		}
	}
	l.capacityChanged()
}

// capacityChanged tells every job waiting for slots to ask again, and
// every job running shrunk (restartPolicy.shrink) to ask for the replicas
// it is missing.
func (l *loop) capacityChanged() {
	for _, name := range l.jobNames() {
		if e := l.jobs[name]; e.j.Phase == job.Pending || e.j.Phase == job.Recovering || (e.j.Phase == job.Running && e.j.DP > 0) {
			l.enqueue(name, job.CapacityChanged{})
		}
	}
}

// emit logs a job's event; noteMeta has recorded it in the job's events.
func (l *loop) emit(e *entry, a job.Emit) {
	level := slog.LevelInfo
	if a.Severity == job.Warning {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, a.Message, "job", e.name, "event", a.Reason)
}

// publish makes the job's current status visible to readers.
func (l *loop) publish(e *entry) {
	l.views.putJob(e.name, l.status(e))
}

// jobNames lists the jobs by name, so that everything done for every job
// happens in the same order each time.
func (l *loop) jobNames() []string {
	names := make([]string, 0, len(l.jobs))
	for n := range l.jobs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func isPersist(a job.Action) bool {
	_, ok := a.(job.Persist)
	return ok
}

// newToken returns a fresh secret shared by the ranks of one attempt
// (pkg/comm derives their mutual authentication from it).
func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("coordinator: generate a token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
