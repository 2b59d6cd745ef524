package parallel

import (
	"fmt"
	"math"
	"reflect"
	"testing"
)

// vpCosts are uniform stages with F = 1, B = 2 and the output layer's S and
// T on every stage; memory counts microbatches.
func vpCosts(s, t, coll float64) *TableCosts {
	return &TableCosts{
		Stages: []StageCosts{{
			Time: map[Kind]float64{F: 1, B: 2, S: s, T: t},
			Mem:  map[Kind]int64{F: 1, B: -1},
		}},
		Coll: map[CollTag]float64{C0: coll, C1: coll, C2: coll, IFSum: coll, IBBcast: coll},
	}
}

// TestVocabParallelMemoryInvariant is the research note's §5.3 invariant:
// on 1F1B, stage 0 holds p+1 microbatches under Algorithm 2 and p+2 under
// Algorithm 1 (the README's "Vocab-2: p+1, Vocab-1: p+2"), stage i holds one
// or two more than plain 1F1B's p−i. The extra microbatches are the forwards
// that hide each barrier between the loss stage's F(i) and B(i) (C1; C1 and
// C2): TestVocabParallelHidesBarriers shows they are needed. A schedule for
// a runtime that blocks in collectives cannot hide barriers and adds none.
func TestVocabParallelMemoryInvariant(t *testing.T) {
	for _, p := range []int{1, 2, 3, 4, 8} {
		for _, m := range []int{p + 2, 2*p + 3, 16} {
			for _, c := range []struct {
				alg      int
				blocking bool
				extra    int
			}{{2, false, 1}, {1, false, 2}, {2, true, 0}, {1, true, 0}} {
				s, err := Build(Plan{PP: p, M: m, Algorithm: c.alg, BlockingCollectives: c.blocking})
				if err != nil {
					t.Fatal(err)
				}
				for _, async := range []bool{false, true} {
					res, err := Simulate(s, vpCosts(0.5, 1, 0), SimOptions{AsyncCollectives: async})
					if err != nil {
						t.Fatal(err)
					}
					for i, st := range res.Stages {
						if want := min(p-i+c.extra, m); st.PeakInFlight != want {
							t.Errorf("p=%d m=%d alg %d blocking %v (async sim %v): stage %d holds %d microbatches, want %d", p, m, c.alg, c.blocking, async, i, st.PeakInFlight, want)
						}
					}
				}
			}
		}
	}
}

// TestVocabParallelHidesBarriers: run with lanes and free communication,
// vocabulary parallelism adds no bubble: the step takes at most
// m·(F+B+S+T) + (p−1)·(F+B), the time of a 1F1B whose ramp holds no
// vocabulary work (Algorithm 1 takes exactly that, Algorithm 2 may fill
// part of the ramp). One warmup forward fewer than the default leaves a
// barrier exposed and the step is longer than that, except for Algorithm 1
// on two stages, where stage 0's slack covers C2; running the default
// schedule with blocking collectives is longer too.
func TestVocabParallelHidesBarriers(t *testing.T) {
	for _, p := range []int{2, 3, 4, 8} {
		for _, m := range []int{p + 3, 4 * p} {
			for _, st := range [][2]float64{{0.25, 0.5}, {0.5, 1}, {3, 6}} {
				c := vpCosts(st[0], st[1], 0)
				bound := float64(m)*(3+st[0]+st[1]) + float64(p-1)*3
				for _, alg := range []int{1, 2} {
					name := fmt.Sprintf("p=%d m=%d S=%v alg %d", p, m, st[0], alg)
					s, err := Build(Plan{PP: p, M: m, Algorithm: alg, Costs: c})
					if err != nil {
						t.Fatal(err)
					}
					lanes, err := Simulate(s, c, SimOptions{AsyncCollectives: true})
					if err != nil {
						t.Fatal(err)
					}
					if lanes.Makespan > bound+1e-9 || (alg == 1 && lanes.Makespan != bound) {
						t.Errorf("%s: with lanes the step takes %v, want ≤ %v (= for Algorithm 1)", name, lanes.Makespan, bound)
					}
					blocking, err := Simulate(s, c, SimOptions{})
					if err != nil {
						t.Fatal(err)
					}
					if blocking.Makespan <= bound {
						t.Errorf("%s: blocking collectives take %v, expected more than %v", name, blocking.Makespan, bound)
					}
					if p == 2 && alg == 1 {
						continue
					}
					fewer := barriers(alg) - 1
					s2, err := Build(Plan{PP: p, M: m, Algorithm: alg, Costs: c, extraWarmup: &fewer})
					if err != nil {
						t.Fatal(err)
					}
					short, err := Simulate(s2, c, SimOptions{AsyncCollectives: true})
					if err != nil {
						t.Fatal(err)
					}
					if short.Makespan <= bound {
						t.Errorf("%s: with %d extra warmup forwards the step takes %v, expected more than %v", name, fewer, short.Makespan, bound)
					}
				}
			}
		}
	}
}

// noisyCosts draws every op's cost from a hash of (seed, op), so a run is
// reproducible and each op costs something different.
type noisyCosts struct{ seed uint64 }

func (c noisyCosts) u(o Op, salt uint64) float64 {
	x := c.seed ^ uint64(o.Stage)<<48 ^ uint64(o.Kind)<<40 ^ uint64(o.MB)<<20 ^ uint64(o.Tag)<<16 ^ salt
	// splitmix64 finaliser.
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

func (c noisyCosts) Duration(o Op) float64 {
	d := 0.1 + 10*c.u(o, 1)
	if o.Kind != F && o.Kind != B && c.u(o, 2) < 0.1 {
		return 0 // some free ops, so ties happen
	}
	return d
}

func (c noisyCosts) MemDelta(o Op) int64 {
	switch o.Kind {
	case F:
		return 3
	case B:
		return -3
	}
	return 0
}

func (c noisyCosts) P2PLatency(o Op) float64  { return 5 * c.u(o, 3) }
func (c noisyCosts) CollLatency(o Op) float64 { return 5 * c.u(o, 4) }

// TestRandomCostsNeverDeadlock: whatever the costs, every schedule Build
// returns runs to the end under both execution models, handing collectives
// to lanes never makes it slower, and memory and work add up. Costs also
// drive where the vocabulary passes go, so each seed builds different
// schedules.
func TestRandomCostsNeverDeadlock(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	n := 0
	for seed := range seeds {
		for _, p := range []int{1, 2, 3, 5} {
			for _, m := range []int{1, 2, 4, 7} {
				for _, plan := range []Plan{
					{Schedule: Schedule1F1B, Vocab: VocabParallel, Algorithm: 2},
					{Schedule: Schedule1F1B, Vocab: VocabParallel, Algorithm: 1},
					{Schedule: Schedule1F1B, Vocab: VocabParallel, Algorithm: 2, BlockingCollectives: true},
					{Schedule: ScheduleGPipe, Vocab: VocabParallel, Algorithm: 1},
					{Schedule: Schedule1F1B, Vocab: VocabNaive},
					{Schedule: ScheduleGPipe, Vocab: VocabNone},
				} {
					c := noisyCosts{seed: uint64(seed) * 0x5851f42d4c957f2d}
					plan.PP, plan.M, plan.Costs = p, m, c
					name := fmt.Sprintf("seed %d p=%d m=%d %s/%s alg %d blocking %v", seed, p, m, plan.Schedule, plan.Vocab, plan.Algorithm, plan.BlockingCollectives)
					s, err := Build(plan)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					block, err := Simulate(s, c, SimOptions{})
					if err != nil {
						t.Fatalf("%s: blocking: %v", name, err)
					}
					lanes, err := Simulate(s, c, SimOptions{AsyncCollectives: true})
					if err != nil {
						t.Fatalf("%s: lanes: %v", name, err)
					}
					if lanes.Makespan > block.Makespan*(1+1e-12) {
						t.Errorf("%s: lanes take %v, blocking %v", name, lanes.Makespan, block.Makespan)
					}
					for i := range block.Stages {
						b := block.Stages[i]
						if b.Idle < -1e-9 || math.Abs(b.Compute+b.Comm+b.Idle-block.Makespan) > 1e-9*block.Makespan {
							t.Errorf("%s stage %d: compute %v + comm %v + idle %v ≠ makespan %v", name, i, b.Compute, b.Comm, b.Idle, block.Makespan)
						}
						if b.PeakBytes != 3*int64(b.PeakInFlight) || b.PeakInFlight < 1 || b.PeakInFlight > m {
							t.Errorf("%s stage %d: peak %d microbatches, %d bytes", name, i, b.PeakInFlight, b.PeakBytes)
						}
						if lanes.Stages[i].Compute != b.Compute {
							t.Errorf("%s stage %d: compute %v with lanes, %v blocking", name, i, lanes.Stages[i].Compute, b.Compute)
						}
					}
					n++
				}
			}
		}
	}
	t.Logf("%d schedules simulated under random costs", n)
}

func TestBuildIsDeterministic(t *testing.T) {
	for _, plan := range []Plan{{PP: 4, M: 9}, {PP: 3, M: 5, Algorithm: 1, Costs: noisyCosts{7}}, {PP: 4, M: 3, BlockingCollectives: true}} {
		a, err := Build(plan)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Build(plan)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%+v: two builds differ", plan)
		}
		// Collective ids count up along every list.
		for r, ops := range a.Stages {
			next := 0
			for _, o := range ops {
				if o.Kind.IsCollective() {
					if o.Coll != next {
						t.Errorf("%+v stage %d: collective %v, want id %d", plan, r, o, next)
					}
					next++
				}
			}
		}
	}
}
