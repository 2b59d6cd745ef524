package coordinator

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// outboxLen is how many orders may wait for one worker's stream. Orders
// are a handful per job event, so a full outbox means the stream is stuck.
const outboxLen = 1024

var errSlowSession = fmt.Errorf("worker session ended: its outbox of %d orders is full", outboxLen)

// session is one worker's Session stream as the loop sees it: an outbox
// the stream's handler drains, and a way to end the stream.
type session struct {
	worker string
	out    chan *ternv1.SessionResponse
	end    context.CancelCauseFunc
	// heardNanos is when the worker last sent anything (Unix ns), written
	// by the stream's receiver and read by the loop's miss check.
	heardNanos atomic.Int64
}

// heard notes that the worker just sent something.
func (s *session) heard(now time.Time) { s.heardNanos.Store(now.UnixNano()) }

// lastHeard is when the worker last sent something.
func (s *session) lastHeard() time.Time { return time.Unix(0, s.heardNanos.Load()) }

// brokenStream is how a session ends when its stream failed under it
// (the worker's process died, its connection dropped or it reset the
// stream), as opposed to the worker closing its side (io.EOF) or the
// coordinator ending it. The loop counts the worker lost at once.
type brokenStream struct{ err error }

func (b brokenStream) Error() string { return "worker session stream broke: " + b.err.Error() }
func (b brokenStream) Unwrap() error { return b.err }

// offer queues msg without blocking; when the outbox is full it ends the
// session instead (the worker reconnects and is resynchronised) and
// reports false.
func (s *session) offer(msg *ternv1.SessionResponse) bool {
	select {
	case s.out <- msg:
		return true
	default:
		s.end(errSlowSession)
		return false
	}
}
