package job

import "github.com/ternml/tern/pkg/coordinator/sched"

// Event is an input to Step: something the I/O loop observed (a worker's
// report, an etcd change, a scheduler answer, a user's command, an expired
// timer). Events that name an attempt are checked against the current one,
// so a late report from an attempt already replaced is rejected as stale.
type Event interface {
	// kind is the event's name in error messages and scripts.
	kind() string
}

// CapacityChanged: a worker joined or left, or another job released slots.
// A job waiting for slots asks for a placement again.
type CapacityChanged struct{}

// Placed answers RequestPlacement or RequestReplacement: the scheduler
// found slots for attempt Attempt. For a replacement, Assignment is the
// whole job's and keeps the surviving ranks where they are.
type Placed struct {
	Attempt    int
	Assignment sched.Assignment
}

// Unplaceable answers a placement request the cluster cannot satisfy now.
// Reason is the scheduler's explanation (sched.CapacityError's text).
type Unplaceable struct {
	Attempt int
	Reason  string
}

// RanksStarted: every rank of Attempt has started and joined its peers.
type RanksStarted struct{ Attempt int }

// StepCommitted: the coordinator committed Step for Attempt (every rank
// reported it; the commit is in etcd).
type StepCommitted struct {
	Attempt int
	Step    int64
}

// RankFailed: a rank of Attempt exited or reported an error. Worker, if
// set, must be the worker the rank runs on. Exited says whether the process
// exited, with ExitStatus, or failed while still up (an error report).
type RankFailed struct {
	Attempt    int
	Rank       int
	Worker     string
	Reason     string
	Exited     bool
	ExitStatus int
}

// WorkerLost: a worker's lease expired or its heartbeats stopped. It
// concerns the job only if ranks of the current attempt run there; the loop
// may send it to every job.
type WorkerLost struct {
	Worker string
	Reason string
}

// Finished: the ranks of Attempt completed the last step, Step.
type Finished struct {
	Attempt int
	Step    int64
}

// Cancel: the user cancelled the job.
type Cancel struct{}

// Pause: the user paused the job; its ranks stop and its slots are freed.
type Pause struct{}

// Resume: the user resumed a paused job.
type Resume struct{}

// RecoveryDone: every rank of the recovery attempt Attempt restored Step and
// rejoined; training continues.
type RecoveryDone struct {
	Attempt int
	Step    int64
}

// TimerFired: a deadline armed by StartTimer expired.
type TimerFired struct {
	Timer   Timer
	Attempt int
}

func (CapacityChanged) kind() string { return "capacity-changed" }
func (Placed) kind() string          { return "placed" }
func (Unplaceable) kind() string     { return "unplaceable" }
func (RanksStarted) kind() string    { return "ranks-started" }
func (StepCommitted) kind() string   { return "step-committed" }
func (RankFailed) kind() string      { return "rank-failed" }
func (WorkerLost) kind() string      { return "worker-lost" }
func (Finished) kind() string        { return "finished" }
func (Cancel) kind() string          { return "cancel" }
func (Pause) kind() string           { return "pause" }
func (Resume) kind() string          { return "resume" }
func (RecoveryDone) kind() string    { return "recovery-done" }
func (TimerFired) kind() string      { return "timer" }
