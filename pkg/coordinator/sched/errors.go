package sched

import (
	"fmt"
	"strings"
)

// CapacityError says why a request cannot be placed now. It is not a bug:
// the job waits (Pending) with Error() as its reason until capacity changes.
type CapacityError struct {
	// Need is the number of slots the request needs.
	Need int
	// Layout is the job's layout; zero for a replacement.
	Layout Layout
	// Replace lists the ranks being replaced; nil for a whole job.
	Replace []int
	// Free is the number of free slots the request may use, on Workers
	// workers.
	Free, Workers int
	// Reserved is the number of free slots held back as spares, which a
	// new job may not use.
	Reserved int
	// Capacity is the number of slots the request could use if every
	// other job finished: below Need, waiting will not help.
	Capacity int
	// Registered is the number of registered workers.
	Registered int
}

func (e *CapacityError) Error() string {
	var b strings.Builder
	if e.Replace != nil {
		fmt.Fprintf(&b, "needs %s to replace %s, %s (spares included)",
			plural(e.Need, "slot"), rankList(e.Replace), freeOn(e.Free, e.Workers))
		return b.String()
	}
	fmt.Fprintf(&b, "needs %s (DP %d × PP %d), ", plural(e.Need, "slot"), e.Layout.DP, e.Layout.PP)
	if e.Registered == 0 {
		b.WriteString("no workers are registered")
		return b.String()
	}
	b.WriteString(freeOn(e.Free, e.Workers))
	if e.Reserved > 0 {
		fmt.Fprintf(&b, "; %d more %s reserved as spares", e.Reserved, pick(e.Reserved, "slot is", "slots are"))
	}
	if e.Capacity < e.Need {
		fmt.Fprintf(&b, "; the cluster has only %d usable %s in all, so the job cannot start until more workers join",
			max(e.Capacity, 0), pick(e.Capacity, "slot", "slots"))
	}
	return b.String()
}

// freeOn writes "5 free on 2 workers" or "no slots free".
func freeOn(free, workers int) string {
	if free <= 0 {
		return "no slots free"
	}
	return fmt.Sprintf("%d free on %s", free, plural(workers, "worker"))
}

func plural(n int, noun string) string { return fmt.Sprintf("%d %s", n, pick(n, noun, noun+"s")) }

func pick(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// rankList writes "rank 3" or "ranks 1, 2, 5".
func rankList(ranks []int) string {
	s := make([]string, len(ranks))
	for i, r := range ranks {
		s[i] = fmt.Sprint(r)
	}
	return pick(len(ranks), "rank ", "ranks ") + strings.Join(s, ", ")
}
