package coordinator

import (
	"context"
	"fmt"

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
}

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
