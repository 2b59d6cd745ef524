package snapshot

import (
	"fmt"
	"slices"
	"sort"
)

// Commit protocol of peer snapshots (research fault-tolerance.md §8.4), as
// a pure state machine in the style of etcd's raft: no I/O, no clock, no
// goroutines. The coordinator feeds it events (a rank's report, the result
// of its etcd write, a lost rank) and carries out what it returns.
//
//  1. After step s (optimizer applied), each rank stages its state as
//     generation s, keeps it locally, sends its fragments to their
//     holders, and reports {s, state size and CRC, fragment CRCs}.
//  2. Once every rank has reported s, the tracker proposes the manifest of
//     s (placement + hashes). The coordinator writes it with committed
//     step s in one etcd transaction fenced by its election revision, and
//     tells the tracker (Persisted). Only then is s committed, and
//     generations older than s may be freed (Free): until then every
//     holder and every rank keeps two generations, the committed one and
//     the newest staged one.
//  3. When a rank is lost, every step not yet committed is abandoned:
//     survivors roll back to the committed step (their local copy of it)
//     and the replacement rebuilds it from fragments. The epoch moves on,
//     and reports of an older epoch (a paused worker waking up) are
//     refused, so a step that did not commit is never applied anywhere.

// Report is one rank's report of a staged generation.
type Report struct {
	Rank         int
	Step         int64
	Epoch        uint64
	StateBytes   int64
	StateCRC     uint32
	FragmentCRCs []uint32 // by fragment index, Code.Fragments() of them
}

// Action is what the tracker asks the caller to do.
type Action struct {
	Kind ActionKind
	Step int64
	// Manifest is set for Propose: write it with committed step Step in
	// one fenced transaction, then call Persisted(Step).
	Manifest *PeerManifest
}

// ActionKind says what an Action asks for.
type ActionKind int

const (
	// Propose: persist Manifest as committed step Step.
	Propose ActionKind = iota + 1
	// Free: every generation older than Step may be dropped by ranks and
	// holders (Step is committed).
	Free
	// Abandon: generation Step will never commit (a rank moved past it);
	// holders may drop it.
	Abandon
	// Rollback: a rank was lost; every survivor restores committed step
	// Step (-1: none committed, fall back to the durable checkpoint) and
	// the replacement rebuilds it from fragments.
	Rollback
)

func (k ActionKind) String() string {
	switch k {
	case Propose:
		return "propose"
	case Free:
		return "free"
	case Abandon:
		return "abandon"
	case Rollback:
		return "rollback"
	}
	return fmt.Sprintf("action(%d)", int(k))
}

func (a Action) String() string { return fmt.Sprintf("%v %d", a.Kind, a.Step) }

// Tracker is the coordinator's state of one job's peer snapshots in one
// placement. Not safe for concurrent use; the caller serialises events.
type Tracker struct {
	job       string
	placement *Placement
	workers   []string // sorted worker ids, the manifest's table
	epoch     uint64
	committed int64 // -1: none
	proposed  int64 // -1: none in flight
	// pending[s][rank] is rank's report of s; newest[rank] the newest
	// step rank reported in this epoch.
	pending map[int64]map[int]*Report
	newest  []int64
}

// NewTracker starts tracking job under placement p at epoch, with
// committed the last committed step (-1 for none), as read back from the
// store after a coordinator restart.
func NewTracker(job string, p *Placement, epoch uint64, committed int64) (*Tracker, error) {
	if p == nil || len(p.Holders) == 0 {
		return nil, fmt.Errorf("snapshot tracker for job %q: no placement", job)
	}
	if committed < -1 {
		return nil, fmt.Errorf("snapshot tracker for job %q: committed step %d (want -1 for none, or >= 0)", job, committed)
	}
	t := &Tracker{job: job, placement: p, epoch: epoch, committed: committed, proposed: -1, pending: map[int64]map[int]*Report{}}
	for w := range p.Load {
		t.workers = append(t.workers, w)
	}
	sort.Strings(t.workers)
	t.newest = make([]int64, len(p.Holders))
	for i := range t.newest {
		t.newest[i] = -1
	}
	return t, nil
}

// Committed is the last committed step, -1 for none.
func (t *Tracker) Committed() int64 { return t.committed }

// Epoch is the tracker's current epoch.
func (t *Tracker) Epoch() uint64 { return t.epoch }

// Pending lists the staged steps some rank reported and that may still
// commit, oldest first.
func (t *Tracker) Pending() []int64 {
	var s []int64
	for step := range t.pending {
		s = append(s, step)
	}
	slices.Sort(s)
	return s
}

// Reported lists the ranks that reported step, in rank order.
func (t *Tracker) Reported(step int64) []int {
	var rs []int
	for r := range t.pending[step] {
		rs = append(rs, r)
	}
	slices.Sort(rs)
	return rs
}

// Report records a rank's report. It refuses reports of another epoch,
// of a step not newer than the committed one or than the rank's last
// report, a report while the rank's previous generation is still
// outstanding (a rank stages one generation at a time: it keeps the
// committed one and at most one newer), and malformed ones; the error
// says which.
func (t *Tracker) Report(r Report) ([]Action, error) {
	c := t.placement.Code
	switch {
	case r.Rank < 0 || r.Rank >= len(t.newest):
		return nil, fmt.Errorf("snapshot report: rank %d is not in the job (ranks 0..%d)", r.Rank, len(t.newest)-1)
	case r.Epoch != t.epoch:
		return nil, fmt.Errorf("snapshot report of rank %d step %d: epoch %d, the job is in epoch %d (a stale rank must not report)", r.Rank, r.Step, r.Epoch, t.epoch)
	case r.Step <= t.committed:
		return nil, fmt.Errorf("snapshot report of rank %d step %d: step %d is already committed", r.Rank, r.Step, t.committed)
	case r.Step <= t.newest[r.Rank]:
		return nil, fmt.Errorf("snapshot report of rank %d step %d: it already reported step %d", r.Rank, r.Step, t.newest[r.Rank])
	case t.outstanding(r.Rank):
		return nil, fmt.Errorf("snapshot report of rank %d step %d: its step %d is still outstanding (stage one generation at a time)", r.Rank, r.Step, t.newest[r.Rank])
	case len(r.FragmentCRCs) != c.Fragments():
		return nil, fmt.Errorf("snapshot report of rank %d step %d: %d fragment hashes, the code %v has %d fragments", r.Rank, r.Step, len(r.FragmentCRCs), c, c.Fragments())
	case r.StateBytes <= 0:
		return nil, fmt.Errorf("snapshot report of rank %d step %d: state of %d bytes", r.Rank, r.Step, r.StateBytes)
	}
	t.newest[r.Rank] = r.Step
	if t.pending[r.Step] == nil {
		t.pending[r.Step] = map[int]*Report{}
	}
	rc := r
	rc.FragmentCRCs = slices.Clone(r.FragmentCRCs)
	t.pending[r.Step][r.Rank] = &rc
	if len(t.pending[r.Step]) == len(t.newest) && t.proposed < 0 {
		return []Action{t.propose(r.Step)}, nil
	}
	return nil, nil
}

// outstanding reports whether rank's newest reported step may still
// commit.
func (t *Tracker) outstanding(rank int) bool {
	s := t.newest[rank]
	return s > t.committed && t.pending[s] != nil
}

// StageFailed records that rank could not stage step (or that the caller
// gave up waiting for its report: the core has no clock): the step can
// never commit and is abandoned everywhere, so ranks may stage again.
func (t *Tracker) StageFailed(rank int, step int64) ([]Action, error) {
	if rank < 0 || rank >= len(t.newest) {
		return nil, fmt.Errorf("snapshot: stage failure of rank %d: not in the job (ranks 0..%d)", rank, len(t.newest)-1)
	}
	if step == t.proposed {
		return nil, fmt.Errorf("snapshot: stage failure of rank %d step %d: every rank reported it and it is being written", rank, step)
	}
	if step <= t.committed {
		return nil, nil // committed after all, or older: nothing to undo
	}
	// Holders may have some of its fragments even when no rank reported
	// it, so the abandon goes out in every case.
	delete(t.pending, step)
	return []Action{{Kind: Abandon, Step: step}}, nil
}

func (t *Tracker) propose(step int64) Action {
	reps := t.pending[step]
	m := &PeerManifest{Job: t.job, Step: step, Epoch: t.epoch, Code: t.placement.Code, Workers: t.workers, Ranks: make([]RankEntry, len(reps))}
	idx := make(map[string]int, len(t.workers))
	for i, w := range t.workers {
		idx[w] = i
	}
	for r := range m.Ranks {
		rep := reps[r]
		e := RankEntry{StateBytes: rep.StateBytes, StateCRC: rep.StateCRC, FragmentCRCs: rep.FragmentCRCs}
		for _, h := range t.placement.Holders[r] {
			e.Holders = append(e.Holders, idx[h])
		}
		m.Ranks[r] = e
	}
	t.proposed = step
	return Action{Kind: Propose, Step: step, Manifest: m}
}

// Persisted tells the tracker the proposed step was written: it is now
// committed, and generations older than it may be freed. A newer step
// that every rank has already reported is proposed at once.
func (t *Tracker) Persisted(step int64) ([]Action, error) {
	if t.proposed < 0 || step != t.proposed {
		return nil, fmt.Errorf("snapshot commit of step %d: the proposed step is %d (-1: none)", step, t.proposed)
	}
	t.committed, t.proposed = step, -1
	for s := range t.pending {
		if s <= step {
			delete(t.pending, s)
		}
	}
	acts := []Action{{Kind: Free, Step: step}}
	for _, s := range t.Pending() {
		if len(t.pending[s]) == len(t.newest) {
			acts = append(acts, t.propose(s))
			break
		}
	}
	return acts, nil
}

// WriteFailed tells the tracker the proposed step could not be written
// (the etcd transaction failed, or its fence no longer held): the step is
// not committed and is abandoned; the last committed one stays.
func (t *Tracker) WriteFailed(step int64) ([]Action, error) {
	if t.proposed < 0 || step != t.proposed {
		return nil, fmt.Errorf("snapshot commit of step %d failed: the proposed step is %d (-1: none)", step, t.proposed)
	}
	t.proposed = -1
	delete(t.pending, step)
	return []Action{{Kind: Abandon, Step: step}}, nil
}

// Lost tells the tracker that ranks were lost (their worker died, or a
// collective was aborted): the epoch moves to epoch, which must be newer;
// every uncommitted step is abandoned, and every rank rolls back to the
// committed step. A proposal in flight must be settled (Persisted or
// WriteFailed) first, since only the caller knows whether it landed.
func (t *Tracker) Lost(epoch uint64, ranks ...int) ([]Action, error) {
	if epoch <= t.epoch {
		return nil, fmt.Errorf("snapshot: lost ranks %v: new epoch %d must be greater than %d", ranks, epoch, t.epoch)
	}
	if t.proposed >= 0 {
		return nil, fmt.Errorf("snapshot: lost ranks %v while step %d is being written: settle the write first", ranks, t.proposed)
	}
	for _, r := range ranks {
		if r < 0 || r >= len(t.newest) {
			return nil, fmt.Errorf("snapshot: lost rank %d is not in the job (ranks 0..%d)", r, len(t.newest)-1)
		}
	}
	var acts []Action
	for _, s := range t.Pending() {
		acts = append(acts, Action{Kind: Abandon, Step: s})
	}
	t.pending = map[int64]map[int]*Report{}
	t.epoch = epoch
	for i := range t.newest {
		t.newest[i] = -1
	}
	return append(acts, Action{Kind: Rollback, Step: t.committed}), nil
}
