package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EventType says what happened to a key.
type EventType int

const (
	// EventPut: the record was created or replaced.
	EventPut EventType = iota + 1
	// EventDelete: the record was deleted (for a worker: also when its lease
	// expired).
	EventDelete
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	default:
		return fmt.Sprintf("EventType(%d)", int(t))
	}
}

// JobEvent is a change of a job record.
type JobEvent struct {
	Type EventType
	// Job is the record after a put. After a delete it is the record as it
	// was, with Revision set to the deleting revision.
	Job Job
	// Err, when set, ends the stream: the channel closes after this event.
	// ErrCompacted means the start revision is gone: list again and watch
	// from the new list's revision.
	Err error
}

// WatchJobs streams changes to job records after revision afterRev (from
// ListJobs; 0: from now on), in revision order, until ctx ends, when the
// channel is closed. Attempts, assignments and committed steps do not show
// up here.
func (s *Store) WatchJobs(ctx context.Context, afterRev int64) <-chan JobEvent {
	return watchPrefix(ctx, s, s.jobsPrefix(), afterRev,
		func(ev *clientv3.Event) (JobEvent, error) {
			if ev.Type == mvccpb.DELETE {
				j := Job{Name: strings.TrimPrefix(string(ev.Kv.Key), s.jobsPrefix())}
				if ev.PrevKv != nil {
					if prev, err := s.decodeJob(ev.PrevKv); err == nil {
						j = prev
					}
				}
				j.Revision = ev.Kv.ModRevision
				return JobEvent{Type: EventDelete, Job: j}, nil
			}
			j, err := s.decodeJob(ev.Kv)
			return JobEvent{Type: EventPut, Job: j}, err
		},
		func(err error) JobEvent { return JobEvent{Err: err} })
}

// watchPrefix runs one etcd watch on prefix and converts its events. The
// goroutine it starts is owned by ctx: it exits, closing the channel, when
// ctx ends or the watch fails (after sending the failure).
func watchPrefix[E any](ctx context.Context, s *Store, prefix string, afterRev int64,
	conv func(*clientv3.Event) (E, error), fail func(error) E) <-chan E {
	out := make(chan E)
	go func() {
		defer close(out)
		send := func(e E) bool {
			select {
			case out <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		// WithRequireLeader makes a watch served by a member cut off from
		// the raft leader fail instead of going silent.
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		defer cancel()
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
		if afterRev > 0 {
			opts = append(opts, clientv3.WithRev(afterRev+1))
		}
		for wr := range s.cli.Watch(wctx, prefix, opts...) {
			if wr.CompactRevision != 0 {
				send(fail(fmt.Errorf("watch %s after revision %d: history compacted up to revision %d: %w",
					prefix, afterRev, wr.CompactRevision, ErrCompacted)))
				return
			}
			if err := wr.Err(); err != nil {
				if ctx.Err() == nil {
					send(fail(fmt.Errorf("watch %s: %w", prefix, err)))
				}
				return
			}
			for _, ev := range wr.Events {
				e, err := conv(ev)
				if err != nil {
					send(fail(fmt.Errorf("watch %s: %w", prefix, err)))
					return
				}
				if !send(e) {
					return
				}
			}
		}
		if ctx.Err() == nil {
			send(fail(fmt.Errorf("watch %s: %w", prefix, errWatchClosed)))
		}
	}()
	return out
}

// errWatchClosed reports a watch channel that closed while its context was
// still live, which the etcd client does when it is closed itself.
var errWatchClosed = errors.New("watch closed by the etcd client")
