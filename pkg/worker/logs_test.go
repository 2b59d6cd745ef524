package worker

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// A progress bar redrawn with '\r' leaves its final state in the rank's
// log, and a redraw only when the last line is old; lines are numbered.
func TestProgressWriterLogsBars(t *testing.T) {
	a := &Agent{log: slog.New(slog.DiscardHandler), ranks: map[rankKey]*rankRun{}}
	rr := &rankRun{key: rankKey{"j", 1, 0}}
	w := &progressWriter{a: a, rr: rr, last: time.Now()}
	io.WriteString(w, "\rload 1 MB\rload 2 MB\rload 3 MB")
	if len(rr.logs) != 0 {
		t.Fatalf("redraws logged at once: %v", rr.logs)
	}
	io.WriteString(w, "\n")
	w.last = time.Now().Add(-2 * progressLogEvery)
	io.WriteString(w, "\rtok 1\rtok 2\n")
	if len(rr.logs) != 3 || rr.logs[0].Text != "load 3 MB" || rr.logs[1].Text != "tok 1" || rr.logs[2].Text != "tok 2" {
		t.Fatalf("logged %v", rr.logs)
	}
	for i, l := range rr.logs {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d numbered %d", i, l.Seq)
		}
	}
}

// Each live rank on a worker holds its own local index (its GPU with
// spec.device.gpu auto); a superseded rank's index is free for the rank
// that replaces it, and a finished rank's for anyone.
func TestFreeLocalIndex(t *testing.T) {
	a := &Agent{ranks: map[rankKey]*rankRun{}}
	add := func(k rankKey, leaving ...*rankRun) *rankRun {
		rr := &rankRun{key: k, local: a.freeLocalLocked(leaving)}
		a.ranks[k] = rr
		return rr
	}
	r0 := add(rankKey{"j", 1, 0})
	r1 := add(rankKey{"j", 1, 1})
	if r0.local != 0 || r1.local != 1 {
		t.Fatalf("two ranks got local indices %d and %d, want 0 and 1", r0.local, r1.local)
	}
	r0.done = true
	if r := add(rankKey{"k", 1, 0}); r.local != 0 {
		t.Errorf("after rank 0 ended, a new rank got %d, want 0", r.local)
	}
	if r := add(rankKey{"j", 2, 1}, r1); r.local != 1 {
		t.Errorf("the rank superseding local 1 got %d, want 1", r.local)
	}
	if r := add(rankKey{"m", 1, 0}); r.local != 2 {
		t.Errorf("a third live rank got %d, want 2", r.local)
	}
}
