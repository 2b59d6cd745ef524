package coordinator

import (
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

func lines(from, to int64, t0 time.Time) []*ternv1.LogLine {
	var out []*ternv1.LogLine
	for s := from; s <= to; s++ {
		out = append(out, &ternv1.LogLine{Seq: s, Time: timestamppb.New(t0.Add(time.Duration(s) * time.Second)), Text: "line\n" + string(rune('a'+s))})
	}
	return out
}

// Lines sent again (a worker's replay after a reconnect) are stored once,
// also by a store opened afresh on the same directory, and a torn last
// line (a crash mid-write) is neither served nor in the way.
func TestLogStoreDedupAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := newLogStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	if err := s.append("j", 1, 0, lines(1, 3, t0)); err != nil {
		t.Fatal(err)
	}
	if err := s.append("j", 1, 0, lines(2, 5, t0)); err != nil {
		t.Fatal(err)
	}
	got, off, err := s.read("j", 1, 0, 0)
	if err != nil || len(got) != 5 || got[4].Seq != 5 || got[4].Text != "line f" || got[0].Rank != 0 || got[0].Attempt != 1 {
		t.Fatalf("read: %v %v", got, err)
	}
	// A torn line at the end, then a store opened afresh.
	f, err := os.OpenFile(s.rankPath("j", 1, 0), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("6 17000")
	f.Close()
	if more, next, err := s.read("j", 1, 0, off); err != nil || len(more) != 0 || next != off {
		t.Fatalf("torn line served: %v, offset %d -> %d, %v", more, off, next, err)
	}
	s2, err := newLogStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.append("j", 1, 0, lines(4, 4, t0)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(s.rankPath("j", 1, 0))
	if strings.Count(string(b), "\n") != 5 {
		t.Fatalf("a reopened store stored a repeat:\n%s", b)
	}
	if tl := tailLines(got, 2, time.Time{}); len(tl) != 2 || tl[0].Seq != 4 {
		t.Fatalf("tail 2: %v", tl)
	}
	if since := tailLines(got, 0, t0.Add(4*time.Second)); len(since) != 2 || since[0].Seq != 4 {
		t.Fatalf("since: %v", since)
	}
	if err := s2.remove("j"); err != nil {
		t.Fatal(err)
	}
	if got, _, err := s2.read("j", 1, 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("after remove: %v %v", got, err)
	}
}

func TestMetricsThinKeepsLast(t *testing.T) {
	var ms []*ternv1.StepMetrics
	for s := int64(1); s <= 1000; s++ {
		ms = append(ms, &ternv1.StepMetrics{Step: s})
	}
	out := thin(ms, 100)
	if len(out) != 100 || out[99].Step != 1000 || out[0].Step != 10 {
		t.Fatalf("thinned to %d points, first step %d, last %d", len(out), out[0].Step, out[len(out)-1].Step)
	}
	if out := thin(ms[:50], 100); len(out) != 50 {
		t.Fatalf("thinning 50 points to 100 kept %d", len(out))
	}
}

// A job's metrics held in memory stay bounded however long it runs, and
// the latest step is always among them.
func TestMetricsCacheBounded(t *testing.T) {
	s, err := newLogStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	n := int64(2*maxMetricPoints + 5)
	for step := int64(1); step <= n; step++ {
		if err := s.appendMetric("j", &ternv1.StepMetrics{Attempt: 1, Step: step, Loss: 1, Time: timestamppb.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := s.metricsAfter("j", 0)
	if err != nil || len(ms) > maxMetricPoints || ms[len(ms)-1].Step != n {
		t.Fatalf("%d points, last step %d (want at most %d, last %d): %v", len(ms), ms[len(ms)-1].Step, maxMetricPoints, n, err)
	}
	if held := len(s.metrics["j"]); held > 2*maxMetricPoints {
		t.Fatalf("%d points held in memory", held)
	}
	// The file has every step; a store opened afresh reads it back,
	// thinned the same way.
	b, err := os.ReadFile(s.metricsPath("j"))
	if err != nil || int64(strings.Count(string(b), "\n")) != n {
		t.Fatalf("metrics file: %d lines, want %d (%v)", strings.Count(string(b), "\n"), n, err)
	}
	s2, err := newLogStore(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	if ms, err := s2.metricsAfter("j", 0); err != nil || len(ms) != maxMetricPoints || ms[len(ms)-1].Step != n {
		t.Fatalf("after reopening: %d points, %v", len(ms), err)
	}
}
