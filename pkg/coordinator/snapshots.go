package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ternml/tern/pkg/coordinator/job"
	"github.com/ternml/tern/pkg/coordinator/store"
	"github.com/ternml/tern/pkg/snapshot"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// In-memory snapshots (pkg/snapshot, research fault-tolerance.md §8.4).
// The workers keep each rank's staged state (the local copy) and the
// Reed-Solomon fragments of other ranks' states across attempts; this
// file is the coordinator's side:
//
//   - at every launch it places the fragments of the attempt
//     (snapshot.Place over the attempt's workers) and tells each rank,
//     in StartRank, where to send them;
//   - it feeds the ranks' snapshot reports to a snapshot.Tracker and,
//     once every rank reported step s, commits s with the compact peer
//     manifest in one leader-fenced etcd transaction
//     (store.Leader.CommitSnapshot), then tells the workers to free
//     older generations; a step that did not commit is abandoned;
//   - on a recovery it decides, before launching, where each rank's state
//     of the committed step is: on its worker (local), or in at least k
//     fragments on live workers of the new attempt (peers). If some rank
//     has neither, every rank falls back to the durable checkpoint, so
//     that all of them continue from the same step; an event says why.
//
// Only the committed step is ever restored, so a step that did not commit
// is never applied anywhere.

// snapLevels are the worker labels taken as failure domains, widest
// first: fragments of a rank go to distinct racks, then nodes, where the
// workers say which they are in.
var snapLevels = []string{"rack", "node"}

// snapState is the coordinator's view of one job's snapshots.
type snapState struct {
	// committed is the committed step (-1: none), with its manifest
	// and the worker each rank ran on when it staged it (its local copy).
	committed int64
	manifest  *snapshot.PeerManifest
	owners    []string
	// incarnations[w] is worker w's registration (host, pid, time) when
	// the step committed: a worker that restarted since under the same
	// name holds none of it.
	incarnations map[string]string
	// unusable is a committed step a rank failed to restore: the next
	// recovery takes the durable checkpoint instead (-1: none).
	unusable int64
	// tracker follows the current attempt's reports; nil when the
	// attempt takes no peer snapshots. attempt is the attempt it tracks.
	tracker   *snapshot.Tracker
	placement *snapshot.Placement
	attempt   int
	// plans are the current attempt's StartRank snapshot plans.
	plans []*ternv1.SnapshotPlan
	// recovery times the current recovery, until training resumes.
	recovery *recoveryTiming
}

// recoveryTiming is what the TrainingResumed event reports.
type recoveryTiming struct {
	attempt     int
	detected    time.Time // the failure, as the coordinator saw it
	launched    time.Time
	source      string // "memory" or "checkpoint"
	step        int64  // the committed snapshot step restored (-1: none)
	lostFrom    int64  // the last step every rank had completed
	started     int
	restoreMS   float64
	fromSources map[string][]int
}

// snapCommitRecord is the manifest value stored in etcd: the compact
// peer manifest and the owners of the local copies.
type snapCommitRecord struct {
	Manifest     []byte            `json:"manifest"`
	Owners       []string          `json:"owners"`
	Incarnations map[string]string `json:"incarnations,omitempty"`
}

// incarnation names one run of a registered worker; "" when it is not
// registered.
func (l *loop) incarnation(w string) string {
	reg := l.registry[w]
	if reg == nil {
		return ""
	}
	return fmt.Sprintf("%s/%d/%d", reg.info.Host, reg.info.Pid, reg.info.Registered.UnixNano())
}

// loadSnapshot reads a job's committed snapshot back from etcd.
func (l *loop) loadSnapshot(ctx context.Context, e *entry) error {
	e.snap = &snapState{committed: -1, unusable: -1}
	c, err := l.st.GetSnapshot(ctx, e.name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var rec snapCommitRecord
	if err := json.Unmarshal(c.Manifest, &rec); err != nil {
		return fmt.Errorf("committed snapshot: %w", err)
	}
	m, err := snapshot.UnmarshalPeerManifest(rec.Manifest)
	if err != nil {
		return fmt.Errorf("committed snapshot: %w", err)
	}
	e.snap.committed, e.snap.manifest, e.snap.owners, e.snap.incarnations = int64(c.Step), m, rec.Owners, rec.Incarnations
	return nil
}

// planSnapshots prepares the snapshots of attempt run, launched by a
// recovery or not: the placement of its fragments, its tracker, and each
// rank's plan, restore instructions included.
func (l *loop) planSnapshots(e *entry, run *attempt, recovery bool) {
	if e.snap == nil {
		e.snap = &snapState{committed: -1, unusable: -1}
	}
	ss := e.snap
	if ss.attempt == run.n && ss.plans != nil {
		return // the orders are re-sent after a reconnect
	}
	ss.attempt, ss.tracker, ss.placement, ss.plans = run.n, nil, nil, nil
	set := e.spec.Spec.SnapshotSettings()
	if set.EverySteps == 0 {
		return
	}
	world := len(run.assignment)
	rankWorkers := make([]string, world)
	for r, p := range run.assignment {
		rankWorkers[r] = p.Worker
	}
	if world > 1 && set.PeerEverySteps > 0 {
		in := snapshot.PlacementInput{RankWorker: rankWorkers, Levels: snapLevels, Tolerate: set.Tolerate, DataShards: set.DataShards}
		for _, w := range run.workers() {
			pw := snapshot.PlacementWorker{ID: w}
			if reg := l.registry[w]; reg != nil {
				pw.Labels = reg.info.Labels
			}
			in.Workers = append(in.Workers, pw)
		}
		p, err := snapshot.Place(in)
		if err == nil {
			ss.tracker, err = snapshot.NewTracker(e.name, p, uint64(run.n), ss.committed)
		}
		if err != nil {
			l.note(e, job.Warning, "SnapshotsLocalOnly", fmt.Sprintf("attempt %d keeps in-memory snapshots on each rank's own worker only: %v", run.n, err))
			ss.tracker = nil
		} else {
			ss.placement = p
		}
	}
	restore, source := l.restorePlan(e, run, recovery)
	if ss.tracker == nil && !restore {
		// Only steps committed through the peers are restore points, so
		// an attempt that sends no fragments (one rank, or no placement)
		// keeps no snapshots at all.
		return
	}
	var manifest []byte
	if restore {
		var err error
		if manifest, err = snapshot.MarshalPeerManifest(ss.manifest); err != nil {
			l.log.Error("committed manifest does not encode", "job", e.name, "err", err)
			restore = false
		}
	}
	ss.plans = make([]*ternv1.SnapshotPlan, world)
	for r := range world {
		pl := &ternv1.SnapshotPlan{RankWorkers: rankWorkers, RestoreStep: ss.committed}
		if ss.placement != nil {
			pl.DataShards, pl.Tolerate = int32(ss.placement.Code.K), int32(ss.placement.Code.M)
			for _, h := range ss.placement.Holders[r] {
				pl.HolderRanks = append(pl.HolderRanks, int32(snapshot.ServingRank(rankWorkers, h)))
			}
		}
		if restore {
			pl.Restore, pl.Manifest, pl.Source = true, manifest, source[r]
		}
		ss.plans[r] = pl
	}
}

// snapshotPlan is rank's plan in StartRank, nil when the job takes no
// in-memory snapshots.
func (l *loop) snapshotPlan(e *entry, run *attempt, rank int) *ternv1.SnapshotPlan {
	if e.snap == nil || e.snap.attempt != run.n || e.snap.plans == nil {
		l.planSnapshots(e, run, false)
	}
	if e.snap.plans == nil || rank >= len(e.snap.plans) {
		return nil
	}
	return e.snap.plans[rank]
}

// restorePlan decides whether a recovery restores the committed snapshot
// and where each rank finds its state; it emits the event that says so.
func (l *loop) restorePlan(e *entry, run *attempt, recovery bool) (bool, []string) {
	ss := e.snap
	if !recovery {
		return false, nil
	}
	rt := &recoveryTiming{attempt: run.n, launched: time.Now(), step: -1, lostFrom: e.j.CommittedStep, source: "checkpoint", fromSources: map[string][]int{}}
	if e.meta.FailureAt != nil {
		rt.detected = *e.meta.FailureAt
	} else {
		rt.detected = rt.launched
	}
	ss.recovery = rt
	switch {
	case ss.committed < 0 || ss.manifest == nil:
		l.note(e, job.Warning, "RestoreFromCheckpoint", fmt.Sprintf("attempt %d resumes from the durable checkpoint: no in-memory snapshot was committed yet", run.n))
		return false, nil
	case len(ss.manifest.Ranks) != len(run.assignment):
		l.note(e, job.Warning, "RestoreFromCheckpoint", fmt.Sprintf("attempt %d runs on another layout (DP %d × PP %d) than the committed snapshot's ranks; every rank resumes from the durable checkpoint, resharded to it",
			run.n, len(run.assignment)/e.j.Spec.PP, e.j.Spec.PP))
		return false, nil
	case ss.committed == ss.unusable:
		l.note(e, job.Warning, "RestoreFromCheckpoint", fmt.Sprintf("attempt %d resumes from the durable checkpoint: a rank failed to restore committed snapshot step %d", run.n, ss.committed))
		return false, nil
	}
	m := ss.manifest
	// A worker holds its part of the committed step if it is registered
	// now as it was when the step committed (not restarted since).
	live := map[string]bool{}
	for _, w := range run.workers() {
		if inc := l.incarnation(w); inc != "" && (ss.incarnations == nil || ss.incarnations[w] == inc) {
			live[w] = true
		}
	}
	source := make([]string, len(run.assignment))
	var short []string
	var local, peers []int
	for r, p := range run.assignment {
		if r < len(ss.owners) && ss.owners[r] == p.Worker && live[p.Worker] {
			source[r] = "local"
			local = append(local, r)
			continue
		}
		have := 0
		if r < len(m.Ranks) {
			for i := range m.Ranks[r].Holders {
				if h := m.HolderOf(r, i); live[h] && h != p.Worker {
					have++
				}
			}
		}
		if have < m.Code.K || len(m.Ranks) != len(run.assignment) {
			short = append(short, fmt.Sprintf("rank %d has %d of the %d fragments it needs on live workers", r, have, m.Code.K))
			continue
		}
		source[r] = "peers"
		peers = append(peers, r)
	}
	if len(short) > 0 {
		l.note(e, job.Warning, "SnapshotUnrecoverable", fmt.Sprintf("attempt %d cannot restore committed snapshot step %d from memory (%s: more workers were lost than spec.snapshot.tolerate=%d covers); every rank resumes from the durable checkpoint instead", run.n, ss.committed, strings.Join(short, "; "), m.Code.M))
		return false, nil
	}
	rt.source, rt.step = "memory", ss.committed
	msg := fmt.Sprintf("attempt %d restores committed snapshot step %d from memory, nothing from disk:", run.n, ss.committed)
	if len(local) > 0 {
		msg += fmt.Sprintf(" ranks %v from their workers' local copies", local)
	}
	if len(peers) > 0 {
		if len(local) > 0 {
			msg += ";"
		}
		msg += fmt.Sprintf(" ranks %v from %d of %d fragments on their peers (k=%d, m=%d)", peers, m.Code.K, m.Code.Fragments(), m.Code.K, m.Code.M)
	}
	l.note(e, job.Normal, "RestoreFromMemory", msg)
	return true, source
}

// onSnapshot feeds one rank's snapshot report to the tracker and carries
// out what follows.
func (l *loop) onSnapshot(ctx context.Context, e *entry, rank int, worker string, r *ternv1.RankSnapshot) error {
	if e.snap == nil || e.snap.attempt != e.run.n {
		// A coordinator that took over tracks the running attempt from
		// its first report on (the placement is a pure function of it).
		l.planSnapshots(e, e.run, false)
	}
	ss := e.snap
	if ss.tracker == nil {
		l.send(worker, abandonMsg(e.name, r.Step))
		return nil
	}
	var acts []snapshot.Action
	var err error
	if r.Error != "" {
		l.log.Warn("snapshot not staged", "job", e.name, "rank", rank, "step", r.Step, "err", r.Error)
		acts, err = ss.tracker.StageFailed(rank, r.Step)
	} else {
		acts, err = ss.tracker.Report(snapshot.Report{Rank: rank, Step: r.Step, Epoch: r.Epoch, StateBytes: r.StateBytes, StateCRC: r.StateCrc32C, FragmentCRCs: r.FragmentCrc32C})
	}
	if err != nil {
		// A replay after a reconnect is refused harmlessly; a step the
		// tracker will never commit is dropped on the rank's worker so
		// that it stages again.
		l.log.Debug("snapshot report refused", "job", e.name, "rank", rank, "step", r.Step, "err", err)
		if r.Step < ss.tracker.Committed() {
			l.send(worker, abandonMsg(e.name, r.Step))
		}
		return nil
	}
	return l.carrySnapshot(ctx, e, acts)
}

// carrySnapshot carries out the tracker's actions.
func (l *loop) carrySnapshot(ctx context.Context, e *entry, acts []snapshot.Action) error {
	for len(acts) > 0 {
		a := acts[0]
		acts = acts[1:]
		switch a.Kind {
		case snapshot.Propose:
			more, err := l.commitSnapshot(ctx, e, a)
			if err != nil {
				return err
			}
			acts = append(acts, more...)
		case snapshot.Free:
			for _, w := range e.run.workers() {
				l.send(w, committedMsg(e.name, a.Step))
			}
		case snapshot.Abandon:
			for _, w := range e.run.workers() {
				l.send(w, abandonMsg(e.name, a.Step))
			}
		case snapshot.Rollback:
			// Recoveries build a new tracker at launch instead.
		}
	}
	l.publish(e)
	return nil
}

// commitSnapshot writes the proposed step with its manifest in one
// fenced etcd transaction, then tells the tracker how it went. A write
// the fence refused ends leadership (the error is returned); any other
// failure abandons the step.
func (l *loop) commitSnapshot(ctx context.Context, e *entry, a snapshot.Action) ([]snapshot.Action, error) {
	ss := e.snap
	owners := make([]string, len(e.run.assignment))
	for r, p := range e.run.assignment {
		owners[r] = p.Worker
	}
	inc := map[string]string{}
	for _, w := range e.run.workers() {
		inc[w] = l.incarnation(w)
	}
	mb, err := snapshot.MarshalPeerManifest(a.Manifest)
	var rec []byte
	if err == nil {
		rec, err = json.Marshal(snapCommitRecord{Manifest: mb, Owners: owners, Incarnations: inc})
	}
	if err == nil {
		cctx, cancel := etcdCtx(ctx)
		_, err = l.leader.CommitSnapshot(cctx, e.name, uint64(a.Step), rec)
		cancel()
		if errors.Is(err, store.ErrNotLeader) {
			return nil, fmt.Errorf("coordinator: commit snapshot step %d of job %s: %w", a.Step, e.name, err)
		}
	}
	if err != nil {
		l.log.Warn("snapshot step not committed", "job", e.name, "step", a.Step, "err", err)
		return ss.tracker.WriteFailed(a.Step)
	}
	ss.committed, ss.manifest, ss.owners, ss.incarnations = a.Step, a.Manifest, owners, inc
	return ss.tracker.Persisted(a.Step)
}

// onRestored records where a rank of a recovered attempt got its state.
func (l *loop) onRestored(e *entry, rank int, st *ternv1.RankStarted) {
	ss := e.snap
	if ss == nil || ss.recovery == nil || ss.recovery.attempt != e.run.n {
		return
	}
	rt := ss.recovery
	rt.started++
	rt.restoreMS = max(rt.restoreMS, st.RestoreMs)
	rt.fromSources[st.RestoredFrom] = append(rt.fromSources[st.RestoredFrom], rank)
	e.meta.Restores = slices.DeleteFunc(e.meta.Restores, func(r restoreMeta) bool { return r.Attempt == e.run.n && r.Rank == rank })
	e.meta.Restores = append(e.meta.Restores, restoreMeta{Attempt: e.run.n, Rank: rank, Source: st.RestoredFrom, Step: st.StartStep, RestoreMS: st.RestoreMs})
	slices.SortFunc(e.meta.Restores, func(a, b restoreMeta) int { return cmp.Or(a.Attempt-b.Attempt, a.Rank-b.Rank) })
	if n := len(e.meta.Restores); n > maxEvents {
		e.meta.Restores = slices.Clone(e.meta.Restores[n-maxEvents:])
	}
	e.metaDirty = true
}

// onResumedStep emits TrainingResumed at the first step a recovered
// attempt completes: how long the recovery took and what it cost.
func (l *loop) onResumedStep(e *entry, step int64) {
	ss := e.snap
	if ss == nil || ss.recovery == nil || ss.recovery.attempt != e.run.n {
		return
	}
	rt := ss.recovery
	ss.recovery = nil
	now := time.Now()
	var parts []string
	for _, src := range []string{"local", "peers", "checkpoint", "initial"} {
		if rs := rt.fromSources[src]; len(rs) > 0 {
			parts = append(parts, fmt.Sprintf("%s %v", src, rs))
		}
	}
	start := step - 1
	l.note(e, job.Normal, "TrainingResumed", fmt.Sprintf(
		"attempt %d completed step %d %.2f s after the failure was detected (placement and launch %.2f s, slowest restore %.1f ms); restored step %d (%s), %d completed steps redone",
		rt.attempt, step, now.Sub(rt.detected).Seconds(), rt.launched.Sub(rt.detected).Seconds(), rt.restoreMS, start, strings.Join(parts, ", "), max(rt.lostFrom-start, 0)))
}

// note records a job event that the coordinator, not the state machine,
// derives; it is stored with the job's record at its next write.
func (l *loop) note(e *entry, sev job.Severity, reason, msg string) {
	e.meta.Events = append(e.meta.Events, eventRecord{Time: time.Now(), Severity: string(sev), Reason: reason, Message: msg})
	if n := len(e.meta.Events); n > maxEvents {
		e.meta.Events = slices.Clone(e.meta.Events[n-maxEvents:])
	}
	e.metaDirty = true
	l.emit(e, job.Emit{Severity: sev, Reason: reason, Message: msg})
}

func committedMsg(jobName string, step int64) *ternv1.SessionResponse {
	return &ternv1.SessionResponse{Msg: &ternv1.SessionResponse_SnapshotCommitted{SnapshotCommitted: &ternv1.SnapshotCommitted{Job: jobName, Step: step}}}
}

func abandonMsg(jobName string, step int64) *ternv1.SessionResponse {
	return &ternv1.SessionResponse{Msg: &ternv1.SessionResponse_SnapshotCommitted{SnapshotCommitted: &ternv1.SnapshotCommitted{Job: jobName, Step: step, Abandoned: true}}}
}

// restoreFailed notes that a rank of a recovered attempt could not
// restore the committed step, so that the next recovery does not try
// again what failed.
func (l *loop) restoreFailed(e *entry, why string) {
	if ss := e.snap; ss != nil && ss.recovery != nil && ss.recovery.attempt == e.run.n && ss.recovery.source == "memory" && strings.Contains(why, "restore step") {
		ss.unusable = ss.recovery.step
	}
}

// avoided is the workers a replacement keeps away from, less those that
// have come back as a new process since the job's last committed
// snapshot (restarted by their node's supervisor, or re-registered after
// a pause): the fault was the process's, and the restarted worker may
// take the rank back, as a spare would (it restores from its peers).
func (l *loop) avoided(e *entry, avoid []string) []string {
	ss := e.snap
	if ss == nil || ss.incarnations == nil {
		return avoid
	}
	var out []string
	for _, w := range avoid {
		was, known := ss.incarnations[w]
		if now := l.incarnation(w); known && now != "" && now != was {
			continue
		}
		out = append(out, w)
	}
	return out
}
