package spec

import "fmt"

// Limits of spec.snapshot. MaxSnapshotDataShards keeps a fragment large
// enough to be worth a message and the decode matrix small;
// MaxSnapshotTolerate is beyond any sensible protection group (research
// fault-tolerance.md §10.1: m=2 already gives ~6e-9 per failure).
const (
	MaxSnapshotDataShards = 32
	MaxSnapshotTolerate   = 8
)

// SnapshotSpec is spec.snapshot: the in-memory snapshots that let a job
// resume after a process crash (L0, a local copy) or after losing whole
// workers (L1, Reed-Solomon fragments on peers), without touching disk.
// Durable checkpoints are spec.checkpoint. A job that leaves the section
// out gets the defaults (Snapshot returns them).
type SnapshotSpec struct {
	EverySteps     int `json:"everySteps" default:"1" desc:"Stage each rank's whole state (weights, optimizer state, data cursor, RNG, step) into a local in-memory copy every this many steps. A recovery restores only a committed step, and the coordinator commits only the steps that go to peers (every peerEverySteps, once every rank has sent them): the staged copies in between are not restore points, so a lost worker or a crashed rank costs up to peerEverySteps steps of work, and with peerEverySteps 0 (or a single rank) nothing is committed and a recovery falls back to the durable checkpoint. 0 turns in-memory snapshots off."`
	PeerEverySteps int `json:"peerEverySteps" default:"10" desc:"Every this many steps, also split the staged state into Reed-Solomon fragments held by peers on other workers (L1: survives losing whole workers). A multiple of everySteps; 0 keeps only the local copy. Ignored with one rank (no peers)."`
	Tolerate       int `json:"tolerate" default:"1" desc:"m: how many workers may be lost at once with every rank's state still recoverable from its local copy or its peers' fragments. Each rank sends dataShards+tolerate-1 fragments, each 1/dataShards of its state, to as many other workers, in distinct failure domains where possible; so it needs at least that many other workers."`
	DataShards     int `json:"dataShards" default:"derived" desc:"k: how many data fragments a rank's state is split into; any k of its fragments rebuild it. Larger k sends less ((k+tolerate-1)/k of the state per peer snapshot) but involves more peers. Default: min(8, other workers - tolerate + 1); where workers carry failure-domain labels (rack, node) and the widest level has enough domains for k >= 2, min(8, domains - tolerate) at that level, so a rank's fragments sit in distinct racks."`
}

// SnapshotSettings returns the job's snapshot settings, the defaults when
// the section is absent.
func (s *JobSpec) SnapshotSettings() SnapshotSpec {
	if s.Snapshot != nil {
		return *s.Snapshot
	}
	return SnapshotSpec{EverySteps: 1, PeerEverySteps: 10, Tolerate: 1}
}

// snapshot validates spec.snapshot against the job's world size
// (parallel.data × parallel.pipeline ranks). A job never has more workers
// than ranks, so a layout that cannot work even with one rank per worker
// is refused here; the placement at run time checks the actual workers.
func (v validator) snapshot(s *JobSpec) {
	if s.Snapshot == nil {
		return
	}
	c := *s.Snapshot
	v.minInt("spec.snapshot.everySteps", c.EverySteps, 0)
	v.minInt("spec.snapshot.peerEverySteps", c.PeerEverySteps, 0)
	switch {
	case c.PeerEverySteps > 0 && c.EverySteps == 0:
		v.es.add("spec.snapshot.peerEverySteps", "%d needs a staged local copy to split, but everySteps is 0; set everySteps >= 1 or peerEverySteps: 0", c.PeerEverySteps)
	case c.PeerEverySteps > 0 && c.EverySteps > 0 && c.PeerEverySteps%c.EverySteps != 0:
		lo := max(c.EverySteps, c.PeerEverySteps/c.EverySteps*c.EverySteps)
		v.es.add("spec.snapshot.peerEverySteps", "%d is not a multiple of everySteps (%d): peers get fragments of a staged copy; use %d or %d", c.PeerEverySteps, c.EverySteps, lo, lo+c.EverySteps)
	}
	if c.Tolerate < 1 || c.Tolerate > MaxSnapshotTolerate {
		v.es.add("spec.snapshot.tolerate", "must be between 1 and %d, got %d", MaxSnapshotTolerate, c.Tolerate)
		return
	}
	if c.DataShards < 0 || c.DataShards > MaxSnapshotDataShards {
		v.es.add("spec.snapshot.dataShards", "must be between 1 and %d (0 or absent: derived), got %d", MaxSnapshotDataShards, c.DataShards)
		return
	}
	world := max(s.Parallel.Data, 1) * max(s.Parallel.Pipeline, 1)
	if world < 2 || c.PeerEverySteps == 0 {
		return
	}
	if msg := SnapshotLayoutError(world-1, c.Tolerate, c.DataShards); msg != "" {
		path := "spec.snapshot.tolerate"
		if c.DataShards > 0 && c.Tolerate <= world-1 {
			path = "spec.snapshot.dataShards"
		}
		v.es.add(path, "%s", msg)
	}
}

// SnapshotLayoutError says why k data fragments (0: derived) and
// tolerance m cannot be placed when each rank has peers other failure
// domains to send to, and what would work; "" when they can. A rank sends
// k+m-1 fragments to as many distinct domains other than its own.
func SnapshotLayoutError(peers, m, k int) string {
	if m > peers {
		return fmt.Sprintf("tolerate %d needs at least %d other workers per rank, but there are %d (a job of %d ranks): use tolerate <= %d, or more ranks", m, m, peers, peers+1, max(peers, 1))
	}
	if k > 0 && k+m-1 > peers {
		return fmt.Sprintf("dataShards %d with tolerate %d sends %d fragments to distinct other workers, but there are %d: use dataShards <= %d, or leave it out (derived)", k, m, k+m-1, peers, peers-m+1)
	}
	return ""
}
