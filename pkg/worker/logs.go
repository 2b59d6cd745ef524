package worker

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Log shipping bounds.
const (
	// maxRetainedLines is how many of each rank's latest lines the agent
	// keeps to send again after a reconnect (the coordinator drops the
	// ones it already has, by number).
	maxRetainedLines = 2000
	// replayBatch bounds the lines in one RankLogs of a replay (the
	// coordinator accepts up to 1000).
	replayBatch = 500
	// maxLineBytes cuts a longer line.
	maxLineBytes = 4096
)

// logf adds a line to a rank's log and ships it to the coordinator.
func (a *Agent) logf(rr *rankRun, format string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.logLocked(rr, fmt.Sprintf(format, args...))
}

// logLocked numbers each line of text, retains it and sends it. A line
// that finds no session is sent with the replay when one opens.
func (a *Agent) logLocked(rr *rankRun, text string) {
	text = strings.TrimRight(text, "\n")
	var lines []*ternv1.LogLine
	now := timestamppb.Now()
	for _, t := range strings.Split(text, "\n") {
		if len(t) > maxLineBytes {
			t = t[:maxLineBytes] + "…"
		}
		rr.logSeq++
		lines = append(lines, &ternv1.LogLine{Seq: rr.logSeq, Time: now, Text: t})
	}
	rr.logs = append(rr.logs, lines...)
	if n := len(rr.logs); n > maxRetainedLines {
		rr.logs = append([]*ternv1.LogLine(nil), rr.logs[n-maxRetainedLines:]...)
	}
	a.offerLocked(a.logsMsg(rr, lines))
}

func (a *Agent) logsMsg(rr *rankRun, lines []*ternv1.LogLine) *ternv1.SessionRequest {
	k := rr.key
	return &ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Logs{Logs: &ternv1.RankLogs{
		Job: k.job, Attempt: int32(k.attempt), Rank: int32(k.rank), Lines: lines,
	}}}
}

// replayLogsLocked sends a rank's retained lines again.
func (a *Agent) replayLogsLocked(rr *rankRun) {
	for ls := rr.logs; len(ls) > 0; {
		n := min(len(ls), replayBatch)
		a.offerLocked(a.logsMsg(rr, ls[:n]))
		ls = ls[n:]
	}
}

// progressLogEvery paces the lines a redrawn progress bar leaves in a
// rank's log: its final state always, a redraw at most this often.
const progressLogEvery = 5 * time.Second

// progressWriter turns the data loader's progress bars (redrawn with
// '\r', ended with '\n') into log lines of a rank.
type progressWriter struct {
	a    *Agent
	rr   *rankRun
	buf  []byte
	last time.Time
}

func (w *progressWriter) Write(b []byte) (int, error) {
	for _, c := range b {
		switch c {
		case '\r':
			if len(w.buf) > 0 && time.Since(w.last) >= progressLogEvery {
				w.flush()
			}
			w.buf = w.buf[:0]
		case '\n':
			w.flush()
		default:
			if len(w.buf) < maxLineBytes {
				w.buf = append(w.buf, c)
			}
		}
	}
	return len(b), nil
}

func (w *progressWriter) flush() {
	if len(w.buf) > 0 {
		w.a.logf(w.rr, "%s", w.buf)
		w.last = time.Now()
	}
	w.buf = w.buf[:0]
}
