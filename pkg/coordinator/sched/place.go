package sched

import (
	"cmp"
	"slices"
	"strings"
)

// Place assigns every rank of a job with layout l to a free slot of c.
//
// Policy, in priority order:
//
//  1. Spares stay free: workers marked Spare are never used, and at least
//     c.SpareSlots free slots (counting the Spare workers' free slots
//     first) are left over after placement.
//  2. Pipeline locality: each replica's PP stages go to one worker when one
//     has room, else to the workers of one node, else over as few nodes as
//     possible, stages kept contiguous. Every pipeline edge between nodes
//     costs a network hop per micro-batch, so it is avoided first.
//  3. Failure-domain spread: among equally local choices, a replica goes to
//     the rack, then node, then worker holding the fewest replicas already,
//     so one domain lost takes as few replicas with it as possible.
//  4. Packing: among the remaining ties, the smallest home that fits
//     (best fit), so large holes stay open for later replicas.
//  5. Names: a last tie goes to the lexically smallest worker or node name.
//
// The result depends only on the values in c and l, never on the order of
// c.Workers. If c has too few usable free slots, Place returns a
// *CapacityError whose message tells the user why the job waits.
func Place(c Cluster, l Layout) (Assignment, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	cl, err := newCluster(c)
	if err != nil {
		return nil, err
	}
	if err := cl.checkCapacity(l); err != nil {
		return nil, err
	}
	nodes := cl.regularNodes()
	sp := newSpread()
	a := make(Assignment, l.World())
	for dp := range l.DP {
		home := homeOnWorker(cl.regular(), l.PP, sp)
		if home == nil {
			home = homeOnNode(nodes, l.PP, sp)
		}
		if home == nil {
			home = homeAcrossNodes(nodes, l.PP)
		}
		pp := 0
		for _, w := range home {
			for n := min(len(w.free), l.PP-pp); n > 0; n-- {
				r := l.Rank(dp, pp)
				a[r] = Placement{Rank: r, Worker: w.name, Slot: w.take()}
				pp++
			}
		}
		sp.add(home)
	}
	return a, nil
}

// checkCapacity returns a *CapacityError if the regular workers' free slots,
// less the share of SpareSlots they must hold back, cannot host l.
func (cl *cluster) checkCapacity(l Layout) error {
	var regFree, regSlots, spareFree, spareSlots, regWorkers, registered int
	for _, w := range cl.workers {
		registered++
		if w.spare {
			spareFree += len(w.free)
			spareSlots += w.slots
			continue
		}
		regFree += len(w.free)
		regSlots += w.slots
		if len(w.free) > 0 {
			regWorkers++
		}
	}
	holdBack := min(max(cl.spareSlots-spareFree, 0), regFree)
	usable := regFree - holdBack
	if usable >= l.World() {
		return nil
	}
	return &CapacityError{
		Need:       l.World(),
		Layout:     l,
		Free:       usable,
		Workers:    regWorkers,
		Reserved:   spareFree + holdBack,
		Capacity:   regSlots - max(cl.spareSlots-spareSlots, 0),
		Registered: registered,
	}
}

// regular lists the workers Place may use, in name order.
func (cl *cluster) regular() []*worker {
	var ws []*worker
	for _, w := range cl.workers {
		if !w.spare {
			ws = append(ws, w)
		}
	}
	return ws
}

// node groups the regular workers that share a node label.
type node struct {
	name, rack string
	workers    []*worker // name order
}

func (n *node) free() int {
	f := 0
	for _, w := range n.workers {
		f += len(w.free)
	}
	return f
}

// regularNodes groups the regular workers by node, in node-name order. A
// node's rack is its first worker's.
func (cl *cluster) regularNodes() []*node {
	byName := map[string]*node{}
	var nodes []*node
	for _, w := range cl.regular() {
		n := byName[w.node]
		if n == nil {
			n = &node{name: w.node, rack: w.rack}
			byName[w.node] = n
			nodes = append(nodes, n)
		}
		n.workers = append(n.workers, w)
	}
	slices.SortFunc(nodes, func(a, b *node) int { return strings.Compare(a.name, b.name) })
	return nodes
}

// spread counts the replicas placed so far in each failure domain.
type spread struct{ rack, node, worker map[string]int }

func newSpread() *spread {
	return &spread{rack: map[string]int{}, node: map[string]int{}, worker: map[string]int{}}
}

// add records one replica living on the workers of home: each domain it
// touches counts it once.
func (s *spread) add(home []*worker) {
	racks, nodes := map[string]bool{}, map[string]bool{}
	for _, w := range home {
		if !racks[w.rack] {
			racks[w.rack] = true
			s.rack[w.rack]++
		}
		if !nodes[w.node] {
			nodes[w.node] = true
			s.node[w.node]++
		}
		s.worker[w.name]++ // a home lists each worker once
	}
}

// homeOnWorker picks one worker with room for all pp stages, or nil.
func homeOnWorker(ws []*worker, pp int, sp *spread) []*worker {
	var best *worker
	key := func(w *worker) []int {
		return []int{sp.rack[w.rack], sp.node[w.node], sp.worker[w.name], len(w.free)}
	}
	for _, w := range ws {
		if len(w.free) < pp {
			continue
		}
		if best == nil || slices.Compare(key(w), key(best)) < 0 {
			best = w // ws is in name order, so an equal key keeps the smaller name
		}
	}
	if best == nil {
		return nil
	}
	return []*worker{best}
}

// homeOnNode picks one node whose workers together have room for pp stages
// and returns the workers to fill, or nil.
func homeOnNode(nodes []*node, pp int, sp *spread) []*worker {
	var best *node
	key := func(n *node) []int { return []int{sp.rack[n.rack], sp.node[n.name], n.free()} }
	for _, n := range nodes {
		if n.free() < pp {
			continue
		}
		if best == nil || slices.Compare(key(n), key(best)) < 0 {
			best = n
		}
	}
	if best == nil {
		return nil
	}
	return fullestFirst(best.workers)
}

// homeAcrossNodes spans the replica over the nodes with the most free
// slots first, so it crosses as few node boundaries as it can. The caller
// has checked that the cluster has room, so this always finds enough.
func homeAcrossNodes(nodes []*node, pp int) []*worker {
	ordered := slices.Clone(nodes)
	slices.SortStableFunc(ordered, func(a, b *node) int { return cmp.Compare(b.free(), a.free()) })
	var home []*worker
	got := 0
	for _, n := range ordered {
		for _, w := range fullestFirst(n.workers) {
			if got >= pp {
				return home
			}
			if len(w.free) > 0 {
				home = append(home, w)
				got += len(w.free)
			}
		}
	}
	return home
}

// fullestFirst orders workers by free slots, most first, then by name, so a
// replica split over them touches as few workers as possible.
func fullestFirst(ws []*worker) []*worker {
	out := slices.Clone(ws)
	slices.SortStableFunc(out, func(a, b *worker) int { return cmp.Compare(len(b.free), len(a.free)) })
	var nonEmpty []*worker
	for _, w := range out {
		if len(w.free) > 0 {
			nonEmpty = append(nonEmpty, w)
		}
	}
	return nonEmpty
}
