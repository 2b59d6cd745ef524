package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ternml/tern/pkg/coordinator/job"
	"github.com/ternml/tern/pkg/coordinator/store"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// inputQueueLen is how many inputs may wait for the loop before senders
// block: worker reports arrive at a few per step per rank.
const inputQueueLen = 1024

// loop is the coordinator's I/O loop while it leads: one goroutine owns
// every job's state machine, the worker registry and the worker sessions.
// Everything else reaches it through in: RPC handlers, the registry watch
// and expired timers post inputs; requests that need an answer carry a
// reply channel. Carrying out a job's actions never blocks on a worker:
// orders go into each session's buffered outbox.
type loop struct {
	leader *store.Leader
	st     *store.Store
	opts   Options
	log    *slog.Logger
	views  *views
	logs   *logStore

	in   chan input
	done chan struct{} // closed when run returns

	jobs map[string]*entry
	// broken names job records in etcd that could not be restored; their
	// names stay taken.
	broken   map[string]string
	registry map[string]*registered
	sessions map[string]*session
	// queue holds job events produced while carrying out actions (a
	// placement answer, a derived RanksStarted), fed in order once the
	// current input is handled, so a job's actions run in the order its
	// state machine returned them.
	queue []queued
	// afters run once the queue is drained: answers to requests that
	// should reflect everything their input set off.
	afters []func()
	timers map[*time.Timer]struct{}
}

// input is anything posted to the loop.
type input interface{}

type queued struct {
	name string
	ev   job.Event
}

// newLoop restores the jobs and the worker registry from etcd. Run then
// carries out what each restored job's phase needs (job.Reconcile).
func newLoop(ctx context.Context, leader *store.Leader, opts Options, v *views, logs *logStore) (*loop, error) {
	l := &loop{
		leader:   leader,
		st:       leader.Store(),
		opts:     opts,
		log:      opts.Logger,
		views:    v,
		logs:     logs,
		in:       make(chan input, inputQueueLen),
		done:     make(chan struct{}),
		jobs:     map[string]*entry{},
		broken:   map[string]string{},
		registry: map[string]*registered{},
		sessions: map[string]*session{},
		timers:   map[*time.Timer]struct{}{},
	}
	if err := l.restoreJobs(ctx); err != nil {
		return nil, err
	}
	// Readers see the restored jobs as soon as this coordinator answers
	// as leader, before run has reconciled them.
	for _, name := range l.jobNames() {
		l.publish(l.jobs[name])
	}
	return l, nil
}

// run drives the loop until ctx ends (nil), leadership is lost or a write
// fails (an error: the caller must stop acting as leader).
func (l *loop) run(ctx context.Context) error {
	defer close(l.done)
	defer l.stopTimers()
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	defer func() { stopWatch(); <-watchDone }()
	rev, err := l.listWorkers(ctx)
	if err != nil {
		close(watchDone)
		return err
	}
	go l.watchWorkers(wctx, rev, watchDone)

	for _, name := range l.jobNames() {
		e := l.jobs[name]
		if err := l.carry(ctx, e, e.j.Reconcile()); err != nil {
			return err
		}
		l.publish(e)
	}
	if err := l.drain(ctx); err != nil {
		return err
	}
	l.publishWorkers()
	// Rank reports arrive at a few per rank per step, and publishing the
	// worker list costs O(workers): after a report it is published at
	// most every workersPublishEvery (what a report changes there, the
	// slots a finished job frees, may show that much later). Every
	// other input publishes at once.
	pubTimer := time.NewTimer(0)
	<-pubTimer.C
	defer pubTimer.Stop()
	var lastPub time.Time
	pubPending := false
	// The miss check runs a few times per window, so a silent worker is
	// lost at most missCheckFraction of a window late.
	checkEvery := l.opts.MissWindow / missCheckFraction
	missTick := time.NewTicker(checkEvery)
	defer missTick.Stop()
	lastCheck, stalled := time.Now(), time.Time{}
	publishWorkers := func() {
		l.publishWorkers()
		lastPub, pubPending = time.Now(), false
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.leader.Done():
			return fmt.Errorf("coordinator: leadership lost (the etcd session behind it ended); stopping so that a coordinator that leads takes over")
		case <-pubTimer.C:
			if pubPending {
				publishWorkers()
			}
		case now := <-missTick.C:
			now = time.Now() // the tick may have waited in its channel
			if now.Sub(lastCheck) > 2*checkEvery {
				stalled = now
			}
			lastCheck = now
			if err := l.checkMisses(ctx, now, stalled); err != nil {
				return err
			}
			if err := l.drain(ctx); err != nil {
				return err
			}
			if err := l.persistNotes(ctx); err != nil {
				return err
			}
			for _, f := range l.afters {
				f()
			}
			l.afters = nil
			publishWorkers()
		case in := <-l.in:
			if err := l.handle(ctx, in); err != nil {
				return err
			}
			if err := l.drain(ctx); err != nil {
				return err
			}
			if err := l.persistNotes(ctx); err != nil {
				return err
			}
			for _, f := range l.afters {
				f()
			}
			l.afters = nil
			_, isReport := in.(report)
			switch wait := workersPublishEvery - time.Since(lastPub); {
			case !isReport || wait <= 0:
				publishWorkers()
			case !pubPending:
				pubPending = true
				pubTimer.Reset(wait)
			}
		}
	}
}

// persistNotes writes the records of jobs whose metadata gained events
// outside the state machine (snapshots.go), so describe shows them after
// a coordinator restart too.
func (l *loop) persistNotes(ctx context.Context) error {
	for _, name := range l.jobNames() {
		e := l.jobs[name]
		if !e.metaDirty || e.revision == 0 {
			continue
		}
		if err := l.persist(ctx, e); err != nil {
			return err
		}
		l.publish(e)
	}
	return nil
}

// missCheckFraction: the loop looks for silent workers this many times
// per miss window.
const missCheckFraction = 6

// workersPublishEvery bounds how often rank reports republish the worker
// list (ListWorkers' view).
const workersPublishEvery = 100 * time.Millisecond

// handle dispatches one input. Only failures that end leadership (a job
// write that etcd refused, a registry watch that broke) return an error;
// a bad request is answered on its reply channel.
func (l *loop) handle(ctx context.Context, in input) error {
	switch in := in.(type) {
	case *applyReq:
		return l.apply(ctx, in)
	case *cancelReq:
		return l.cancelJob(ctx, in)
	case *pauseReq:
		return l.pauseJob(ctx, in)
	case *resumeReq:
		return l.resumeJob(ctx, in)
	case *deleteReq:
		return l.deleteJob(ctx, in)
	case *registerReq:
		return l.register(ctx, in)
	case *attachReq:
		return l.attach(ctx, in)
	case detached:
		return l.detach(ctx, in)
	case report:
		return l.onReport(ctx, in)
	case store.WorkerEvent:
		return l.onWorkerEvent(in)
	case timerFired:
		delete(l.timers, in.t)
		l.enqueue(in.name, in.ev)
	case deferredFailure:
		return l.onDeferredFailure(ctx, in)
	case holdExpired:
		l.onHoldExpired(in)
	case *planReq:
		l.planPlacement(in)
	default:
		return fmt.Errorf("coordinator: loop got %T, which it does not handle", in)
	}
	return nil
}

// post hands an input to the loop; it gives up when ctx ends or the loop
// has stopped.
func (l *loop) post(ctx context.Context, in input) error {
	select {
	case l.in <- in:
		return nil
	case <-l.done:
		return fmt.Errorf("%w: the coordinator is shutting down", ErrStandby)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// call posts a request and waits for its answer.
func call[T any](ctx context.Context, l *loop, in input, reply chan T) (T, error) {
	var zero T
	if err := l.post(ctx, in); err != nil {
		return zero, err
	}
	select {
	case r := <-reply:
		return r, nil
	case <-l.done:
		return zero, fmt.Errorf("%w: the coordinator is shutting down", ErrStandby)
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// enqueue schedules ev for job name after the current input.
func (l *loop) enqueue(name string, ev job.Event) {
	l.queue = append(l.queue, queued{name, ev})
}

// after runs f once the current input's events are all fed.
func (l *loop) after(f func()) { l.afters = append(l.afters, f) }

// drain feeds queued events until none are left; feeding may queue more.
func (l *loop) drain(ctx context.Context) error {
	for len(l.queue) > 0 {
		q := l.queue[0]
		l.queue = l.queue[1:]
		e := l.jobs[q.name]
		if e == nil {
			continue // deleted meanwhile
		}
		if err := l.feed(ctx, e, q.ev); err != nil {
			return err
		}
	}
	return nil
}

// startTimer arms a state-machine deadline; it posts TimerFired when due.
// Timers are not cancelled when their purpose passes: the machine rejects
// a stale one.
func (l *loop) startTimer(name string, t job.StartTimer) {
	d := l.opts.StartTimeout
	if t.Timer == job.TimerRecovery {
		d = l.opts.RecoveryTimeout
	}
	var tm *time.Timer
	tm = time.AfterFunc(d, func() {
		select {
		case l.in <- timerFired{name, job.TimerFired(t), tm}:
		case <-l.done:
		}
	})
	l.timers[tm] = struct{}{}
}

type timerFired struct {
	name string
	ev   job.TimerFired
	t    *time.Timer
}

func (l *loop) stopTimers() {
	for t := range l.timers {
		t.Stop()
	}
}

// etcdCtx bounds one etcd request of the loop.
func etcdCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, etcdTimeout)
}

// send queues msg for worker's session, if it has one. A worker without a
// session gets what it needs when it attaches (resync), so dropping is
// safe; a session whose outbox is full is ended, and the worker's
// reconnect resynchronises it.
func (l *loop) send(worker string, msg *ternv1.SessionResponse) {
	s := l.sessions[worker]
	if s == nil {
		return
	}
	if !s.offer(msg) {
		l.log.Warn("worker session is not keeping up; ending it so the worker reconnects", "worker", worker)
		delete(l.sessions, worker)
	}
}
