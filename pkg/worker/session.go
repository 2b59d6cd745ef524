package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// outboxLen is how many messages may wait for the coordinator. Ranks
// report a few per step, so a full outbox means the stream is stuck: the
// session is ended and the next one starts with every rank's state.
const outboxLen = 1024

var errSlowSession = fmt.Errorf("session ended: %d messages waiting for the coordinator", outboxLen)

// session runs one Session stream until it ends. accepted says whether the
// coordinator accepted it (the error is then how it ended).
func (a *Agent) session(ctx context.Context, client ternv1.CoordinatorServiceClient, sessionID string) (accepted bool, err error) {
	sctx, end := context.WithCancelCause(ctx)
	defer end(nil)
	stream, err := client.Session(sctx)
	if err != nil {
		return false, err
	}
	if err := stream.Send(&ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Hello{Hello: &ternv1.SessionHello{Worker: a.cfg.Name, SessionId: sessionID}}}); err != nil {
		return false, recvErr(stream)
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	acc := first.GetAccepted()
	if acc == nil {
		return false, fmt.Errorf("the coordinator answered the hello with %T, not an acceptance", first.Msg)
	}
	a.touch()
	a.log.Debug("session accepted")
	outbox := make(chan *ternv1.SessionRequest, outboxLen)
	a.attach(outbox, end)
	defer a.detach(outbox)

	sent := make(chan struct{})
	go func() {
		defer close(sent)
		if err := a.sendLoop(sctx, stream, outbox, max(acc.HeartbeatInterval.AsDuration(), minHeartbeat)); err != nil {
			end(err)
		}
	}()
	defer func() { end(err); <-sent }()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			if cause := context.Cause(sctx); cause != nil && !errors.Is(cause, context.Canceled) {
				return true, cause
			}
			return true, err
		}
		a.touch()
		if err := a.dispatch(msg); err != nil {
			a.log.Warn("order from the coordinator refused", "err", err)
		}
	}
}

// recvErr returns the status that ended a stream whose Send failed (Send
// reports only io.EOF; Recv says why).
func recvErr(stream ternv1.CoordinatorService_SessionClient) error {
	_, err := stream.Recv()
	return err
}

// sendLoop writes the outbox and heartbeats to the stream. On quit it
// sends what is queued and closes its side, which ends the session.
func (a *Agent) sendLoop(ctx context.Context, stream ternv1.CoordinatorService_SessionClient, outbox chan *ternv1.SessionRequest, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	heartbeat := &ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Heartbeat{Heartbeat: &ternv1.SessionHeartbeat{}}}
	for {
		select {
		case m := <-outbox:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-t.C:
			if err := stream.Send(heartbeat); err != nil {
				return err
			}
		case <-a.quit:
			for {
				select {
				case m := <-outbox:
					if err := stream.Send(m); err != nil {
						return err
					}
				default:
					return stream.CloseSend()
				}
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// attach makes outbox the current session's and queues every rank's
// latest state on it, so the coordinator catches up on what happened
// while no session was open.
func (a *Agent) attach(outbox chan *ternv1.SessionRequest, end context.CancelCauseFunc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.outbox, a.endSession = outbox, end
	for _, k := range a.sortedKeysLocked() {
		a.replayLogsLocked(a.ranks[k])
		a.replayLocked(a.ranks[k])
	}
}

func (a *Agent) detach(outbox chan *ternv1.SessionRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.outbox == outbox {
		a.outbox, a.endSession = nil, nil
	}
}

// offerLocked queues m for the coordinator if a session is open. Dropping
// it otherwise is safe: the next session replays every rank's state.
func (a *Agent) offerLocked(m *ternv1.SessionRequest) {
	if a.outbox == nil {
		return
	}
	select {
	case a.outbox <- m:
	default:
		a.endSession(errSlowSession)
		a.outbox, a.endSession = nil, nil
	}
}

func (a *Agent) sortedKeysLocked() []rankKey {
	keys := make([]rankKey, 0, len(a.ranks))
	for k := range a.ranks {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, rankKey.compare)
	return keys
}

// dispatch carries out one order from the coordinator.
func (a *Agent) dispatch(msg *ternv1.SessionResponse) error {
	switch m := msg.Msg.(type) {
	case *ternv1.SessionResponse_StartRank:
		return a.startRank(m.StartRank)
	case *ternv1.SessionResponse_Peers:
		return a.givePeers(m.Peers)
	case *ternv1.SessionResponse_StopRanks:
		a.stopRanks(m.StopRanks)
		if m.StopRanks.Forget {
			a.forgetSnapshots(m.StopRanks.Job)
		}
		return nil
	case *ternv1.SessionResponse_SnapshotCommitted:
		a.snapshotCommitted(m.SnapshotCommitted)
		return nil
	case *ternv1.SessionResponse_Accepted:
		return nil
	default:
		return fmt.Errorf("unknown order %T", msg.Msg)
	}
}
