package sched

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Failure-domain labels a worker may declare when it registers. A worker
// without a node label is its own node; a node without a rack label is its
// own rack, so an unlabelled cluster spreads replicas over workers.
const (
	LabelNode = "node"
	LabelRack = "rack"
	// LabelSpare=true declares a spare (Worker.Spare): `worker --spare`.
	LabelSpare = "spare"
)

// IsSpare reports whether a worker's labels declare it a spare.
func IsSpare(labels map[string]string) bool { return labels[LabelSpare] == "true" }

// Bounds on the numbers a request or a registration may carry, so that a
// corrupt record cannot make the scheduler allocate without limit.
const (
	// MaxRanks bounds DP×PP for one job.
	MaxRanks = 1 << 16
	// MaxSlotsPerWorker bounds one worker's declared capacity.
	MaxSlotsPerWorker = 4096
)

// ErrInvalid is wrapped by every error about malformed input (a worker
// without a name, a used slot outside the worker's capacity, a rank out of
// range). Callers branch on it to tell a bug in the caller from a cluster
// that is merely short of capacity (*CapacityError).
var ErrInvalid = errors.New("invalid scheduling input")

// Worker is one registered worker as the scheduler sees it.
type Worker struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	// Slots is how many ranks the worker can host at once.
	Slots int `json:"slots"`
	// Used lists the slot indices (0 ≤ i < Slots) that ranks of running
	// jobs hold now; the others are free.
	Used []int `json:"used,omitempty"`
	// Labels carry failure domains: LabelNode and LabelRack.
	Labels map[string]string `json:"labels,omitempty"`
	// Spare keeps the worker idle for recovery: Place never uses it,
	// Replace prefers it.
	Spare bool `json:"spare,omitempty"`
}

// Cluster is the input to every placement: the registered workers and the
// number of free slots to keep back for recovery.
type Cluster struct {
	Workers []Worker `json:"workers"`
	// SpareSlots is how many free slots Place leaves untouched. Free slots
	// on Spare workers count towards it first; the rest are held back on
	// the other workers.
	SpareSlots int `json:"spareSlots,omitempty"`
}

// Layout is the shape of a job: DP replicas of PP pipeline stages. Rank r
// runs stage r%PP of replica r/PP, so rank = dp*PP + pp and a replica's
// stages are consecutive ranks.
type Layout struct {
	DP int `json:"dp"`
	PP int `json:"pp"`
}

// World is the number of ranks, DP×PP.
func (l Layout) World() int { return l.DP * l.PP }

// Rank is the rank of stage pp of replica dp.
func (l Layout) Rank(dp, pp int) int { return dp*l.PP + pp }

func (l Layout) validate() error {
	if l.DP < 1 || l.PP < 1 {
		return fmt.Errorf("%w: layout DP %d × PP %d: both must be at least 1", ErrInvalid, l.DP, l.PP)
	}
	if l.DP > MaxRanks/l.PP {
		return fmt.Errorf("%w: layout DP %d × PP %d has more than %d ranks", ErrInvalid, l.DP, l.PP, MaxRanks)
	}
	return nil
}

// Placement puts one rank in one slot of one worker.
type Placement struct {
	Rank   int    `json:"rank"`
	Worker string `json:"worker"`
	Slot   int    `json:"slot"`
}

// Assignment places every rank of a job; element i is rank i.
type Assignment []Placement

// Workers lists the distinct workers the assignment uses, sorted by name.
func (a Assignment) Workers() []string {
	var ws []string
	for _, p := range a {
		ws = append(ws, p.Worker)
	}
	slices.Sort(ws)
	return slices.Compact(ws)
}

// String writes the assignment compactly, "0:w1/0 1:w1/1 2:w2/0".
func (a Assignment) String() string {
	var b strings.Builder
	for i, p := range a {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d:%s/%d", p.Rank, p.Worker, p.Slot)
	}
	return b.String()
}

// Validate checks that a is a complete assignment for world ranks: rank i
// at index i, a worker named, no slot used twice.
func (a Assignment) Validate(world int) error {
	if len(a) != world {
		return fmt.Errorf("%w: assignment places %d of the job's %d ranks", ErrInvalid, len(a), world)
	}
	seen := make(map[Placement]int, len(a))
	for i, p := range a {
		if p.Rank != i {
			return fmt.Errorf("%w: assignment entry %d is for rank %d: entries must be in rank order", ErrInvalid, i, p.Rank)
		}
		if p.Worker == "" {
			return fmt.Errorf("%w: rank %d has no worker", ErrInvalid, i)
		}
		if p.Slot < 0 {
			return fmt.Errorf("%w: rank %d has slot %d: slots are 0 or more", ErrInvalid, i, p.Slot)
		}
		key := Placement{Worker: p.Worker, Slot: p.Slot}
		if r, dup := seen[key]; dup {
			return fmt.Errorf("%w: ranks %d and %d share slot %d of worker %q", ErrInvalid, r, i, p.Slot, p.Worker)
		}
		seen[key] = i
	}
	return nil
}

// worker is a Worker during one placement: its failure domains resolved
// and its free slots as a sorted list that placement consumes.
type worker struct {
	name, node, rack string
	spare            bool
	slots            int
	free             []int
}

// take removes and returns the lowest free slot.
func (w *worker) take() int {
	s := w.free[0]
	w.free = w.free[1:]
	return s
}

// remove marks slot s as held, if it is free.
func (w *worker) remove(s int) {
	if i, ok := slices.BinarySearch(w.free, s); ok {
		w.free = slices.Delete(w.free, i, i+1)
	}
}

// cluster is the validated working copy of a Cluster. Workers are sorted by
// name, which is what makes every choice below deterministic: ties are
// always broken by name and no map is ever ranged over.
type cluster struct {
	workers    []*worker
	byName     map[string]*worker
	spareSlots int
}

func newCluster(c Cluster) (*cluster, error) {
	if c.SpareSlots < 0 {
		return nil, fmt.Errorf("%w: spareSlots is %d: must be 0 or more", ErrInvalid, c.SpareSlots)
	}
	cl := &cluster{byName: make(map[string]*worker, len(c.Workers)), spareSlots: c.SpareSlots}
	for _, in := range c.Workers {
		if in.Name == "" {
			return nil, fmt.Errorf("%w: a worker has no name", ErrInvalid)
		}
		if _, dup := cl.byName[in.Name]; dup {
			return nil, fmt.Errorf("%w: worker %q is listed twice", ErrInvalid, in.Name)
		}
		if in.Slots < 0 || in.Slots > MaxSlotsPerWorker {
			return nil, fmt.Errorf("%w: worker %q has %d slots: allowed 0 to %d", ErrInvalid, in.Name, in.Slots, MaxSlotsPerWorker)
		}
		used := make([]bool, in.Slots)
		for _, s := range in.Used {
			if s < 0 || s >= in.Slots {
				return nil, fmt.Errorf("%w: worker %q: used slot %d is outside 0..%d", ErrInvalid, in.Name, s, in.Slots-1)
			}
			if used[s] {
				return nil, fmt.Errorf("%w: worker %q: slot %d is listed as used twice", ErrInvalid, in.Name, s)
			}
			used[s] = true
		}
		w := &worker{name: in.Name, spare: in.Spare, slots: in.Slots, node: in.Labels[LabelNode], rack: in.Labels[LabelRack]}
		if w.node == "" {
			w.node = "worker:" + w.name
		}
		if w.rack == "" {
			w.rack = "node:" + w.node
		}
		for s, u := range used {
			if !u {
				w.free = append(w.free, s)
			}
		}
		cl.workers = append(cl.workers, w)
		cl.byName[w.name] = w
	}
	slices.SortFunc(cl.workers, func(a, b *worker) int { return strings.Compare(a.name, b.name) })
	return cl, nil
}
