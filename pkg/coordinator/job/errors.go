package job

import "errors"

// Errors Step and Restore wrap. The I/O loop branches on them: ErrStale and
// ErrFinished are expected races (a report from an attempt that was already
// replaced, a rank exiting after a cancel) and are dropped quietly;
// ErrInvalidEvent means the caller is confused and is logged.
var (
	// ErrInvalidSpec: the spec given to New is malformed.
	ErrInvalidSpec = errors.New("invalid job spec")
	// ErrInvalidEvent: the event is malformed or not allowed in the current
	// phase. The job is unchanged.
	ErrInvalidEvent = errors.New("invalid event")
	// ErrStale: the event answers a request or reports on an attempt that is
	// no longer current. The job is unchanged.
	ErrStale = errors.New("stale event")
	// ErrFinished: the job is in a terminal phase. The job is unchanged.
	ErrFinished = errors.New("job has finished")
	// ErrCorrupt: a stored job record does not decode or breaks an
	// invariant, so it cannot be restored.
	ErrCorrupt = errors.New("corrupt job record")
)
