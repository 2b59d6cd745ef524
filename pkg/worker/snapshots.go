package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Restore sources, as reported in RankStarted.restored_from.
const (
	sourceLocal      = "local"
	sourcePeers      = "peers"
	sourceCheckpoint = "checkpoint"
	sourceInitial    = "initial"
)

// jobSnaps is what this worker keeps of one job's in-memory snapshots.
// It outlives attempts (the agent does), which is what makes a recovery
// cheap: a rank relaunched here restores its local copy of the committed
// step, and the fragments held for other ranks let a replacement
// elsewhere rebuild theirs. It goes when the coordinator says the job is
// over (StopRanks.forget).
type jobSnaps struct {
	holder *snapshot.Holder
	mu     sync.Mutex
	// stagers keep each rank's local generations, by rank of the job.
	stagers map[int]*snapshot.Stager
}

// snapsOf returns job's snapshot cache, creating it.
func (a *Agent) snapsOf(job string) *jobSnaps {
	a.snapMu.Lock()
	defer a.snapMu.Unlock()
	if a.snaps == nil {
		a.snaps = map[string]*jobSnaps{}
	}
	js := a.snaps[job]
	if js == nil {
		js = &jobSnaps{holder: snapshot.NewHolder(), stagers: map[int]*snapshot.Stager{}}
		a.snaps[job] = js
	}
	return js
}

// stager returns rank's stager, creating it.
func (js *jobSnaps) stager(job string, rank int) *snapshot.Stager {
	js.mu.Lock()
	defer js.mu.Unlock()
	s := js.stagers[rank]
	if s == nil {
		s = snapshot.NewStager(job, rank, nil)
		js.stagers[rank] = s
	}
	return s
}

func (js *jobSnaps) each(f func(*snapshot.Stager)) {
	js.mu.Lock()
	ss := make([]*snapshot.Stager, 0, len(js.stagers))
	for _, s := range js.stagers {
		ss = append(ss, s)
	}
	js.mu.Unlock()
	for _, s := range ss {
		f(s)
	}
}

// snapshotCommitted frees (or, abandoned, drops) a generation of the
// job's snapshots on this worker, as the coordinator ordered.
func (a *Agent) snapshotCommitted(m *ternv1.SnapshotCommitted) {
	a.snapMu.Lock()
	js := a.snaps[m.Job]
	a.snapMu.Unlock()
	if js == nil {
		return
	}
	if m.Abandoned {
		js.holder.Abandon(m.Step)
		js.each(func(s *snapshot.Stager) { s.Abandon(m.Step) })
		return
	}
	js.holder.Free(m.Step)
	js.each(func(s *snapshot.Stager) { s.Free(m.Step) })
}

// forgetSnapshots drops a finished job's snapshots. Its stagers close
// once the job's ranks here have ended (a cancelled job's ranks finish
// their current step first, and may stage it).
func (a *Agent) forgetSnapshots(job string) {
	a.snapMu.Lock()
	js := a.snaps[job]
	delete(a.snaps, job)
	a.snapMu.Unlock()
	if js == nil {
		return
	}
	a.mu.Lock()
	var ended []chan struct{}
	for k, rr := range a.ranks {
		if k.job == job {
			ended = append(ended, rr.ended)
		}
	}
	a.mu.Unlock()
	a.bg.Go(func() {
		for _, ch := range ended {
			select {
			case <-ch:
			case <-a.quit: // a rank stuck past the drain timeout
			}
		}
		js.each(func(s *snapshot.Stager) { s.Close() })
	})
}

// snapRun is one rank attempt's use of the job's snapshots: what it
// restores before training and the snapshotter training calls.
type snapRun struct {
	a      *Agent
	rr     *rankRun
	js     *jobSnaps
	stager *snapshot.Stager
	plan   *ternv1.SnapshotPlan
	svc    *snapshot.PeerService
	target *snapshot.PeerTarget
	every  int
	peer   int
	last   int // spec.steps
	// lastPeer is the latest step sent to peers, for a failure report.
	lastPeer atomic.Int64
	// copyErr is a background copy's failure, returned by the next
	// AfterStep (only the training goroutine touches it).
	copyErr error
	stop    chan struct{}
	wg      sync.WaitGroup
}

// newSnapRun prepares the rank's snapshots for this attempt: nil when the
// job takes none or the coordinator sent no plan.
func (a *Agent) newSnapRun(rr *rankRun, job *spec.TrainingJob) *snapRun {
	plan := rr.start.Snapshot
	set := job.Spec.SnapshotSettings()
	if plan == nil || set.EverySteps == 0 {
		return nil
	}
	js := a.snapsOf(rr.key.job)
	sr := &snapRun{a: a, rr: rr, js: js, stager: js.stager(rr.key.job, rr.key.rank), plan: plan, every: set.EverySteps, peer: set.PeerEverySteps, last: job.Spec.Steps, stop: make(chan struct{})}
	if n := len(plan.HolderRanks); n > 0 && sr.peer > 0 {
		t := &snapshot.PeerTarget{Code: snapshot.Code{K: int(plan.DataShards), M: int(plan.Tolerate)}, Epoch: uint64(rr.key.attempt)}
		for _, h := range plan.HolderRanks {
			t.Holders = append(t.Holders, int(h))
		}
		sr.target = t
	}
	sr.lastPeer.Store(-1)
	// Nothing newer than the committed step will ever commit: drop it,
	// here and in what this worker holds for others, so the holder has
	// room for this attempt's generations.
	c := plan.RestoreStep
	js.holder.AbandonAfter(c)
	for _, s := range sr.stager.Steps() {
		if s > c {
			sr.stager.Abandon(s)
		}
	}
	if c >= 0 {
		// c is committed: older generations are of no use any more,
		// even if the message saying so did not arrive.
		js.holder.Free(c)
		sr.stager.Free(c)
	}
	return sr
}

// start serves this worker's held fragments over the attempt's
// transport and forwards dispersal outcomes to the coordinator.
func (sr *snapRun) start(tr comm.Transport) {
	if tr.World() > 1 {
		sr.svc = snapshot.StartPeerService(tr, sr.js.holder)
		sr.stager.SetPeerService(sr.svc)
	}
	sr.wg.Go(sr.forward)
}

// close stops serving and forwarding; a dispersal still in flight fails
// on the closed transport and is dropped with the attempt.
func (sr *snapRun) close() {
	close(sr.stop)
	sr.wg.Wait()
	if sr.svc != nil {
		sr.svc.Close()
	}
}

// forward reports each dispersal of this attempt to the coordinator.
func (sr *snapRun) forward() {
	for {
		select {
		case <-sr.stop:
			return
		case res, ok := <-sr.stager.Results():
			if !ok {
				return // the job's snapshots were dropped
			}
			rep := &ternv1.RankSnapshot{Epoch: uint64(sr.rr.key.attempt)}
			if res.Err != nil {
				step := sr.lastPeer.Load()
				if step < 0 {
					continue // an earlier attempt's, settled by its rollback
				}
				// Settle it here so that staging goes on; the
				// coordinator abandons it on the holders.
				sr.stager.Abandon(step)
				rep.Step, rep.Error = step, oneLine(res.Err.Error())
			} else {
				if res.Report.Epoch != uint64(sr.rr.key.attempt) {
					continue // an earlier attempt's, settled by its rollback
				}
				r := res.Report
				rep.Step, rep.StateBytes, rep.StateCrc32C, rep.FragmentCrc32C = r.Step, r.StateBytes, r.StateCRC, r.FragmentCRCs
			}
			sr.a.report(sr.rr, &ternv1.RankReport{Event: &ternv1.RankReport_Snapshot{Snapshot: rep}})
		}
	}
}

// AfterStep stages the rank's state at the spec's cadence: a local copy
// every snapshot.everySteps, sent to peers too every peerEverySteps
// (train.Snapshotter). The copy runs in the background, overlapping the
// next step's forward and backward passes (WaitCopied). A copy refused
// because the previous peer generation has not committed yet is
// skipped: training goes on.
func (sr *snapRun) AfterStep(step int, capture func() (*snapshot.RankState, error)) error {
	if err := sr.copyErr; err != nil {
		return fmt.Errorf("in-memory snapshot: %w", err)
	}
	if step%sr.every != 0 {
		return nil
	}
	st, err := capture()
	if err != nil {
		return err
	}
	var peers *snapshot.PeerTarget
	// The last step's state is not worth sending: nothing resumes after it.
	if sr.target != nil && step%sr.peer == 0 && int64(step) > sr.plan.RestoreStep && step < sr.last {
		peers = sr.target
	}
	err = sr.stager.StageAsync(st, peers)
	switch {
	case errors.Is(err, snapshot.ErrStageBusy):
		return nil
	case err != nil:
		return err
	}
	if peers != nil {
		sr.lastPeer.Store(int64(step))
	}
	return nil
}

// WaitCopied waits for the background copy (train.SnapshotWaiter).
func (sr *snapRun) WaitCopied() {
	if err := sr.stager.Wait(); err != nil && sr.copyErr == nil {
		sr.copyErr = err
	}
}

// restore returns the committed state this rank continues from, and
// where it came from: its worker's local copy, or k fragments fetched
// from the holders at once (hash-checked, decoded). The restored state
// becomes this rank's local copy of the committed step.
func (sr *snapRun) restore(ctx context.Context) (*snapshot.RankState, string, error) {
	c := sr.plan.RestoreStep
	rank := sr.rr.key.rank
	if b, ok := sr.stager.Local(c); ok {
		st, err := snapshot.UnmarshalState(b)
		if err == nil {
			return st, sourceLocal, nil
		}
		sr.a.logf(sr.rr, "local copy of step %d is unusable (%v); fetching it from peers", c, err)
	}
	if sr.svc == nil {
		return nil, "", fmt.Errorf("restore step %d: no local copy on this worker and no peers to ask", c)
	}
	m, err := snapshot.UnmarshalPeerManifest(sr.plan.Manifest)
	if err != nil {
		return nil, "", fmt.Errorf("restore step %d: %w", c, err)
	}
	if m.Step != c {
		return nil, "", fmt.Errorf("restore step %d: the manifest is of step %d", c, m.Step)
	}
	workers := sr.plan.RankWorkers
	b, err := sr.svc.Restore(ctx, m, rank, func(w string) int { return slices.Index(workers, w) })
	if err != nil {
		return nil, "", fmt.Errorf("restore step %d from peers: %w", c, err)
	}
	st, err := snapshot.UnmarshalState(b)
	if err != nil {
		return nil, "", fmt.Errorf("restore step %d from peers: %w", c, err)
	}
	if err := sr.stager.Stage(st, nil); err != nil {
		sr.a.logf(sr.rr, "restored step %d is not kept as a local copy: %v", c, err)
	} else {
		sr.stager.Free(c)
	}
	return st, sourcePeers, nil
}

// since is the time from t0 in milliseconds.
func since(t0 time.Time) float64 { return float64(time.Since(t0).Microseconds()) / 1e3 }

// oneLine keeps an error report short.
func oneLine(s string) string {
	const maxLen = 1000
	if len(s) > maxLen {
		s = s[:maxLen] + "…"
	}
	return s
}
