package parallel

import (
	"errors"
	"strings"
	"testing"
)

// brokenCases start from a valid schedule (p = 3, m = 4, Algorithm 1, which
// has every kind of op) and break it one way each.
func TestValidateCatchesBrokenSchedules(t *testing.T) {
	build := func(t *testing.T) *Schedule {
		s, err := Build(Plan{PP: 3, M: 4, Algorithm: 1})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	find := func(ops []Op, k Kind, mb int, tag CollTag) int {
		for j, o := range ops {
			if o.Kind == k && o.MB == mb && o.Tag == tag {
				return j
			}
		}
		t.Fatalf("no %v(mb %d) %v", k, mb, tag)
		return -1
	}
	remove := func(ops []Op, j int) []Op { return append(ops[:j:j], ops[j+1:]...) }
	cases := []struct {
		name   string
		mutate func(s *Schedule)
		want   []string
	}{
		{"missing receive", func(s *Schedule) {
			s.Stages[2] = remove(s.Stages[2], find(s.Stages[2], RecvAct, 1, NoTag))
		}, []string{"stage 2 never runs RecvAct(mb 1 ← stage 1), so SendAct(mb 1 → stage 2) on stage 1 has no receive"}},
		{"missing send", func(s *Schedule) {
			s.Stages[1] = remove(s.Stages[1], find(s.Stages[1], SendGrad, 3, NoTag))
		}, []string{"stage 1 never runs SendGrad(mb 3 → stage 0), so RecvGrad(mb 3 ← stage 1) on stage 0 waits for nothing"}},
		{"duplicated op", func(s *Schedule) {
			j := find(s.Stages[1], F, 2, NoTag)
			s.Stages[1] = append(s.Stages[1], s.Stages[1][j])
		}, []string{"stage 1 runs F(mb 2) twice"}},
		{"reordered collectives", func(s *Schedule) {
			ops := s.Stages[1]
			a := find(ops, Bcast, 2, C0)
			b := find(ops, AllReduce, 2, C1)
			ops[a], ops[b] = ops[b], ops[a]
		}, []string{"collective order differs: stage 0's collective", "stage 1 runs AllReduce C1#"}},
		{"backward before forward", func(s *Schedule) {
			ops := s.Stages[0]
			a, b := find(ops, F, 3, NoTag), find(ops, B, 3, NoTag)
			ops[a], ops[b] = ops[b], ops[a]
		}, []string{"stage 0 runs B(mb 3)", "before F(mb 3)"}},
		{"T before S", func(s *Schedule) {
			ops := s.Stages[2]
			a, b := find(ops, S, 0, NoTag), find(ops, T, 0, NoTag)
			ops[a], ops[b] = ops[b], ops[a]
		}, []string{"stage 2 runs T(mb 0)", "before S(mb 0)"}},
		{"loss-stage B before C2", func(s *Schedule) {
			ops := s.Stages[2]
			j := find(ops, AllReduce, 1, C2)
			c := ops[j]
			ops = remove(ops, j)
			ops = append(ops, c)
			s.Stages[2] = ops
		}, []string{"stage 2 runs B(mb 1)", "before AllReduce C2#"}},
		{"wrong root", func(s *Schedule) {
			j := find(s.Stages[0], Bcast, 0, C0)
			s.Stages[0][j].Peer = 0
		}, []string{"root must be stage 2"}},
		{"collective id mismatch", func(s *Schedule) {
			j := find(s.Stages[1], AllReduce, 0, IFSum)
			s.Stages[1][j].Coll += 1000
		}, []string{"collective order differs"}},
		{"loss on the wrong stage", func(s *Schedule) {
			s.Stages[0] = append(s.Stages[0], computeOp(Loss, 0, 0))
		}, []string{"stage 0 op", "Loss(mb 0) does not belong on stage 0 of a vocab=parallel algorithm-1 schedule"}},
		{"missing vocabulary op", func(s *Schedule) {
			s.Stages[1] = remove(s.Stages[1], find(s.Stages[1], IB, 2, NoTag))
		}, []string{"stage 1 never runs IB(mb 2)"}},
		{"op on another stage's list", func(s *Schedule) { s.Stages[1][0].Stage = 0 }, []string{"op says stage 0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := build(t)
			if err := Validate(s); err != nil {
				t.Fatalf("the unbroken schedule is invalid: %v", err)
			}
			c.mutate(s)
			err := Validate(s)
			var v *ValidationError
			if !errors.As(err, &v) {
				t.Fatalf("got %v, want a *ValidationError", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateRejectsBadHeader(t *testing.T) {
	cases := []struct {
		s    *Schedule
		want string
	}{
		{&Schedule{P: 0, M: 1}, "need P ≥ 1, M ≥ 1"},
		{&Schedule{P: 1, M: 1, LossStage: 3, Stages: [][]Op{nil}}, "loss stage 3 outside [0,1)"},
		{&Schedule{P: 1, M: 1, Vocab: VocabParallel, Algorithm: 3, Stages: [][]Op{nil}}, "algorithm 3 not allowed"},
	}
	for _, c := range cases {
		if err := Validate(c.s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want it to contain %q", c.s, err, c.want)
		}
	}
}
