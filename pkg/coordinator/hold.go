package coordinator

import (
	"time"

	"github.com/ternml/tern/pkg/coordinator/job"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// holdTimeout bounds how long a paused job's placement waits for the ranks
// of its last attempt to report that they stopped.
const holdTimeout = 30 * time.Second

// holdPlacement puts off placing a job whose last attempt's ranks are
// still stopping on workers that are up, as after a pause and a quick
// resume: they write the checkpoint the next attempt resumes from, and a
// rank placed on another worker would not wait for it (a rank placed on
// the same worker does). It reports whether it held the placement; the
// ranks' last reports, a lost worker or holdTimeout release it.
func (l *loop) holdPlacement(e *entry) bool {
	if e.holdOver || e.run == nil || len(l.stopping(e)) == 0 {
		e.held = false
		return false
	}
	if !e.held {
		e.held = true
		l.log.Info("placement waits for the last attempt's ranks to stop", "job", e.name, "attempt", e.run.n, "workers", l.stopping(e))
		name, n := e.name, e.run.n
		var tm *time.Timer
		tm = time.AfterFunc(holdTimeout, func() {
			select {
			case l.in <- holdExpired{name: name, attempt: n, t: tm}:
			case <-l.done:
			}
		})
		l.timers[tm] = struct{}{}
	}
	return true
}

// holdExpired: a held placement waited holdTimeout.
type holdExpired struct {
	name    string
	attempt int
	t       *time.Timer
}

func (l *loop) onHoldExpired(h holdExpired) {
	delete(l.timers, h.t)
	e := l.jobs[h.name]
	if e == nil || e.run == nil || e.run.n != h.attempt || !e.held {
		return
	}
	l.log.Warn("placing the job without waiting longer for its last attempt's ranks to report they stopped", "job", e.name, "workers", l.stopping(e))
	e.holdOver = true
	l.enqueue(e.name, job.CapacityChanged{})
}

// stopping lists the workers, still registered, on which ranks of the
// job's last attempt have not reported their end.
func (l *loop) stopping(e *entry) []string {
	run := e.run
	if run == nil || run.settled {
		return nil
	}
	var ws []string
	for i, r := range run.ranks {
		w := run.assignment[i].Worker
		if r.phase == ternv1.RankPhase_RANK_PHASE_FINISHED || r.phase == ternv1.RankPhase_RANK_PHASE_FAILED || l.registry[w] == nil {
			continue
		}
		if len(ws) == 0 || ws[len(ws)-1] != w {
			ws = append(ws, w)
		}
	}
	return ws
}

// stoppedAfterRelease records the end a rank of a job's last attempt
// reports after the job let its slots go, and releases a held placement
// once none is left running.
func (l *loop) stoppedAfterRelease(e *entry, worker string, r *ternv1.RankReport) {
	run := e.run
	rank := int(r.Rank)
	if rank < 0 || rank >= len(run.ranks) || run.assignment[rank].Worker != worker {
		return
	}
	switch r.Event.(type) {
	case *ternv1.RankReport_Finished:
		run.ranks[rank].phase = ternv1.RankPhase_RANK_PHASE_FINISHED
	case *ternv1.RankReport_Failed:
		run.ranks[rank].phase = ternv1.RankPhase_RANK_PHASE_FAILED
	default:
		return
	}
	if e.held && len(l.stopping(e)) == 0 {
		e.held = false
		l.enqueue(e.name, job.CapacityChanged{})
	}
}
