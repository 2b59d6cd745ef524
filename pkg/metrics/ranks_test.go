package metrics

import (
	"strings"
	"testing"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

func step(job string, attempt, rank int32, n int64, ms float64, sent, recv int64) *ternv1.RankReport {
	return &ternv1.RankReport{Job: job, Attempt: attempt, Rank: rank, Event: &ternv1.RankReport_Step{Step: &ternv1.RankStep{
		Step: n, Loss: float64(n), TokensPerSecond: 100, StepMs: ms, BytesSent: sent, BytesRecv: recv}}}
}

func finished(job string, attempt, rank int32) *ternv1.RankReport {
	return &ternv1.RankReport{Job: job, Attempt: attempt, Rank: rank, Event: &ternv1.RankReport_Finished{Finished: &ternv1.RankFinished{}}}
}

// Each step of an attempt counts once: replays after a reconnect and
// reports of an older attempt change nothing; a new attempt's steps count
// again, and the byte totals only grow.
func TestRanksCountEachStepOnce(t *testing.T) {
	r := NewRanks()
	for _, rep := range []*ternv1.RankReport{
		step("a", 1, 0, 1, 100, 10, 20),
		step("a", 1, 0, 2, 200, 10, 20),
		step("a", 1, 0, 2, 200, 10, 20), // replayed
		step("a", 1, 0, 1, 100, 10, 20), // older, late
		step("a", 2, 0, 1, 50, 1, 2),    // the next attempt
		step("a", 1, 0, 3, 999, 99, 99), // the superseded attempt
		step("a", 2, 1, 1, 70, 5, 5),
		step("a", 2, 0, 2, 5e6, -7, 2),  // negative bytes are not counted
		{Job: "a", Attempt: 2, Rank: 0}, // no event
	} {
		r.Observe(rep)
	}
	got := r.samples(nil)
	if len(got) != 2 {
		t.Fatalf("%d series, want 2", len(got))
	}
	s := got[0]
	if s.job != "a" || s.rank != 0 || s.attempt != 2 || s.step != 2 || s.loss != 2 {
		t.Errorf("rank 0: %+v", s)
	}
	if s.sent != 21 || s.recv != 44 {
		t.Errorf("rank 0 bytes sent %v received %v, want 21 and 44", s.sent, s.recv)
	}
	if s.hist.count != 4 || s.hist.sum != 0.1+0.2+0.05+5000 {
		t.Errorf("rank 0 step times: %d observations summing to %v", s.hist.count, s.hist.sum)
	}
	cum := s.hist.cumulative()
	if cum[0.01] != 0 || cum[0.08] != 1 || cum[0.16] != 2 || cum[0.32] != 3 || cum[stepBuckets[len(stepBuckets)-1]] != 3 {
		t.Errorf("cumulative buckets %v", cum)
	}
	if got[1].rank != 1 || got[1].sent != 5 {
		t.Errorf("rank 1: %+v", got[1])
	}
	// A scrape that no longer knows the job drops its series.
	if n := len(r.samples(func(string) bool { return false })); n != 0 {
		t.Fatalf("a scrape that knows no job returned %d series", n)
	}
	if n := len(r.samples(nil)); n != 0 {
		t.Errorf("%d series after the job was dropped", n)
	}
}

// Reports from the wire with names that cannot be labels, or no attempt,
// are left out; ranks that ended are kept up to maxEnded.
func TestRanksBounds(t *testing.T) {
	r := NewRanks()
	for _, rep := range []*ternv1.RankReport{
		step("", 1, 0, 1, 1, 1, 1),
		step("bad\xff", 1, 0, 1, 1, 1, 1),
		step(strings.Repeat("j", maxJobName+1), 1, 0, 1, 1, 1, 1),
		step("a", 0, 0, 1, 1, 1, 1),
		step("a", 1, -1, 1, 1, 1, 1),
		nil,
	} {
		r.Observe(rep)
	}
	if n := len(r.samples(nil)); n != 0 {
		t.Fatalf("%d series from bad reports", n)
	}
	for i := range maxEnded + 10 {
		r.Observe(step("a", 1, int32(i), 1, 1, 1, 1))
		r.Observe(finished("a", 1, int32(i)))
	}
	r.Observe(step("a", 1, 100000, 1, 1, 1, 1)) // running: never evicted
	got := r.samples(nil)
	if len(got) != maxEnded+1 {
		t.Fatalf("%d series, want the last %d ended and the running one", len(got), maxEnded)
	}
	if got[0].rank != 10 {
		t.Errorf("oldest kept rank %d, want 10: the first ended are evicted first", got[0].rank)
	}
}
