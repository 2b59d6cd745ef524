package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// revokeTimeout bounds the clean-up revoke of a lease whose registration
// failed; if etcd does not answer, the lease expires on its own.
const revokeTimeout = 2 * time.Second

// Worker is a registered worker: its key exists while its lease lives.
type Worker struct {
	Name string
	// Info is the caller's description of the worker (address, capacity,
	// labels), stored unchanged.
	Info     []byte
	Lease    clientv3.LeaseID
	Revision int64
}

// WorkerLease keeps a worker's registration alive. The coordinator renews
// it on each heartbeat from the worker (Refresh) or continuously
// (KeepAlive); when renewals stop, etcd deletes the worker's key one TTL
// later and watchers see the worker leave.
type WorkerLease struct {
	s    *Store
	name string
	id   clientv3.LeaseID
	ttl  time.Duration
}

// Name returns the worker's name.
func (w *WorkerLease) Name() string { return w.name }

// ID returns the etcd lease ID.
func (w *WorkerLease) ID() clientv3.LeaseID { return w.id }

// TTL returns the lease TTL granted by etcd, which raises requests under
// its minimum (2 s with default raft timings).
func (w *WorkerLease) TTL() time.Duration { return w.ttl }

// RegisterWorker stores the worker's info under a new lease of ttl (rounded
// up to whole seconds). A worker registering again under the same name, for
// example after a restart, replaces the old registration, whose lease is
// revoked; a handle to the old lease then reports ErrLeaseExpired.
func (l *Leader) RegisterWorker(ctx context.Context, name string, info []byte, ttl time.Duration) (*WorkerLease, error) {
	if err := checkName("worker", name); err != nil {
		return nil, fmt.Errorf("register worker: %w", err)
	}
	if err := l.s.checkValue(fmt.Sprintf("info of worker %q", name), info); err != nil {
		return nil, fmt.Errorf("register worker: %w", err)
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("register worker %q: TTL %v is under 1 s (etcd's minimum is 2 s with default raft timings): %w", name, ttl, ErrInvalid)
	}
	cli := l.s.cli
	g, err := cli.Grant(ctx, int64(ttlSeconds(ttl)))
	if err != nil {
		return nil, fmt.Errorf("register worker %q: grant lease: %w", name, err)
	}
	key := l.s.workerKey(name)
	resp, err := cli.Txn(ctx).If(l.fenceCmp()).
		Then(clientv3.OpPut(key, string(info), clientv3.WithLease(g.ID), clientv3.WithPrevKV())).
		Commit()
	if err == nil && !resp.Succeeded {
		err = fmt.Errorf("fence %d of %q: %w", l.fence, l.name, ErrNotLeader)
	}
	if err != nil {
		// Without a key the lease guards nothing; expiry would clean it up
		// too, but not before its TTL.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeTimeout)
		cli.Revoke(rctx, g.ID)
		cancel()
		return nil, fmt.Errorf("register worker %q: %w", name, wrapEtcd(err))
	}
	if prev := resp.Responses[0].GetResponsePut().GetPrevKv(); prev != nil && prev.Lease != 0 && clientv3.LeaseID(prev.Lease) != g.ID {
		// The old lease no longer holds the key (the put moved it), so
		// revoking it deletes nothing; it stops a stale keepalive. Failure
		// is harmless: the lease expires on its own.
		cli.Revoke(ctx, clientv3.LeaseID(prev.Lease))
	}
	return &WorkerLease{s: l.s, name: name, id: g.ID, ttl: time.Duration(g.TTL) * time.Second}, nil
}

// DeleteWorker removes a worker's registration now and revokes its lease.
// A missing worker is ErrNotFound.
func (l *Leader) DeleteWorker(ctx context.Context, name string) error {
	if err := checkName("worker", name); err != nil {
		return fmt.Errorf("delete worker: %w", err)
	}
	cli := l.s.cli
	resp, err := cli.Txn(ctx).If(l.fenceCmp()).
		Then(clientv3.OpDelete(l.s.workerKey(name), clientv3.WithPrevKV())).
		Commit()
	if err != nil {
		return fmt.Errorf("delete worker %q: %w", name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("delete worker %q: fence %d of %q: %w", name, l.fence, l.name, ErrNotLeader)
	}
	prev := resp.Responses[0].GetResponseDeleteRange().GetPrevKvs()
	if len(prev) == 0 {
		return fmt.Errorf("delete worker %q: %w", name, ErrNotFound)
	}
	if id := clientv3.LeaseID(prev[0].Lease); id != 0 {
		if _, err := cli.Revoke(ctx, id); err != nil && !isLeaseNotFound(err) {
			return fmt.Errorf("delete worker %q: revoke lease %x: %w", name, int64(id), err)
		}
	}
	return nil
}

// Refresh renews the lease once, as on a heartbeat. ErrLeaseExpired means
// the registration is gone: the worker must register again.
func (w *WorkerLease) Refresh(ctx context.Context) error {
	ttl, err := w.s.renew.renew(ctx, w.id)
	if err != nil {
		if isLeaseNotFound(err) {
			return fmt.Errorf("refresh worker %q lease %x: %w", w.name, int64(w.id), ErrLeaseExpired)
		}
		return fmt.Errorf("refresh worker %q lease %x: %w", w.name, int64(w.id), err)
	}
	if ttl <= 0 {
		return fmt.Errorf("refresh worker %q lease %x: %w", w.name, int64(w.id), ErrLeaseExpired)
	}
	return nil
}

// KeepAlive renews the lease every third of its TTL until ctx ends (it
// then returns ctx's error and the lease runs out one TTL later) or the
// lease is lost (ErrLeaseExpired).
func (w *WorkerLease) KeepAlive(ctx context.Context) error {
	ch, err := w.s.cli.KeepAlive(ctx, w.id)
	if err != nil {
		return fmt.Errorf("keep worker %q alive: %w", w.name, err)
	}
	// The client drops responses nobody reads (and logs each drop), so
	// drain them even though only the channel's closing matters.
	for range ch {
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("keep worker %q lease %x alive: %w", w.name, int64(w.id), ErrLeaseExpired)
}

// WorkerLease returns a handle on a registered worker's existing lease, so
// a newly elected leader can keep renewing registrations made by its
// predecessor.
func (s *Store) WorkerLease(ctx context.Context, name string) (*WorkerLease, error) {
	w, err := s.GetWorker(ctx, name)
	if err != nil {
		return nil, err
	}
	if w.Lease == 0 {
		return nil, fmt.Errorf("worker %q has no lease: %w", name, ErrLeaseExpired)
	}
	ttl, err := s.cli.TimeToLive(ctx, w.Lease)
	if err != nil {
		return nil, fmt.Errorf("worker %q lease %x: %w", name, int64(w.Lease), err)
	}
	if ttl.TTL <= 0 {
		return nil, fmt.Errorf("worker %q lease %x: %w", name, int64(w.Lease), ErrLeaseExpired)
	}
	return &WorkerLease{s: s, name: name, id: w.Lease, ttl: time.Duration(ttl.GrantedTTL) * time.Second}, nil
}

func (s *Store) decodeWorker(kv *mvccpb.KeyValue) Worker {
	return Worker{
		Name:     strings.TrimPrefix(string(kv.Key), s.workersPrefix()),
		Info:     kv.Value,
		Lease:    clientv3.LeaseID(kv.Lease),
		Revision: kv.ModRevision,
	}
}

// GetWorker returns a registered worker.
func (s *Store) GetWorker(ctx context.Context, name string) (Worker, error) {
	if err := checkName("worker", name); err != nil {
		return Worker{}, err
	}
	kv, err := s.get(ctx, s.workerKey(name), fmt.Sprintf("worker %q", name))
	if err != nil {
		return Worker{}, err
	}
	return s.decodeWorker(kv), nil
}

// ListWorkers returns the registered workers, ordered by name, and the
// revision the list was read at (for WatchWorkers).
func (s *Store) ListWorkers(ctx context.Context) ([]Worker, int64, error) {
	resp, err := s.cli.Get(ctx, s.workersPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("list workers: %w", err)
	}
	out := make([]Worker, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, s.decodeWorker(kv))
	}
	return out, resp.Header.Revision, nil
}

// WorkerEvent is a change of a worker registration.
type WorkerEvent struct {
	Type EventType
	// Worker is the registration after a put; after a delete (or lease
	// expiry) the registration as it was, with Revision set to the deleting
	// revision.
	Worker Worker
	// Err, when set, ends the stream (see JobEvent.Err).
	Err error
}

// WatchWorkers streams worker registrations and departures after revision
// afterRev (from ListWorkers; 0: from now on) until ctx ends.
func (s *Store) WatchWorkers(ctx context.Context, afterRev int64) <-chan WorkerEvent {
	return watchPrefix(ctx, s, s.workersPrefix(), afterRev,
		func(ev *clientv3.Event) (WorkerEvent, error) {
			if ev.Type == mvccpb.DELETE {
				w := Worker{Name: strings.TrimPrefix(string(ev.Kv.Key), s.workersPrefix())}
				if ev.PrevKv != nil {
					w = s.decodeWorker(ev.PrevKv)
				}
				w.Revision = ev.Kv.ModRevision
				return WorkerEvent{Type: EventDelete, Worker: w}, nil
			}
			return WorkerEvent{Type: EventPut, Worker: s.decodeWorker(ev.Kv)}, nil
		},
		func(err error) WorkerEvent { return WorkerEvent{Err: err} })
}
