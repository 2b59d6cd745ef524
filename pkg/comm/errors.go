package comm

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by calls on a closed transport.
var ErrClosed = errors.New("comm: transport closed")

// EpochError reports that a call was aborted, or a message refused, because of
// an epoch change. Callers that restart work after a membership change
// branch on it with errors.As.
type EpochError struct {
	// Have is the epoch the call ran under, Now the epoch that replaced it
	// (for a refused message: the message's epoch and the current one).
	Have, Now uint64
}

func (e *EpochError) Error() string {
	return fmt.Sprintf("comm: epoch changed from %d to %d; collective aborted", e.Have, e.Now)
}

// PeerError reports that a peer cannot be reached: its stream closed, it sent
// something malformed, or it did not answer within the timeout.
type PeerError struct {
	Rank int
	Op   string // what was being done: "send", "recv", "dial", ...
	Err  error
}

func (e *PeerError) Error() string {
	return fmt.Sprintf("comm: rank %d %s: %v", e.Rank, e.Op, e.Err)
}

func (e *PeerError) Unwrap() error { return e.Err }

// ErrTimeout is wrapped by a PeerError when a peer did not answer in time.
var ErrTimeout = errors.New("timed out")

// ErrPeerClosed is wrapped by a PeerError when the peer's transport is closed
// or its process is gone, so waiting longer cannot help.
var ErrPeerClosed = errors.New("peer closed")
