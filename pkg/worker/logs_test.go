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
