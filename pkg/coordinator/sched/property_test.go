package sched

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// randomCluster draws a small cluster: up to 8 workers on 4 nodes in 2
// racks, some labels missing, some slots used, some workers spare.
func randomCluster(rng *rand.Rand) Cluster {
	var c Cluster
	for i := range rng.IntN(9) {
		wk := Worker{Name: fmt.Sprintf("w%d", i), Slots: rng.IntN(7), Spare: rng.IntN(5) == 0}
		for s := range wk.Slots {
			if rng.IntN(3) == 0 {
				wk.Used = append(wk.Used, s)
			}
		}
		if rng.IntN(4) > 0 {
			wk.Labels = map[string]string{LabelNode: fmt.Sprintf("n%d", rng.IntN(4))}
			if rng.IntN(2) == 0 {
				wk.Labels[LabelRack] = fmt.Sprintf("r%d", rng.IntN(2))
			}
		}
		c.Workers = append(c.Workers, wk)
	}
	c.SpareSlots = rng.IntN(4)
	return c
}

// shuffled returns c with its workers and used lists in another order,
// which must not change any result.
func shuffled(rng *rand.Rand, c Cluster) Cluster {
	out := Cluster{SpareSlots: c.SpareSlots, Workers: slices.Clone(c.Workers)}
	rng.Shuffle(len(out.Workers), func(i, j int) { out.Workers[i], out.Workers[j] = out.Workers[j], out.Workers[i] })
	for i := range out.Workers {
		u := slices.Clone(out.Workers[i].Used)
		rng.Shuffle(len(u), func(i, j int) { u[i], u[j] = u[j], u[i] })
		out.Workers[i].Used = u
	}
	return out
}

// checkSlots verifies that every placement of the ranks in check lands in
// a free, existing slot of a registered worker, no slot twice.
func checkSlots(c Cluster, a Assignment, check []int) error {
	byName := map[string]Worker{}
	for _, w := range c.Workers {
		byName[w.Name] = w
	}
	seen := map[Placement]bool{}
	for _, r := range check {
		p := a[r]
		w, ok := byName[p.Worker]
		if !ok {
			return fmt.Errorf("rank %d on unregistered worker %q", r, p.Worker)
		}
		if p.Slot < 0 || p.Slot >= w.Slots {
			return fmt.Errorf("rank %d in slot %d of %q, which has %d slots", r, p.Slot, p.Worker, w.Slots)
		}
		if slices.Contains(w.Used, p.Slot) {
			return fmt.Errorf("rank %d in used slot %d of %q", r, p.Slot, p.Worker)
		}
		k := Placement{Worker: p.Worker, Slot: p.Slot}
		if seen[k] {
			return fmt.Errorf("slot %d of %q given twice", p.Slot, p.Worker)
		}
		seen[k] = true
	}
	return nil
}

// freeSlots counts the free slots on spare and on regular workers.
func freeSlots(c Cluster) (spare, regular int) {
	for _, w := range c.Workers {
		if w.Spare {
			spare += w.Slots - len(w.Used)
		} else {
			regular += w.Slots - len(w.Used)
		}
	}
	return spare, regular
}

func allRanks(n int) []int {
	r := make([]int, n)
	for i := range r {
		r[i] = i
	}
	return r
}

// TestPlaceProperties checks, over seeded random clusters, that Place never
// oversubscribes a worker, never touches spares, leaves the declared spare
// slots free, refuses only when capacity is really short, and gives the
// same answer whatever the input order.
func TestPlaceProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	placed := 0
	for iter := range 3000 {
		c := randomCluster(rng)
		l := Layout{DP: 1 + rng.IntN(4), PP: 1 + rng.IntN(4)}
		a, err := Place(c, l)
		spareFree, regFree := freeSlots(c)
		usable := regFree - max(c.SpareSlots-spareFree, 0)
		if err != nil {
			var ce *CapacityError
			if !errors.As(err, &ce) {
				t.Fatalf("iter %d: %v", iter, err)
			}
			if usable >= l.World() {
				t.Fatalf("iter %d: refused %v with %d usable slots: %v", iter, l, usable, err)
			}
			continue
		}
		placed++
		if usable < l.World() {
			t.Fatalf("iter %d: placed %d ranks with only %d usable slots", iter, l.World(), usable)
		}
		if err := a.Validate(l.World()); err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		if err := checkSlots(c, a, allRanks(l.World())); err != nil {
			t.Fatalf("iter %d: %v\ncluster %+v", iter, err, c)
		}
		for _, p := range a {
			for _, w := range c.Workers {
				if w.Name == p.Worker && w.Spare {
					t.Fatalf("iter %d: rank %d placed on spare worker %q", iter, p.Rank, w.Name)
				}
			}
		}
		if regFree-l.World() < min(max(c.SpareSlots-spareFree, 0), regFree) {
			t.Fatalf("iter %d: placement left %d regular slots free, %d must stay spare", iter, regFree-l.World(), c.SpareSlots-spareFree)
		}
		for range 2 {
			b, err := Place(shuffled(rng, c), l)
			if err != nil || b.String() != a.String() {
				t.Fatalf("iter %d: reordered input gave %v, %v; first run %v", iter, b, err, a)
			}
		}
	}
	if placed < 500 {
		t.Fatalf("only %d of 3000 random requests were placeable: the generator tests too little", placed)
	}
}

// TestReplaceProperties places a job, fails some of its ranks (sometimes by
// losing a worker), and checks that Replace keeps survivors where they
// were, puts failed ranks into free slots, and is order-independent.
func TestReplaceProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	replaced := 0
	for iter := range 3000 {
		c := randomCluster(rng)
		l := Layout{DP: 1 + rng.IntN(3), PP: 1 + rng.IntN(3)}
		a, err := Place(c, l)
		if err != nil {
			continue
		}
		// The job now holds its slots.
		for i := range c.Workers {
			c.Workers[i].Used = slices.Clone(c.Workers[i].Used)
			for _, p := range a {
				if p.Worker == c.Workers[i].Name {
					c.Workers[i].Used = append(c.Workers[i].Used, p.Slot)
				}
			}
		}
		var failed []int
		if rng.IntN(2) == 0 {
			lost := a[rng.IntN(len(a))].Worker
			c.Workers = slices.DeleteFunc(c.Workers, func(w Worker) bool { return w.Name == lost })
			for _, p := range a {
				if p.Worker == lost {
					failed = append(failed, p.Rank)
				}
			}
		} else {
			for r := range a {
				if rng.IntN(3) == 0 {
					failed = append(failed, r)
				}
			}
		}
		var avoid []string
		for _, r := range failed {
			if rng.IntN(2) == 0 {
				avoid = append(avoid, a[r].Worker)
			}
		}
		b, err := Replace(c, l, a, failed, avoid)
		if err != nil {
			var ce *CapacityError
			if !errors.As(err, &ce) {
				t.Fatalf("iter %d: %v", iter, err)
			}
			spare, reg := freeSlots(c)
			if spare+reg >= len(failed) {
				t.Fatalf("iter %d: refused %d ranks with %d free slots: %v", iter, len(failed), spare+reg, err)
			}
			continue
		}
		replaced++
		if err := b.Validate(l.World()); err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		for r := range a {
			if !slices.Contains(failed, r) && b[r] != a[r] {
				t.Fatalf("iter %d: survivor %d moved from %v to %v", iter, r, a[r], b[r])
			}
		}
		if err := checkSlots(c, b, failed); err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		rev := slices.Clone(failed)
		slices.Reverse(rev)
		again, err := Replace(shuffled(rng, c), l, a, rev, avoid)
		if err != nil || again.String() != b.String() {
			t.Fatalf("iter %d: reordered input gave %v, %v; first run %v", iter, again, err, b)
		}
	}
	if replaced < 300 {
		t.Fatalf("only %d replacements exercised", replaced)
	}
}
