package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ternml/tern/pkg/coordinator/job"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Bounds on what a job's record keeps for `describe`.
const (
	// maxEvents bounds the events kept per job.
	maxEvents = 64
	// maxAttemptsKept bounds the attempts listed (the latest ones).
	maxAttemptsKept = 100
	// stepTimesKept is how many recent step times the ETA is taken from.
	stepTimesKept = 21
)

// jobMeta is what the coordinator keeps about a job beyond the state
// machine's record, the part with a clock: when it was applied, ran and
// ended, each attempt's span and its events. It travels in the same etcd
// value as the record (stateRecord), so it survives a coordinator restart
// and a change of leader.
type jobMeta struct {
	Created  time.Time     `json:"created"`
	Started  *time.Time    `json:"started,omitempty"`
	Finished *time.Time    `json:"finished,omitempty"`
	Attempts []attemptMeta `json:"attempts,omitempty"`
	Events   []eventRecord `json:"events,omitempty"`
	// FailureAt is when job.Job.LastFailure happened; failureKey tells a
	// new failure from the one already timed.
	FailureAt  *time.Time `json:"failureAt,omitempty"`
	FailureKey string     `json:"failureKey,omitempty"`
	// SnapshotStep is the last committed in-memory snapshot step (-1 or
	// absent: none); Restores say where each rank of the latest
	// recovered attempt got its state.
	SnapshotStep *int64        `json:"snapshotStep,omitempty"`
	Restores     []restoreMeta `json:"restores,omitempty"`
}

type restoreMeta struct {
	Attempt   int     `json:"attempt"`
	Rank      int     `json:"rank"`
	Source    string  `json:"source"`
	Step      int64   `json:"step"`
	RestoreMS float64 `json:"restoreMs"`
}

type attemptMeta struct {
	N         int        `json:"n"`
	Started   time.Time  `json:"started"`
	Ended     *time.Time `json:"ended,omitempty"`
	StartStep int64      `json:"startStep"`
	LastStep  int64      `json:"lastStep"`
	Outcome   string     `json:"outcome,omitempty"`
}

type eventRecord struct {
	Time     time.Time `json:"time"`
	Severity string    `json:"severity"`
	Reason   string    `json:"reason"`
	Message  string    `json:"message"`
}

// stateRecord is the job state the coordinator stores in etcd: the state
// machine's record and the coordinator's metadata. Records written before
// the metadata existed are the machine's record alone; decodeState reads
// both.
type stateRecord struct {
	Job  json.RawMessage `json:"job"`
	Meta *jobMeta        `json:"meta"`
}

func encodeState(e *entry) ([]byte, error) {
	if e.snap != nil {
		c := e.snap.committed
		e.meta.SnapshotStep = &c
	}
	j, err := json.Marshal(e.j)
	if err != nil {
		return nil, err
	}
	return json.Marshal(stateRecord{Job: j, Meta: &e.meta})
}

func decodeState(b []byte) (*job.Job, jobMeta, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, jobMeta{}, fmt.Errorf("%w: %v", job.ErrCorrupt, err)
	}
	if _, ok := probe["job"]; !ok {
		j, err := job.Restore(b)
		return j, jobMeta{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var rec stateRecord
	if err := dec.Decode(&rec); err != nil {
		return nil, jobMeta{}, fmt.Errorf("%w: %v", job.ErrCorrupt, err)
	}
	j, err := job.Restore(rec.Job)
	if err != nil {
		return nil, jobMeta{}, err
	}
	var m jobMeta
	if rec.Meta != nil {
		m = *rec.Meta
	}
	return j, m, nil
}

// noteMeta brings a job's metadata up to date with its state after a
// step, before the state is written: the events the step emitted, the
// times of its first run and its end, the attempts launched and ended,
// and when a new failure happened. It reports whether anything changed.
func noteMeta(e *entry, acts []job.Action, now time.Time) bool {
	m := &e.meta
	j := e.j
	changed := false
	for _, a := range acts {
		if ev, ok := a.(job.Emit); ok {
			m.Events = append(m.Events, eventRecord{Time: now, Severity: string(ev.Severity), Reason: ev.Reason, Message: ev.Message})
			changed = true
		}
	}
	if n := len(m.Events); n > maxEvents {
		m.Events = slices.Clone(m.Events[n-maxEvents:])
	}
	if j.Phase == job.Running && m.Started == nil {
		m.Started, changed = &now, true
	}
	if j.Phase.Terminal() && m.Finished == nil {
		m.Finished, changed = &now, true
	}
	if f := j.LastFailure; f != nil {
		if key := fmt.Sprintf("%d/%v/%s", f.Attempt, f.Ranks, f.Message); key != m.FailureKey {
			m.FailureKey, m.FailureAt, changed = key, &now, true
		}
	}
	var cur *attemptMeta
	if n := len(m.Attempts); n > 0 {
		cur = &m.Attempts[n-1]
	}
	if j.Attempt > 0 && (cur == nil || cur.N < j.Attempt) {
		if cur != nil && cur.Ended == nil {
			endAttempt(cur, j, now)
		}
		m.Attempts = append(m.Attempts, attemptMeta{N: j.Attempt, Started: now, StartStep: j.CommittedStep, LastStep: j.CommittedStep})
		if n := len(m.Attempts); n > maxAttemptsKept {
			m.Attempts = slices.Clone(m.Attempts[n-maxAttemptsKept:])
		}
		cur, changed = &m.Attempts[len(m.Attempts)-1], true
	}
	if cur != nil && cur.Ended == nil {
		if cur.LastStep != j.CommittedStep && cur.N == j.Attempt {
			cur.LastStep, changed = j.CommittedStep, true
		}
		// An attempt is over when the job stops holding its slots, or
		// when one of its ranks failed and a recovery replaces it.
		failed := j.LastFailure != nil && j.LastFailure.Attempt == cur.N
		if !j.HoldsSlots() || failed {
			endAttempt(cur, j, now)
			changed = true
		}
	}
	return changed
}

func endAttempt(a *attemptMeta, j *job.Job, now time.Time) {
	a.Ended = &now
	switch f := j.LastFailure; {
	case f != nil && f.Attempt == a.N:
		a.Outcome = "failed: " + f.Message
	case j.Phase == job.Succeeded:
		a.Outcome = "succeeded"
	default:
		a.Outcome = j.Reason
	}
}

// metaStatus fills the status fields that come from the metadata.
func metaStatus(out *ternv1.Job, e *entry) {
	m := &e.meta
	if !m.Created.IsZero() {
		out.Created = timestamppb.New(m.Created)
	}
	if m.Started != nil {
		out.Started = timestamppb.New(*m.Started)
	}
	if m.Finished != nil {
		out.Finished = timestamppb.New(*m.Finished)
	}
	for _, a := range m.Attempts {
		as := &ternv1.AttemptStatus{Attempt: int32(a.N), Started: timestamppb.New(a.Started), StartStep: a.StartStep, LastStep: a.LastStep, Outcome: a.Outcome}
		if a.Ended != nil {
			as.Ended = timestamppb.New(*a.Ended)
		}
		out.Attempts = append(out.Attempts, as)
	}
	for _, ev := range m.Events {
		out.Events = append(out.Events, &ternv1.JobEvent{Time: timestamppb.New(ev.Time), Severity: ev.Severity, Reason: ev.Reason, Message: ev.Message})
	}
	out.SnapshotStep = -1
	if e.snap != nil {
		out.SnapshotStep = e.snap.committed
	} else if m.SnapshotStep != nil {
		out.SnapshotStep = *m.SnapshotStep
	}
	for _, r := range m.Restores {
		out.Restores = append(out.Restores, &ternv1.RankRestore{Attempt: int32(r.Attempt), Rank: int32(r.Rank), Source: r.Source, Step: r.Step, RestoreMs: r.RestoreMS})
	}
	if f := e.j.LastFailure; f != nil {
		jf := &ternv1.JobFailure{Attempt: int32(f.Attempt), Worker: f.Worker, Message: f.Message}
		for _, r := range f.Ranks {
			jf.Ranks = append(jf.Ranks, int32(r))
		}
		if m.FailureAt != nil {
			jf.Time = timestamppb.New(*m.FailureAt)
		}
		out.LastFailure = jf
	}
}
