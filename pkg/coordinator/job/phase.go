package job

// Phase is where a job is in its life. Users see it in `ternctl get` and
// `describe`, so the names are the ones they expect from Kubernetes-style
// tools.
type Phase string

// The phases. Succeeded, Failed and Cancelled are terminal: a job in one of
// them accepts no more events.
const (
	// Pending: accepted, waiting for slots (Reason says what is short).
	Pending Phase = "Pending"
	// Scheduling: an attempt was placed and its ranks are starting.
	Scheduling Phase = "Scheduling"
	// Running: every rank of the current attempt is up; steps commit.
	Running Phase = "Running"
	// Recovering: ranks failed; replacements are being placed and every
	// rank restores the last committed step.
	Recovering Phase = "Recovering"
	// Paused: stopped by the user; resume continues from the committed step.
	Paused    Phase = "Paused"
	Succeeded Phase = "Succeeded"
	Failed    Phase = "Failed"
	Cancelled Phase = "Cancelled"
)

var phases = []Phase{Pending, Scheduling, Running, Recovering, Paused, Succeeded, Failed, Cancelled}

// Terminal reports whether the job is over.
func (p Phase) Terminal() bool { return p == Succeeded || p == Failed || p == Cancelled }

// live reports whether an attempt's rank processes may be running: the
// phases in which the job holds slots and rank reports mean something.
func (p Phase) live() bool { return p == Scheduling || p == Running || p == Recovering }

// Severity classes a user-facing event, as in Kubernetes events.
type Severity string

const (
	Normal  Severity = "Normal"
	Warning Severity = "Warning"
)

// Timer names a deadline the state machine asks the I/O loop to keep. The
// machine has no clock: the loop arms the timer when it sees StartTimer and
// feeds TimerFired when it expires. A timer that fires after its phase or
// attempt is over is rejected as stale, so the loop need not cancel timers.
type Timer string

const (
	// TimerStart bounds how long an attempt's ranks may take to start.
	TimerStart Timer = "start"
	// TimerRecovery bounds how long a recovery may take, from the failure
	// until every rank has restored the committed step.
	TimerRecovery Timer = "recovery"
	// TimerShrink bounds how long a job with restartPolicy.shrink waits
	// for replacements before it drops the replicas that lost ranks
	// (restartPolicy.shrinkTimeoutSeconds).
	TimerShrink Timer = "shrink"
)
