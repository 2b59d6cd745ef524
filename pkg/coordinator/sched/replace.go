package sched

import (
	"fmt"
	"slices"
)

// Replace finds new slots for the failed ranks of a running job and keeps
// every other rank where it is: survivors hold their in-memory state and
// their peers' connections, so moving them would only add work.
//
// current is the job's assignment and failed the ranks that must move (in
// any order; duplicates are ignored). The survivors' slots are treated as
// held whether or not c lists them as Used. A failed rank's old slot is
// free only if c says so: list it as Used, or name its worker in avoid, if
// the rank should not come back there.
//
// Failed ranks are taken lowest first, in runs of consecutive stages of
// one replica. Policy for each run:
//
//  1. A worker named in avoid (where a failure happened) only if nothing
//     else has room.
//  2. A Spare worker, or a slot held back by SpareSlots: recovery is what
//     spares are for, so Replace may use all of them.
//  3. A worker with room for the whole run, so its internal pipeline
//     edges stay on one machine; otherwise the run is split and the rest
//     placed the same way.
//  4. The worker, then the node, that hosts most of the run's pipeline
//     neighbours (the stages just before and after it), to keep the edges
//     into the run local.
//  5. The lexically smallest worker name.
//
// If the cluster has fewer free slots than failed ranks, Replace returns a
// *CapacityError.
func Replace(c Cluster, l Layout, current Assignment, failed []int, avoid []string) (Assignment, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	if err := current.Validate(l.World()); err != nil {
		return nil, err
	}
	failed = slices.Clone(failed)
	slices.Sort(failed)
	failed = slices.Compact(failed)
	isFailed := make([]bool, l.World())
	for _, r := range failed {
		if r < 0 || r >= l.World() {
			return nil, fmt.Errorf("%w: failed rank %d is outside 0..%d", ErrInvalid, r, l.World()-1)
		}
		isFailed[r] = true
	}
	cl, err := newCluster(c)
	if err != nil {
		return nil, err
	}
	for _, p := range current {
		if isFailed[p.Rank] {
			continue
		}
		w := cl.byName[p.Worker]
		if w == nil {
			return nil, fmt.Errorf("%w: rank %d survives on worker %q, which is not registered: list the rank as failed", ErrInvalid, p.Rank, p.Worker)
		}
		if p.Slot >= w.slots {
			return nil, fmt.Errorf("%w: rank %d survives in slot %d of worker %q, which has %d slots", ErrInvalid, p.Rank, p.Slot, p.Worker, w.slots)
		}
		w.remove(p.Slot)
	}
	free, workers := 0, 0
	for _, w := range cl.workers {
		free += len(w.free)
		if len(w.free) > 0 {
			workers++
		}
	}
	if free < len(failed) {
		return nil, &CapacityError{Need: len(failed), Replace: failed, Free: free, Workers: workers, Registered: len(cl.workers)}
	}

	avoided := map[string]bool{}
	for _, name := range avoid {
		avoided[name] = true
	}
	next := slices.Clone(current)
	placed := make([]bool, l.World()) // survivors, and failed ranks once they have a slot
	for r := range placed {
		placed[r] = !isFailed[r]
	}
	for i := 0; i < len(failed); {
		// A run is consecutive failed stages of one replica: they can
		// move together and keep their pipeline edges on one worker.
		j := i + 1
		for j < len(failed) && failed[j] == failed[j-1]+1 && failed[j]/l.PP == failed[i]/l.PP {
			j++
		}
		run := failed[i:j]
		var neighbours []*worker // survivors were checked to be registered
		first, last := run[0], run[len(run)-1]
		if first%l.PP > 0 && placed[first-1] {
			neighbours = append(neighbours, cl.byName[next[first-1].Worker])
		}
		if last%l.PP < l.PP-1 && placed[last+1] {
			neighbours = append(neighbours, cl.byName[next[last+1].Worker])
		}
		key := func(w *worker) []int {
			sameWorker, sameNode := 0, 0
			for _, n := range neighbours {
				if n == w {
					sameWorker++
				}
				if n.node == w.node {
					sameNode++
				}
			}
			return []int{b2i(avoided[w.name]), b2i(!w.spare), b2i(len(w.free) < len(run)), -sameWorker, -sameNode}
		}
		var best *worker
		for _, w := range cl.workers {
			if len(w.free) > 0 && (best == nil || slices.Compare(key(w), key(best)) < 0) {
				best = w
			}
		}
		for _, r := range run[:min(len(best.free), len(run))] {
			next[r] = Placement{Rank: r, Worker: best.name, Slot: best.take()}
			placed[r] = true
			i++
		}
	}
	return next, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
