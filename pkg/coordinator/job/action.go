package job

import (
	"fmt"
	"strings"

	"github.com/ternml/tern/pkg/coordinator/sched"
)

// Action is an output of Step: something the I/O loop must carry out, in
// the order given. Persist always comes first, so the record in etcd is
// never behind what workers were told (the write-ahead rule etcd raft's
// Ready follows). Every action is idempotent, so after a coordinator
// restart the loop may re-issue what Reconcile returns without harm.
type Action interface {
	fmt.Stringer
	action()
}

// Persist: write the job record (the Job, JSON-encoded) to etcd; Version is
// the record's new version.
type Persist struct{ Version uint64 }

// RequestPlacement: ask the scheduler to place the whole job for Attempt
// (sched.Place), then feed Placed or Unplaceable.
type RequestPlacement struct {
	Attempt int
	Layout  sched.Layout
}

// RequestReplacement: ask the scheduler for new slots for Ranks
// (sched.Replace with the job's current assignment), preferring to avoid
// the workers in Avoid, then feed Placed or Unplaceable for Attempt.
type RequestReplacement struct {
	Attempt int
	// Layout is the current attempt's shape: smaller than the spec's
	// after a shrink.
	Layout sched.Layout
	Ranks  []int
	Avoid  []string
}

// Launch: start every rank of Attempt on its assigned slot, restoring
// FromStep (0: the initial state) before the first step.
type Launch struct {
	Attempt    int
	FromStep   int64
	Assignment sched.Assignment
}

// AbortAttempt: tell the surviving ranks of Attempt to abort in-flight
// collectives and hold their state until a recovery attempt arrives.
type AbortAttempt struct{ Attempt int }

// StartRecovery: start the ranks in Replaced on their new slots and move
// every rank to Attempt; all of them restore FromStep (from local copies,
// peers' fragments or a checkpoint) and report RecoveryDone.
type StartRecovery struct {
	Attempt    int
	FromStep   int64
	Assignment sched.Assignment
	Replaced   []int
	// Sources, when set, changes the data-parallel size: rank r of
	// Attempt restores the state rank Sources[r] of the previous attempt
	// held at FromStep (Recovery.Sources). Ranks whose source ran on
	// another worker fetch it from there or from its peers' fragments.
	Sources []int
}

// RequestGrowth: ask the scheduler to place the replicas a shrunk job is
// missing (sched.Grow with the job's current assignment and Layout, the
// spec's shape), keeping the running ranks where they are, then feed
// Placed or Unplaceable for Attempt.
type RequestGrowth struct {
	Attempt int
	Layout  sched.Layout
}

// StopRanks: stop every rank process of Attempt that still runs.
type StopRanks struct{ Attempt int }

// StartTimer: arm Timer for Attempt; feed TimerFired when it expires. The
// durations are the loop's configuration.
type StartTimer struct {
	Timer   Timer
	Attempt int
}

// Emit: record a user-facing event (shown by `describe` and `get -w`).
// Reason is a short CamelCase code, Message a sentence for people.
type Emit struct {
	Severity Severity
	Reason   string
	Message  string
}

func (Persist) action()            {}
func (RequestPlacement) action()   {}
func (RequestReplacement) action() {}
func (RequestGrowth) action()      {}
func (Launch) action()             {}
func (AbortAttempt) action()       {}
func (StartRecovery) action()      {}
func (StopRanks) action()          {}
func (StartTimer) action()         {}
func (Emit) action()               {}

func (a Persist) String() string { return fmt.Sprintf("persist v%d", a.Version) }
func (a RequestPlacement) String() string {
	return fmt.Sprintf("request-placement attempt=%d dp=%d pp=%d", a.Attempt, a.Layout.DP, a.Layout.PP)
}
func (a RequestReplacement) String() string {
	s := fmt.Sprintf("request-replacement attempt=%d ranks=%s", a.Attempt, ints(a.Ranks))
	if len(a.Avoid) > 0 {
		s += " avoid=" + strings.Join(a.Avoid, ",")
	}
	return s
}
func (a RequestGrowth) String() string {
	return fmt.Sprintf("request-growth attempt=%d dp=%d pp=%d", a.Attempt, a.Layout.DP, a.Layout.PP)
}
func (a Launch) String() string {
	return fmt.Sprintf("launch attempt=%d from-step=%d [%s]", a.Attempt, a.FromStep, a.Assignment)
}
func (a AbortAttempt) String() string { return fmt.Sprintf("abort attempt=%d", a.Attempt) }
func (a StartRecovery) String() string {
	s := fmt.Sprintf("start-recovery attempt=%d from-step=%d replaced=%s [%s]", a.Attempt, a.FromStep, ints(a.Replaced), a.Assignment)
	if a.Sources != nil {
		s += " sources=" + ints(a.Sources)
	}
	return s
}
func (a StopRanks) String() string { return fmt.Sprintf("stop attempt=%d", a.Attempt) }
func (a StartTimer) String() string {
	return fmt.Sprintf("start-timer %s attempt=%d", a.Timer, a.Attempt)
}
func (a Emit) String() string { return fmt.Sprintf("emit %s %s: %s", a.Severity, a.Reason, a.Message) }

// ints writes "1,2,5".
func ints(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}
