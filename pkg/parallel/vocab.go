package parallel

import (
	"fmt"
	"math"
	"sort"
)

// insertNaive places the vocabulary layers the way plain pipeline
// parallelism does: stage 0 looks up the embedding right before each F and
// scatters its gradient right after each B; the last stage runs the whole
// output layer between F and B: S (logits and softmax statistics), Loss,
// then T (head gradient and the gradient of X), which B consumes.
func insertNaive(base [][]Op) [][]Op {
	p := len(base)
	out := make([][]Op, p)
	for r, ops := range base {
		n := make([]Op, 0, len(ops)*2)
		for _, o := range ops {
			if o.Kind == F && r == 0 {
				n = append(n, computeOp(IF, r, o.MB))
			}
			if o.Kind == B && r == p-1 {
				n = append(n, computeOp(T, r, o.MB))
			}
			n = append(n, o)
			if o.Kind == F && r == p-1 {
				n = append(n, computeOp(S, r, o.MB), computeOp(Loss, r, o.MB))
			}
			if o.Kind == B && r == 0 {
				n = append(n, computeOp(IB, r, o.MB))
			}
		}
		out[r] = n
	}
	return out
}

// keyed is an op with its position in virtual time: ops are sorted by
// (t, base, seq), so inserted ops (base false) go before a base op that
// starts at the same time, and inserted ops with equal t keep the order
// they were generated in, which is the same on every stage.
type keyed struct {
	op   Op
	t    float64
	base bool
	seq  int
}

// insertVocabParallel adds the vocabulary-parallel passes (Yeung et al.
// 2025; research note §2.3–2.6, §5.3) to a compute-only schedule by
// time-based insertion, as the reference's add_embedding_passes does:
//
//  1. Simulate the base schedule under costs: every F and B gets a start
//     time.
//  2. Give each inserted op a virtual time read off the loss stage's
//     timeline around microbatch i: C0(i) at the end of its F(i); S(i) and
//     C1(i) after the next base op (so that op hides C0's latency); for
//     Algorithm 2, Loss(i) right before its B(i), with the ops between
//     (the extra warmup forward) hiding C1; for Algorithm 1, Loss(i), T(i)
//     and C2(i) before the last base op preceding B(i), which hides C2.
//     Algorithm 2's T(i) runs right before S(i+1), as the reference fuses
//     them. IF(j) and IFsum(j) go a block before the last C0 that precedes
//     stage 0's F(j) (up front if none), IBbcast(j) with the first C0 after
//     stage 0's B(j) and IB(j) with the S after it (at the end if none).
//  3. Sort each stage's list by virtual time: base ops at their simulated
//     start, inserted ops first on ties. The compute order of the base
//     schedule is unchanged.
//
// Every collective has the same virtual time on every stage, and every
// dependency (send before receive, C0 after the loss stage's F, S after C0,
// Loss before B, IFsum before stage 0's F, IBbcast after stage 0's B)
// points forward in virtual time. The op with the smallest virtual time not
// yet run can therefore always run, so the result cannot deadlock under
// blocking, in-order execution; Build validates it anyway.
//
// With grouped set, every op of microbatch i's output layer sits at C0(i)'s
// time instead, so a runtime that waits inside each collective meets the
// other stages once per microbatch rather than at C0, C1 and C2 apart.
func insertVocabParallel(base [][]Op, m, alg int, costs Costs, grouped bool) ([][]Op, error) {
	p := len(base)
	last := p - 1
	for r := range p {
		for _, k := range []Kind{F, B} {
			if d := costs.Duration(computeOp(k, r, 0)); !(d > 0) {
				return nil, fmt.Errorf("vocabulary passes: placing them needs %s on stage %d to take positive time, got %v", k, r, d)
			}
		}
	}
	withP2P := addP2P(base)
	res, err := Simulate(&Schedule{P: p, M: m, Vocab: VocabNone, LossStage: last, Stages: withP2P}, costs, SimOptions{})
	if err != nil {
		return nil, fmt.Errorf("vocabulary passes: timing the base schedule: %w", err)
	}
	// Start and end of every base op, by stage and position in base.
	type span struct{ start, end float64 }
	times := make([][]span, p)
	for r, ops := range withP2P {
		for j, o := range ops {
			if o.Kind == F || o.Kind == B {
				tm := res.Times[r][j]
				times[r] = append(times[r], span{tm.Start, tm.End})
			}
		}
	}
	// Positions of F(i) and B(i) in each stage's base list.
	fAt, bAt := make([][]int, p), make([][]int, p)
	for r, ops := range base {
		fAt[r], bAt[r] = make([]int, m), make([]int, m)
		for j, o := range ops {
			if o.Kind == F {
				fAt[r][o.MB] = j
			} else {
				bAt[r][o.MB] = j
			}
		}
	}
	// after(i, j) is the virtual time right before the loss stage's j-th
	// base op after F(i), but never past its B(i).
	after := func(i, j int) float64 {
		return times[last][min(fAt[last][i]+1+j, bAt[last][i])].start
	}
	win := func(i int) int { return bAt[last][i] - fAt[last][i] - 1 } // base ops between F(i) and B(i)
	tau, sigma := make([]float64, m), make([]float64, m)
	for i := range m {
		tau[i] = times[last][fAt[last][i]].end
		sigma[i] = after(i, min(1, win(i)))
		if grouped {
			sigma[i] = tau[i]
		}
	}
	type item struct {
		op Op
		t  float64
	}
	var ins []item
	coll := 0
	put := func(t float64, o Op) {
		if o.Kind.IsCollective() {
			o.Coll = coll
			coll++
		}
		ins = append(ins, item{o, t})
	}
	cl := func(k Kind, tag CollTag, mb, root int) Op { return Op{Kind: k, MB: mb, Peer: root, Coll: -1, Tag: tag} }
	vc := func(k Kind, mb int) Op { return Op{Kind: k, MB: mb, Peer: -1, Coll: -1} }
	// IF(j) one block before the last C0 at or before stage 0's F(j).
	ifBlock := make([]int, m) // -1: up front
	ibBlock := make([]int, m) // m: at the end
	for j := range m {
		n := sort.Search(m, func(i int) bool { return tau[i] > times[0][fAt[0][j]].start })
		ifBlock[j] = n - 2
		ibBlock[j] = sort.Search(m, func(i int) bool { return tau[i] > times[0][bAt[0][j]].start })
	}
	for j := range m {
		if ifBlock[j] < 0 {
			put(math.Inf(-1), vc(IF, j))
			put(math.Inf(-1), cl(AllReduce, IFSum, j, 0))
		}
	}
	for i := range m {
		put(tau[i], cl(Bcast, C0, i, last))
		for j := range m {
			if ifBlock[j] == i {
				put(tau[i], vc(IF, j))
				put(tau[i], cl(AllReduce, IFSum, j, 0))
			}
			if ibBlock[j] == i {
				put(tau[i], cl(Bcast, IBBcast, j, 0))
			}
		}
		if alg == 2 && i > 0 {
			put(sigma[i], vc(T, i-1))
		}
		for j := range m {
			if ibBlock[j] == i-1 {
				put(sigma[i], vc(IB, j))
			}
		}
		put(sigma[i], vc(S, i))
		put(sigma[i], cl(AllReduce, C1, i, last))
		if alg == 2 {
			t := after(i, win(i))
			if grouped {
				t = tau[i]
			}
			put(t, vc(Loss, i))
			continue
		}
		// Algorithm 1: T and C2 before the last base op ahead of B(i),
		// but after S.
		t := math.Max(sigma[i], after(i, win(i)-1))
		if grouped {
			t = tau[i]
		}
		put(t, vc(Loss, i))
		put(t, vc(T, i))
		put(t, cl(AllReduce, C2, i, last))
	}
	if alg == 2 {
		// The last T has no S to run with; the loss stage has nothing
		// left to do after its last B, the other stages are waiting for
		// their cooldown gradients.
		put(times[last][bAt[last][m-1]].end, vc(T, m-1))
	}
	for j := range m {
		if ibBlock[j] == m {
			put(math.Inf(1), cl(Bcast, IBBcast, j, 0))
		}
	}
	for j := range m {
		if ibBlock[j] >= m-1 {
			put(math.Inf(1), vc(IB, j))
		}
	}
	out := make([][]Op, p)
	for r, ops := range base {
		ks := make([]keyed, 0, len(ops)+len(ins))
		for j, o := range ops {
			ks = append(ks, keyed{op: o, t: times[r][j].start, base: true, seq: j})
		}
		for n, it := range ins {
			if it.op.Kind == Loss && r != last {
				continue
			}
			o := it.op
			o.Stage = r
			ks = append(ks, keyed{op: o, t: it.t, seq: n})
		}
		sort.SliceStable(ks, func(a, b int) bool {
			x, y := ks[a], ks[b]
			if x.t != y.t {
				return x.t < y.t
			}
			if x.base != y.base {
				return !x.base
			}
			return x.seq < y.seq
		})
		n := make([]Op, len(ks))
		for k, x := range ks {
			n[k] = x.op
		}
		out[r] = n
	}
	renumberCollectives(out)
	return out, nil
}

// renumberCollectives numbers the collectives 0, 1, … in the order stage 0
// runs them; every stage runs them in that order too, so ids increase along
// every list.
func renumberCollectives(stages [][]Op) {
	id := map[int]int{}
	for _, o := range stages[0] {
		if o.Kind.IsCollective() {
			id[o.Coll] = len(id)
		}
	}
	for _, ops := range stages {
		for k := range ops {
			if ops[k].Kind.IsCollective() {
				ops[k].Coll = id[ops[k].Coll]
			}
		}
	}
}
