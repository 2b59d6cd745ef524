package parallel

import (
	"errors"
	"fmt"
	"strings"
)

// maxProblems bounds how many problems a validation error lists.
const maxProblems = 20

// ValidationError lists what is wrong with a schedule.
type ValidationError struct {
	Problems []string
	// Deadlock is set when the schedule is well formed but cannot finish.
	Deadlock *DeadlockError
}

func (e *ValidationError) Error() string {
	return "invalid schedule: " + strings.Join(e.Problems, "; ")
}

// Unwrap gives errors.As access to the deadlock.
func (e *ValidationError) Unwrap() error {
	if e.Deadlock == nil {
		return nil
	}
	return e.Deadlock
}

type opKey struct {
	kind Kind
	mb   int
	tag  CollTag
}

type validator struct {
	s    *Schedule
	errs []string
}

func (v *validator) addf(format string, a ...any) {
	if len(v.errs) < maxProblems {
		v.errs = append(v.errs, fmt.Sprintf(format, a...))
	}
}

// Validate checks that s is a complete, runnable schedule:
//
//  1. every op is well formed (stage, microbatch, peer or root, collective
//     id and tag in range);
//  2. each stage runs each op it must run exactly once (F and B of every
//     microbatch; the sends, receives and vocabulary ops its position and
//     s.Vocab call for) and nothing else;
//  3. on each stage the ops of one microbatch come in dependency order
//     (receive < F < send, F < B, S < T, C0 < S < C1 < Loss < B, …);
//  4. every send has its receive on the peer, and the reverse;
//  5. every stage runs the same collectives in the same order (compared by
//     id, kind, tag, microbatch and root);
//  6. a simulation with free ops finishes: blocking, in-order execution
//     cannot deadlock.
//
// The error is a *ValidationError naming the ops involved.
func Validate(s *Schedule) error {
	v := &validator{s: s}
	if s.P < 1 || s.M < 1 || len(s.Stages) != s.P {
		v.addf("schedule has P=%d, M=%d and %d stage lists; need P ≥ 1, M ≥ 1 and one list per stage", s.P, s.M, len(s.Stages))
		return &ValidationError{Problems: v.errs}
	}
	if s.LossStage < 0 || s.LossStage >= s.P {
		v.addf("loss stage %d outside [0,%d)", s.LossStage, s.P)
		return &ValidationError{Problems: v.errs}
	}
	switch s.Vocab {
	case VocabNone, VocabNaive:
	case VocabParallel:
		if s.Algorithm != 1 && s.Algorithm != 2 {
			v.addf("vocabulary-parallel algorithm %d not allowed (allowed: 1, 2)", s.Algorithm)
		}
	default:
		v.addf("vocabulary mode %q not allowed (allowed: %s, %s, %s)", s.Vocab, VocabParallel, VocabNaive, VocabNone)
	}
	for r, ops := range s.Stages {
		for j, o := range ops {
			if err := checkOpShape(s, r, j, o); err != nil {
				v.addf("%v", err)
			}
		}
	}
	if len(v.errs) > 0 {
		return &ValidationError{Problems: v.errs}
	}
	pos := make([]map[opKey]int, s.P)
	for r := range s.P {
		pos[r] = v.checkStageOps(r)
	}
	if len(v.errs) == 0 {
		for r := range s.P {
			v.checkOrder(r, pos[r])
		}
		v.checkCollectiveOrder()
	}
	if len(v.errs) > 0 {
		return &ValidationError{Problems: v.errs}
	}
	if _, err := Simulate(s, zeroCosts{}, SimOptions{}); err != nil {
		var d *DeadlockError
		if errors.As(err, &d) {
			return &ValidationError{Problems: []string{d.Error()}, Deadlock: d}
		}
		return &ValidationError{Problems: []string{err.Error()}}
	}
	return nil
}

// expected lists the ops stage r must run for each microbatch, with the peer
// or root each must name.
func (v *validator) expected(r int) map[opKey]int {
	s := v.s
	exp := map[opKey]int{}
	for i := range s.M {
		k := func(kind Kind, peer int) { exp[opKey{kind, i, NoTag}] = peer }
		c := func(kind Kind, tag CollTag, root int) { exp[opKey{kind, i, tag}] = root }
		k(F, -1)
		k(B, -1)
		if r > 0 {
			k(RecvAct, r-1)
			k(SendGrad, r-1)
		}
		if r < s.P-1 {
			k(SendAct, r+1)
			k(RecvGrad, r+1)
		}
		switch s.Vocab {
		case VocabNaive:
			if r == 0 {
				k(IF, -1)
				k(IB, -1)
			}
			if r == s.LossStage {
				k(S, -1)
				k(Loss, -1)
				k(T, -1)
			}
		case VocabParallel:
			for _, kind := range []Kind{IF, IB, S, T} {
				k(kind, -1)
			}
			if r == s.LossStage {
				k(Loss, -1)
			}
			c(AllReduce, IFSum, 0)
			c(Bcast, IBBcast, 0)
			c(Bcast, C0, s.LossStage)
			c(AllReduce, C1, s.LossStage)
			if s.Algorithm == 1 {
				c(AllReduce, C2, s.LossStage)
			}
		}
	}
	return exp
}

// checkStageOps checks stage r runs exactly the expected ops and returns
// each op's position.
func (v *validator) checkStageOps(r int) map[opKey]int {
	exp := v.expected(r)
	pos := map[opKey]int{}
	for j, o := range v.s.Stages[r] {
		key := opKey{o.Kind, o.MB, o.Tag}
		peer, ok := exp[key]
		switch {
		case !ok:
			v.addf("stage %d op %d %v does not belong on stage %d of a %s schedule", r, j, o, r, v.describe())
			continue
		case o.Peer != peer && o.Kind.IsCollective():
			v.addf("stage %d op %d %v: root must be stage %d", r, j, o, peer)
		case o.Peer != peer && o.Kind.IsP2P():
			v.addf("stage %d op %d %v: peer must be stage %d", r, j, o, peer)
		case o.Peer != -1 && o.Kind.IsCompute():
			v.addf("stage %d op %d %v: compute ops have peer -1", r, j, o)
		}
		if prev, dup := pos[key]; dup {
			v.addf("stage %d runs %v twice (ops %d and %d)", r, o, prev, j)
			continue
		}
		pos[key] = j
	}
	for i := range v.s.M {
		for key := range exp {
			if key.mb != i {
				continue
			}
			if _, ok := pos[key]; !ok {
				o := Op{Kind: key.kind, Stage: r, MB: key.mb, Peer: exp[key], Coll: -1, Tag: key.tag}
				switch {
				case key.kind.IsCollective():
					v.addf("stage %d never runs %s %s(mb %d)", r, key.kind, key.tag, key.mb)
				case key.kind == RecvAct || key.kind == RecvGrad:
					send := Op{Kind: partner(key.kind), Stage: o.Peer, MB: key.mb, Peer: r, Coll: -1}
					v.addf("stage %d never runs %v, so %v on stage %d has no receive", r, o, send, o.Peer)
				case key.kind == SendAct || key.kind == SendGrad:
					recv := Op{Kind: partner(key.kind), Stage: o.Peer, MB: key.mb, Peer: r, Coll: -1}
					v.addf("stage %d never runs %v, so %v on stage %d waits for nothing", r, o, recv, o.Peer)
				default:
					v.addf("stage %d never runs %v", r, o)
				}
			}
		}
	}
	return pos
}

func (v *validator) describe() string {
	if v.s.Vocab == VocabParallel {
		return fmt.Sprintf("vocab=%s algorithm-%d", v.s.Vocab, v.s.Algorithm)
	}
	return fmt.Sprintf("vocab=%s", v.s.Vocab)
}

// checkOrder checks the per-microbatch dependency order on stage r.
func (v *validator) checkOrder(r int, pos map[opKey]int) {
	s := v.s
	type pair struct{ a, b opKey }
	var rules []pair
	p := func(a, b Kind) { rules = append(rules, pair{opKey{a, 0, NoTag}, opKey{b, 0, NoTag}}) }
	pc := func(a Kind, at CollTag, b Kind, bt CollTag) {
		rules = append(rules, pair{opKey{a, 0, at}, opKey{b, 0, bt}})
	}
	p(F, B)
	if r > 0 {
		p(RecvAct, F)
		p(B, SendGrad)
	}
	if r < s.P-1 {
		p(F, SendAct)
		p(RecvGrad, B)
	}
	switch s.Vocab {
	case VocabNaive:
		if r == 0 {
			p(IF, F)
			p(B, IB)
		}
		if r == s.LossStage {
			p(F, S)
			p(S, Loss)
			p(Loss, T)
			p(T, B)
		}
	case VocabParallel:
		pc(IF, NoTag, AllReduce, IFSum)
		pc(Bcast, C0, S, NoTag)
		pc(S, NoTag, AllReduce, C1)
		pc(AllReduce, C1, T, NoTag)
		pc(Bcast, IBBcast, IB, NoTag)
		if s.Algorithm == 1 {
			pc(T, NoTag, AllReduce, C2)
		}
		if r == 0 {
			pc(AllReduce, IFSum, F, NoTag)
			pc(B, NoTag, Bcast, IBBcast)
		}
		if r == s.LossStage {
			pc(F, NoTag, Bcast, C0)
			pc(AllReduce, C1, Loss, NoTag)
			if s.Algorithm == 1 {
				pc(AllReduce, C2, B, NoTag)
			} else {
				p(Loss, B)
			}
		}
	}
	ops := s.Stages[r]
	for i := range s.M {
		for _, rule := range rules {
			a, b := rule.a, rule.b
			a.mb, b.mb = i, i
			ja, jb := pos[a], pos[b]
			if ja > jb {
				v.addf("stage %d runs %v (op %d) before %v (op %d), which it depends on", r, ops[jb], jb, ops[ja], ja)
			}
		}
	}
}

// checkCollectiveOrder compares every stage's collective sequence with
// stage 0's.
func (v *validator) checkCollectiveOrder() {
	seq := func(r int) []Op {
		var out []Op
		for _, o := range v.s.Stages[r] {
			if o.Kind.IsCollective() {
				o.Stage = 0
				out = append(out, o)
			}
		}
		return out
	}
	ref := seq(0)
	ids := map[int]int{}
	for k, o := range ref {
		if prev, dup := ids[o.Coll]; dup {
			v.addf("collective id %d is used twice on stage 0 (its collectives %d and %d)", o.Coll, prev, k)
		}
		ids[o.Coll] = k
	}
	for r := 1; r < v.s.P; r++ {
		got := seq(r)
	compare:
		for k := 0; k < max(len(ref), len(got)); k++ {
			switch {
			case k >= len(got):
				v.addf("stage %d has %d collectives, stage 0 has %d: stage 0's collective %d %v is missing", r, len(got), len(ref), k, ref[k])
			case k >= len(ref):
				v.addf("stage %d has %d collectives, stage 0 has %d: stage %d's collective %d %v has no partner", r, len(got), len(ref), r, k, got[k])
			case got[k] != ref[k]:
				v.addf("collective order differs: stage 0's collective %d is %v, stage %d's is %v", k, ref[k], r, got[k])
			default:
				continue
			}
			break compare
		}
	}
}
