package parallel

import (
	"strings"
	"testing"
)

func TestBuildErrors(t *testing.T) {
	cases := []struct {
		plan Plan
		want string
	}{
		{Plan{PP: 0, M: 4}, "pipeline stages must be at least 1, got 0"},
		{Plan{PP: 2, M: 0}, "microbatches must be at least 1, got 0"},
		{Plan{PP: 2, M: 4, DP: -1}, "data-parallel replicas must be at least 1"},
		{Plan{PP: 2, M: 4, Schedule: "zb-h1"}, `schedule "zb-h1" not allowed (allowed: 1f1b, gpipe)`},
		{Plan{PP: 2, M: 4, Vocab: "tied"}, `vocabulary mode "tied" not allowed (allowed: parallel, naive, none)`},
		{Plan{PP: 2, M: 4, Algorithm: 3}, "algorithm 3 not allowed (allowed: 1, 2)"},
		{Plan{PP: 2, M: 4, Vocab: VocabNaive, Algorithm: 1}, "algorithm 1 applies only to vocab=parallel"},
		{Plan{PP: 2, M: 4, Costs: &TableCosts{Stages: []StageCosts{{Time: map[Kind]float64{F: 1}}}}}, "needs B on stage 0 to take positive time"},
	}
	for _, c := range cases {
		_, err := Build(c.plan)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Build(%+v) = %v, want an error containing %q", c.plan, err, c.want)
		}
	}
}

// TestBuildGrid builds every combination over a range of sizes, including
// fewer microbatches than stages; Build validates each, and each also runs
// with lanes.
func TestBuildGrid(t *testing.T) {
	for _, p := range []int{1, 2, 3, 4, 6} {
		for _, m := range []int{1, 2, 3, 5, 8} {
			for _, sched := range []string{Schedule1F1B, ScheduleGPipe} {
				for _, v := range []struct {
					mode VocabMode
					alg  int
				}{{VocabNone, 0}, {VocabNaive, 0}, {VocabParallel, 1}, {VocabParallel, 2}} {
					for _, blocking := range []bool{false, true} {
						plan := Plan{PP: p, M: m, Schedule: sched, Vocab: v.mode, Algorithm: v.alg, BlockingCollectives: blocking}
						s, err := Build(plan)
						if err != nil {
							t.Fatalf("%+v: %v", plan, err)
						}
						if s.P != p || s.M != m || s.Vocab != v.mode || s.Algorithm != v.alg || s.LossStage != p-1 {
							t.Errorf("%+v: schedule header %d %d %s %d %d", plan, s.P, s.M, s.Vocab, s.Algorithm, s.LossStage)
						}
						if _, err := Simulate(s, zeroCosts{}, SimOptions{AsyncCollectives: true}); err != nil {
							t.Errorf("%+v: with lanes: %v", plan, err)
						}
					}
				}
			}
		}
	}
}

// TestNaiveLayout checks where the naive placement puts the vocabulary ops:
// stage 0 looks up right before F and scatters right after B; the last stage
// runs S, Loss, T between F and B; no collectives.
func TestNaiveLayout(t *testing.T) {
	s, err := Build(Plan{PP: 3, M: 4, Vocab: VocabNaive})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"IF0 F0 >A0 IF1 F1 >A1 IF2 F2 >A2 <G0 B0 IB0 IF3 F3 >A3 <G1 B1 IB1 <G2 B2 IB2 <G3 B3 IB3",
		"<A0 F0 >A0 <A1 F1 >A1 <G0 B0 >G0 <A2 F2 >A2 <G1 B1 >G1 <A3 F3 >A3 <G2 B2 >G2 <G3 B3 >G3",
		"<A0 F0 S0 Loss0 T0 B0 >G0 <A1 F1 S1 Loss1 T1 B1 >G1 <A2 F2 S2 Loss2 T2 B2 >G2 <A3 F3 S3 Loss3 T3 B3 >G3",
	}
	for i, line := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if got := strings.TrimPrefix(line, "stage "+string(rune('0'+i))+": "); got != want[i] {
			t.Errorf("stage %d:\n got %s\nwant %s", i, got, want[i])
		}
	}
}

// TestVocabParallelLayout pins a small Algorithm-2 schedule, an example of
// what a runtime walks. The loss stage (1) holds one more microbatch than
// plain 1F1B (F0 F1 B0 F2 B1 B2): it broadcasts X_i (C0) right after F(i),
// runs S(i) and C1(i) after the next base op, Loss(i) right before B(i),
// and T(i) just before S(i+1), so F2 runs while C1(1) completes (the
// reference's B→S→F order). Stage 0 fills its wait for the first gradient
// with vocabulary work; embedding lookups for the first microbatches go up
// front and the last embedding gradients at the end.
func TestVocabParallelLayout(t *testing.T) {
	s, err := Build(Plan{PP: 2, M: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"IF0 IFsum:0 IF1 IFsum:1 IF2 IFsum:2 F0 >A0 F1 >A1 C0:0 F2 >A2 S0 C1:0 C0:1 T0 S1 C1:1 <G0 B0 C0:2 IBbcast:0 T1 S2 C1:2 <G1 B1 T2 <G2 B2 IBbcast:1 IBbcast:2 IB0 IB1 IB2",
		"IF0 IFsum:0 IF1 IFsum:1 IF2 IFsum:2 <A0 F0 C0:0 <A1 F1 S0 C1:0 Loss0 C0:1 B0 >G0 T0 S1 C1:1 <A2 F2 Loss1 C0:2 IBbcast:0 B1 >G1 T1 S2 C1:2 Loss2 B2 >G2 T2 IBbcast:1 IBbcast:2 IB0 IB1 IB2",
	}
	for i, line := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if got := strings.TrimPrefix(line, "stage "+string(rune('0'+i))+": "); got != want[i] {
			t.Errorf("stage %d:\n got %s\nwant %s", i, got, want[i])
		}
	}
}

func TestExtraWarmup(t *testing.T) {
	cases := []struct {
		plan Plan
		want int
	}{
		{Plan{PP: 4, M: 8}, 1},
		{Plan{PP: 4, M: 8, Algorithm: 1}, 2},
		{Plan{PP: 4, M: 8, BlockingCollectives: true}, 0},
		{Plan{PP: 4, M: 8, Vocab: VocabNaive}, 0},
		{Plan{PP: 4, M: 8, Schedule: ScheduleGPipe}, 0},
		{Plan{PP: 0, M: 8}, 0},
	}
	for _, c := range cases {
		if got := c.plan.ExtraWarmup(); got != c.want {
			t.Errorf("%+v: ExtraWarmup %d, want %d", c.plan, got, c.want)
		}
	}
}
