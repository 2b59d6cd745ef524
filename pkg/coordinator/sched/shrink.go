package sched

import (
	"fmt"
	"slices"
)

// Shrink drops every replica that lost a rank, keeps at most keep of the
// others (the first ones) and renumbers them:
// the layout a job continues in when lost ranks cannot be replaced
// (restartPolicy.shrink). Whole replicas go, every pipeline stage of
// each, because a replica with a stage missing cannot train.
//
// current is the job's assignment in layout l and lost the ranks that are
// gone (any order, duplicates ignored). The surviving replicas keep their
// order and their slots; replica i of the result is the i-th surviving
// replica. sources[r] is the rank of l that rank r of the result was, so
// that it restores that rank's state. Shrink returns an error wrapping
// ErrInvalid if no replica survives, keep is below 1 or a rank is out of
// range.
func Shrink(l Layout, current Assignment, lost []int, keep int) (next Assignment, sources []int, err error) {
	if err := l.validate(); err != nil {
		return nil, nil, err
	}
	if err := current.Validate(l.World()); err != nil {
		return nil, nil, err
	}
	if keep < 1 {
		return nil, nil, fmt.Errorf("%w: keep %d replicas: at least 1", ErrInvalid, keep)
	}
	dropped := make([]bool, l.DP)
	for _, r := range lost {
		if r < 0 || r >= l.World() {
			return nil, nil, fmt.Errorf("%w: lost rank %d is outside 0..%d", ErrInvalid, r, l.World()-1)
		}
		dropped[r/l.PP] = true
	}
	for dp := range l.DP {
		if dropped[dp] || len(next) == keep*l.PP {
			continue
		}
		for pp := range l.PP {
			old := l.Rank(dp, pp)
			p := current[old]
			p.Rank = len(next)
			next = append(next, p)
			sources = append(sources, old)
		}
	}
	if len(next) == 0 {
		return nil, nil, fmt.Errorf("%w: every one of the %d replicas lost a rank: none is left to continue", ErrInvalid, l.DP)
	}
	return next, sources, nil
}

// Grow places the replicas a shrunk job is missing, so that it runs at
// layout l again: current places the first len(current)/l.PP replicas
// and keeps them where they are; the new replicas' ranks are placed as
// Replace places failed ranks (spares first, a replica's stages together,
// workers in avoid last). It returns the whole assignment for l, or a
// *CapacityError when the cluster has too few free slots.
func Grow(c Cluster, l Layout, current Assignment, avoid []string) (Assignment, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	n := len(current)
	if n == 0 || n%l.PP != 0 || n >= l.World() {
		return nil, fmt.Errorf("%w: growing to DP %d × PP %d needs the ranks of 1 to %d whole replicas, not %d ranks",
			ErrInvalid, l.DP, l.PP, l.DP-1, n)
	}
	if err := current.Validate(n); err != nil {
		return nil, err
	}
	// The new ranks enter Replace as failed ones; their placeholder
	// placements are never consulted.
	padded := slices.Clone(current)
	var added []int
	for r := n; r < l.World(); r++ {
		padded = append(padded, Placement{Rank: r, Worker: growPlaceholder, Slot: r})
		added = append(added, r)
	}
	return Replace(c, l, padded, added, avoid)
}

// growPlaceholder stands for a new rank's worker before Grow places it.
const growPlaceholder = "(new replica)"
