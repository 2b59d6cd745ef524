package parallel

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// TestTextbookBubble checks the simulator against the closed forms for
// uniform stages with F = 1, B = 2 and free communication: GPipe and 1F1B
// both take (m+p−1)·(F+B), so the bubble is (p−1)/(m+p−1); GPipe keeps all
// m microbatches on every stage, 1F1B keeps min(p−i, m) on stage i.
func TestTextbookBubble(t *testing.T) {
	for _, p := range []int{1, 2, 3, 4, 8} {
		for _, m := range []int{1, 2, 3, 4, 8, 13, 32} {
			for _, sched := range []string{ScheduleGPipe, Schedule1F1B} {
				s, err := Build(Plan{PP: p, M: m, Schedule: sched, Vocab: VocabNone})
				if err != nil {
					t.Fatal(err)
				}
				c := UnitCosts()
				c.Stages[0].Mem = map[Kind]int64{F: 10, B: -10}
				res, err := Simulate(s, c, SimOptions{})
				if err != nil {
					t.Fatal(err)
				}
				want := float64((m + p - 1) * 3)
				if res.Makespan != want {
					t.Errorf("%s p=%d m=%d: makespan %v, want %v", sched, p, m, res.Makespan, want)
				}
				bubble := float64(p-1) / float64(m+p-1)
				if math.Abs(res.Bubble-bubble) > 1e-12 {
					t.Errorf("%s p=%d m=%d: bubble %v, want %v", sched, p, m, res.Bubble, bubble)
				}
				for i, st := range res.Stages {
					peak := m
					if sched == Schedule1F1B {
						peak = min(p-i, m)
					}
					if st.PeakInFlight != peak || st.PeakBytes != 10*int64(peak) {
						t.Errorf("%s p=%d m=%d stage %d: peak %d microbatches, %d bytes; want %d, %d", sched, p, m, i, st.PeakInFlight, st.PeakBytes, peak, 10*peak)
					}
					if st.Compute != float64(3*m) || math.Abs(st.Idle-(want-float64(3*m))) > 1e-9 {
						t.Errorf("%s p=%d m=%d stage %d: compute %v idle %v", sched, p, m, i, st.Compute, st.Idle)
					}
				}
			}
		}
	}
}

// TestGolden1F1B is the research note's golden case (§4.1): 1F1B with
// p = 4, m = 8, T_B = 2·T_F takes 33 units with bubble 3/11 and peaks
// [4 3 2 1].
func TestGolden1F1B(t *testing.T) {
	s, err := Build(Plan{PP: 4, M: 8, Vocab: VocabNone})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Simulate(s, UnitCosts(), SimOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var peaks []int
	for _, st := range res.Stages {
		peaks = append(peaks, st.PeakInFlight)
	}
	if res.Makespan != 33 || math.Abs(res.Bubble-3.0/11) > 1e-12 || !reflect.DeepEqual(peaks, []int{4, 3, 2, 1}) {
		t.Errorf("makespan %v bubble %v peaks %v; want 33, 3/11, [4 3 2 1]", res.Makespan, res.Bubble, peaks)
	}
}

// TestP2PLatency: with a latency d on every message, GPipe's critical path
// crosses the p−1 links once forward and once back (its forwards and
// backwards do not interleave), so the step grows by 2(p−1)·d.
func TestP2PLatency(t *testing.T) {
	const p, m, d = 4, 6, 0.25
	s, err := Build(Plan{PP: p, M: m, Schedule: ScheduleGPipe, Vocab: VocabNone})
	if err != nil {
		t.Fatal(err)
	}
	c := UnitCosts()
	c.P2P = Link{Alpha: 0.05, Beta: 0.002}
	c.P2PBytes = 100 // 0.05 + 0.2 = d
	res, err := Simulate(s, c, SimOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := float64((m+p-1)*3) + 2*(p-1)*d
	if math.Abs(res.Makespan-want) > 1e-9 {
		t.Errorf("makespan %v, want %v", res.Makespan, want)
	}
	for i, st := range res.Stages {
		if i < p-1 && st.MaxQueued < 1 {
			t.Errorf("stage %d: MaxQueued %d, want ≥ 1 (it receives gradients)", i, st.MaxQueued)
		}
	}
}

// TestDeadlockReport: a stage that waits for a gradient before sending the
// activation that gradient needs deadlocks its neighbour, and the error
// names both blocked ops.
func TestDeadlockReport(t *testing.T) {
	s := &Schedule{P: 2, M: 1, Vocab: VocabNone, LossStage: 1, Stages: [][]Op{
		{computeOp(F, 0, 0), {Kind: RecvGrad, Stage: 0, MB: 0, Peer: 1, Coll: -1}, {Kind: SendAct, Stage: 0, MB: 0, Peer: 1, Coll: -1}, computeOp(B, 0, 0)},
		{{Kind: RecvAct, Stage: 1, MB: 0, Peer: 0, Coll: -1}, computeOp(F, 1, 0), computeOp(B, 1, 0), {Kind: SendGrad, Stage: 1, MB: 0, Peer: 0, Coll: -1}},
	}}
	_, err := Simulate(s, UnitCosts(), SimOptions{})
	var d *DeadlockError
	if !errors.As(err, &d) {
		t.Fatalf("got %v, want a *DeadlockError", err)
	}
	if len(d.Blocked) != 2 || d.Blocked[0].Op.Kind != RecvGrad || d.Blocked[1].Op.Kind != RecvAct {
		t.Errorf("blocked ops %+v, want stage 0's RecvGrad and stage 1's RecvAct", d.Blocked)
	}
	for _, want := range []string{"stage 0 op 1 RecvGrad(mb 0 ← stage 1) waits for SendGrad(mb 0) from stage 1", "stage 1 op 0 RecvAct(mb 0 ← stage 0) waits for SendAct(mb 0) from stage 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	// Validate reports the same deadlock: every op is present and in
	// per-microbatch order, only the cross-stage order is wrong.
	verr := Validate(s)
	if !errors.As(verr, &d) {
		t.Errorf("Validate: %v, want a deadlock", verr)
	}
}

// TestCollectiveDeadlock: a collective entered before a receive whose
// message the other member sends only after the collective blocks both
// stages when collectives block, and runs when they go to a lane.
func TestCollectiveDeadlock(t *testing.T) {
	ar := func(stage int) Op { return Op{Kind: AllReduce, Stage: stage, MB: 0, Peer: 1, Coll: 0, Tag: C1} }
	s := &Schedule{P: 2, M: 1, Vocab: VocabNone, LossStage: 1, Stages: [][]Op{
		{ar(0), computeOp(F, 0, 0), {Kind: SendAct, Stage: 0, MB: 0, Peer: 1, Coll: -1}},
		{{Kind: RecvAct, Stage: 1, MB: 0, Peer: 0, Coll: -1}, ar(1), computeOp(F, 1, 0)},
	}}
	_, err := Simulate(s, UnitCosts(), SimOptions{})
	var d *DeadlockError
	if !errors.As(err, &d) {
		t.Fatalf("blocking: got %v, want a *DeadlockError", err)
	}
	for _, want := range []string{"stage 0 op 0 AllReduce C1#0(mb 0, root 1) waits for stages 1 to reach collective #0", "stage 1 op 0 RecvAct(mb 0 ← stage 0)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if _, err := Simulate(s, UnitCosts(), SimOptions{AsyncCollectives: true}); err != nil {
		t.Errorf("with lanes: %v", err)
	}
}

func TestSimulateRejectsBadInput(t *testing.T) {
	good := func() *Schedule {
		s, err := Build(Plan{PP: 2, M: 2, Vocab: VocabNone})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name   string
		mutate func(*Schedule)
		costs  Costs
		want   string
	}{
		{"stage count", func(s *Schedule) { s.Stages = s.Stages[:1] }, UnitCosts(), "1 stage lists for P=2"},
		{"microbatch", func(s *Schedule) { s.Stages[0][0].MB = 7 }, UnitCosts(), "microbatch outside [0,2)"},
		{"peer", func(s *Schedule) { s.Stages[0][1].Peer = 0 }, UnitCosts(), "peer must be another stage"},
		{"negative time", func(*Schedule) {}, &TableCosts{Stages: []StageCosts{{Time: map[Kind]float64{B: -1}}}}, "duration -1 must be finite and ≥ 0"},
		{"NaN latency", func(*Schedule) {}, &TableCosts{P2P: Link{Alpha: math.NaN()}}, "latency NaN must be finite"},
	}
	for _, c := range cases {
		s := good()
		c.mutate(s)
		_, err := Simulate(s, c.costs, SimOptions{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
		}
	}
}

// TestReorderedCollectivesDeadlockLanes: two stages that run the same two
// collectives in opposite orders finish their lists with lanes, but the
// lanes never agree on a collective; the error names each lane's head.
func TestReorderedCollectivesDeadlockLanes(t *testing.T) {
	c := func(stage, id int, tag CollTag) Op {
		return Op{Kind: AllReduce, Stage: stage, MB: 0, Peer: 0, Coll: id, Tag: tag}
	}
	s := &Schedule{P: 2, M: 1, Vocab: VocabNone, LossStage: 1, Stages: [][]Op{
		{c(0, 0, C1), c(0, 1, C2)},
		{c(1, 1, C2), c(1, 0, C1)},
	}}
	for _, async := range []bool{false, true} {
		_, err := Simulate(s, UnitCosts(), SimOptions{AsyncCollectives: async})
		var d *DeadlockError
		if !errors.As(err, &d) {
			t.Fatalf("async %v: got %v, want a *DeadlockError", async, err)
		}
		want := "stage 1 op 0 AllReduce C2#1"
		if async {
			want = "collective lanes stuck at: stage 0 AllReduce C1#0(mb 0, root 0), stage 1 AllReduce C2#1(mb 0, root 0)"
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("async %v: error %q does not contain %q", async, err, want)
		}
	}
}
