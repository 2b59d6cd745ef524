package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ternml/tern/pkg/coordinator/job"
	"github.com/ternml/tern/pkg/coordinator/sched"
	"github.com/ternml/tern/pkg/coordinator/store"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// workerInfo is what etcd keeps of a registered worker (workers/NAME, on
// the worker's lease). Session is the id its Session stream must present,
// so that a coordinator taking over can accept the worker's reconnect.
type workerInfo struct {
	Host    string            `json:"host"`
	Slots   int               `json:"slots"`
	Labels  map[string]string `json:"labels,omitempty"`
	Session string            `json:"session"`
	// Pid is the worker process's id on its host; Registered when it
	// registered.
	Pid        int       `json:"pid,omitempty"`
	Registered time.Time `json:"registered"`
}

// registered is a worker in the loop's registry.
type registered struct {
	info workerInfo
	// lease renews the registration on heartbeats; nil until the worker's
	// session attaches to this leader.
	lease *store.WorkerLease
}

type registerReq struct {
	name  string
	info  workerInfo
	reply chan registerResult
}

type registerResult struct {
	session string
	err     error
}

type attachReq struct {
	worker, session string
	s               *session
	reply           chan attachResult
}

type attachResult struct {
	lease *store.WorkerLease
	err   error
}

// detached: a worker's Session stream ended, for cause (nil when the
// handler returned before ending it).
type detached struct {
	worker string
	s      *session
	cause  error
}

// listWorkers loads the registry and returns the revision to watch from.
func (l *loop) listWorkers(ctx context.Context) (int64, error) {
	cctx, cancel := etcdCtx(ctx)
	defer cancel()
	ws, rev, err := l.st.ListWorkers(cctx)
	if err != nil {
		return 0, fmt.Errorf("coordinator: list workers: %w", err)
	}
	for _, w := range ws {
		var info workerInfo
		if err := json.Unmarshal(w.Info, &info); err != nil {
			l.log.Warn("worker registration unreadable; it must register again", "worker", w.Name, "err", err)
			continue
		}
		l.registry[w.Name] = &registered{info: info}
	}
	return rev, nil
}

// watchWorkers posts every registry change after rev to the loop. A watch
// that breaks ends the loop (the coordinator restarts and lists afresh).
func (l *loop) watchWorkers(ctx context.Context, rev int64, done chan struct{}) {
	defer close(done)
	for ev := range l.st.WatchWorkers(ctx, rev) {
		if l.post(ctx, ev) != nil {
			return
		}
	}
}

func (l *loop) onWorkerEvent(ev store.WorkerEvent) error {
	if ev.Err != nil {
		return fmt.Errorf("coordinator: worker registry watch ended: %w", ev.Err)
	}
	name := ev.Worker.Name
	old := l.registry[name]
	switch ev.Type {
	case store.EventPut:
		var info workerInfo
		if err := json.Unmarshal(ev.Worker.Info, &info); err != nil {
			l.log.Warn("worker registration unreadable", "worker", name, "err", err)
			return nil
		}
		if old != nil && old.info.Session == info.Session {
			return nil // our own registration, already known
		}
		if old != nil {
			l.lost(name, "it registered again")
		}
		l.registry[name] = &registered{info: info}
	case store.EventDelete:
		var info workerInfo
		if json.Unmarshal(ev.Worker.Info, &info) == nil && old != nil && info.Session != old.info.Session {
			return nil // an older registration's key, already replaced
		}
		if old == nil {
			return nil
		}
		delete(l.registry, name)
		l.lost(name, fmt.Sprintf("no heartbeat for %v, so its registration expired", l.opts.LeaseTTL))
	}
	l.capacityChanged()
	return nil
}

// lost tells every job that ranks on worker are gone, and ends the
// worker's session: the worker must register again.
func (l *loop) lost(worker, reason string) {
	if s := l.sessions[worker]; s != nil {
		s.end(fmt.Errorf("%w: worker %q: %s; register again", ErrUnknownSession, worker, reason))
		delete(l.sessions, worker)
	}
	for _, name := range l.jobNames() {
		l.enqueue(name, job.WorkerLost{Worker: worker, Reason: reason})
	}
}

// register records a worker in etcd under a new lease and session id. A
// worker registering again under its name has restarted or lost touch:
// ranks placed on it count as lost.
func (l *loop) register(ctx context.Context, r *registerReq) error {
	sid, err := newToken()
	if err != nil {
		r.reply <- registerResult{err: err}
		return nil
	}
	r.info.Session = sid
	r.info.Registered = time.Now()
	b, err := json.Marshal(r.info)
	if err != nil {
		r.reply <- registerResult{err: fmt.Errorf("encode worker %q: %w", r.name, err)}
		return nil
	}
	cctx, cancel := etcdCtx(ctx)
	defer cancel()
	lease, err := l.leader.RegisterWorker(cctx, r.name, b, l.opts.LeaseTTL)
	if err != nil {
		r.reply <- registerResult{err: err}
		if errors.Is(err, store.ErrNotLeader) {
			return err
		}
		return nil
	}
	if l.registry[r.name] != nil {
		l.lost(r.name, "it registered again (restarted, or lost touch with the coordinator)")
	}
	l.registry[r.name] = &registered{info: r.info, lease: lease}
	l.log.Info("worker registered", "worker", r.name, "host", r.info.Host, "slots", r.info.Slots)
	l.capacityChanged()
	r.reply <- registerResult{session: sid}
	return nil
}

// attach connects a worker's Session stream, if its session id is its
// current registration's, and re-sends the orders for the ranks placed on
// it (the worker re-reports its ranks' state on its side).
func (l *loop) attach(ctx context.Context, r *attachReq) error {
	w := l.registry[r.worker]
	if w == nil || w.info.Session != r.session {
		r.reply <- attachResult{err: fmt.Errorf("%w: worker %q: the session is not its current registration (it expired or was replaced); register again", ErrUnknownSession, r.worker)}
		return nil
	}
	if w.lease == nil {
		// Registered under the previous leader: take over its lease.
		cctx, cancel := etcdCtx(ctx)
		lease, err := l.st.WorkerLease(cctx, r.worker)
		cancel()
		if err != nil {
			r.reply <- attachResult{err: fmt.Errorf("worker %q: %w", r.worker, err)}
			return nil
		}
		w.lease = lease
	}
	if old := l.sessions[r.worker]; old != nil {
		old.end(fmt.Errorf("%w: worker %q opened a newer session", ErrUnknownSession, r.worker))
	}
	l.sessions[r.worker] = r.s
	r.reply <- attachResult{lease: w.lease}
	l.resync(r.worker)
	return nil
}

// detach forgets a session that ended. One whose stream broke under it
// while it was still the worker's current session makes the worker lost
// at once: a process that dies closes its connection, and waiting for its
// lease would only delay the recovery. A worker that closed its side
// (io.EOF) may attach again within its lease; sessions the coordinator
// ended itself are no longer current. A coordinator that stops or loses
// leadership has no loop left to act on its sessions' ends, so its own
// restart never loses a worker here.
func (l *loop) detach(ctx context.Context, d detached) error {
	if l.sessions[d.worker] != d.s {
		return nil
	}
	delete(l.sessions, d.worker)
	var broken brokenStream
	if !errors.As(d.cause, &broken) {
		return nil
	}
	return l.drop(ctx, d.worker, fmt.Sprintf("its session stream broke (%v): the worker process died or lost its connection", status.Convert(broken.err).Message()))
}

// checkMisses declares lost every attached worker that has sent nothing
// for the miss window. stalled is when the loop last found itself late
// to this check: a coordinator that could not run (starved of CPU, paused)
// has not heard heartbeats that may well have been sent, so silence is
// counted from then at the earliest.
func (l *loop) checkMisses(ctx context.Context, now, stalled time.Time) error {
	for _, name := range slices.Sorted(maps.Keys(l.sessions)) {
		s := l.sessions[name]
		last := s.lastHeard()
		if last.Before(stalled) {
			last = stalled
		}
		if silent := now.Sub(last); silent >= l.opts.MissWindow {
			l.log.Info("worker silent for its miss window", "worker", name, "silent", silent.Round(time.Millisecond), "window", l.opts.MissWindow)
			if err := l.drop(ctx, name, fmt.Sprintf("no heartbeat for %v, so its registration was revoked", l.opts.MissWindow)); err != nil {
				return err
			}
		}
	}
	return nil
}

// drop declares a registered worker lost for reason: it deletes the
// registration and revokes its lease in one fenced step, so etcd agrees
// and the worker, should it come back, must register again (its ranks
// stop once it learns), then tells the jobs. A delete that etcd refuses
// for a reason other than leadership is logged: the worker is lost here
// all the same, and its lease lapses on its own.
func (l *loop) drop(ctx context.Context, worker, reason string) error {
	if l.registry[worker] == nil {
		return nil
	}
	cctx, cancel := etcdCtx(ctx)
	err := l.leader.DeleteWorker(cctx, worker)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotLeader):
		return err
	case err != nil && !errors.Is(err, store.ErrNotFound):
		l.log.Warn("could not revoke a lost worker's registration; its lease will lapse", "worker", worker, "err", err)
	}
	l.log.Info("worker lost", "worker", worker, "reason", reason)
	delete(l.registry, worker)
	l.lost(worker, reason)
	l.capacityChanged()
	return nil
}

// resync re-sends a worker the orders for every live rank placed on it.
func (l *loop) resync(worker string) {
	for _, name := range l.jobNames() {
		e := l.jobs[name]
		if !e.j.HoldsSlots() || e.run == nil {
			continue
		}
		placed := false
		for _, p := range e.run.assignment {
			if p.Worker == worker {
				l.send(worker, l.startRank(e, e.run, p.Rank))
				placed = true
			}
		}
		if placed && e.run.peers != nil {
			l.send(worker, peersMsg(name, e.run))
		}
	}
}

// used lists, per worker, the slots held by jobs' ranks.
func (l *loop) used() map[string][]int {
	used := map[string][]int{}
	for _, name := range l.jobNames() {
		if e := l.jobs[name]; e.j.HoldsSlots() {
			for _, p := range e.j.Assignment {
				used[p.Worker] = append(used[p.Worker], p.Slot)
			}
		}
	}
	return used
}

// cluster is the scheduler's view of the registry: every registered
// worker with the slots live jobs hold on it.
func (l *loop) cluster() sched.Cluster { return l.clusterFreeing(nil, nil) }

// clusterFreeing is cluster with the slots of e's failed ranks counted as
// free: a recovery relaunches them, and a rank that failed on a worker
// that is still here may come back to its slot (the scheduler prefers
// other workers; the worker starts the new rank once the old one ended).
func (l *loop) clusterFreeing(e *entry, failed []int) sched.Cluster {
	used := l.used()
	if e != nil {
		for _, r := range failed {
			if r < 0 || r >= len(e.j.Assignment) {
				continue
			}
			p := e.j.Assignment[r]
			if i := slices.Index(used[p.Worker], p.Slot); i >= 0 {
				used[p.Worker] = slices.Delete(used[p.Worker], i, i+1)
			}
		}
	}
	var c sched.Cluster
	for _, name := range slices.Sorted(maps.Keys(l.registry)) {
		w := l.registry[name]
		var u []int
		for _, s := range used[name] {
			// A worker that came back with fewer slots: ranks on the
			// slots it no longer has are being failed over anyway.
			if s < w.info.Slots && !slices.Contains(u, s) {
				u = append(u, s)
			}
		}
		c.Workers = append(c.Workers, sched.Worker{Name: name, Address: w.info.Host, Slots: w.info.Slots, Used: u, Labels: w.info.Labels, Spare: sched.IsSpare(w.info.Labels)})
	}
	return c
}

func (l *loop) publishWorkers() {
	used := l.used()
	var ws []*ternv1.Worker
	for _, name := range slices.Sorted(maps.Keys(l.registry)) {
		w := l.registry[name]
		wk := &ternv1.Worker{
			Name: name, Host: w.info.Host, Slots: int32(w.info.Slots), UsedSlots: int32(len(used[name])),
			Labels: maps.Clone(w.info.Labels), Connected: l.sessions[name] != nil, Pid: int32(w.info.Pid),
		}
		if !w.info.Registered.IsZero() {
			wk.Registered = timestamppb.New(w.info.Registered)
		}
		ws = append(ws, wk)
	}
	l.views.putWorkers(ws)
}
