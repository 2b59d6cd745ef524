package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// LeaderInfo names the current leader. The zero value means none.
type LeaderInfo struct {
	// Name is what the leader campaigned with.
	Name string
	// Fence is the create revision of the leader's election key. It grows
	// with every new leadership, so a worker can refuse orders carrying an
	// older fence than one it has seen.
	Fence int64
	// Key is the leader's election key.
	Key string
}

// Leader is a won election. Its methods are the only way to write: each
// write is one etcd transaction guarded by the comparison
// CreateRevision(Key) == Fence, which fails once the leader key is gone
// (resigned, or its session lease expired) or belongs to someone else.
// Leadership itself is advisory (a paused process may still believe it
// leads); the guard is what makes a deposed leader's writes fail.
type Leader struct {
	s       *Store
	name    string
	session *concurrency.Session
	elect   *concurrency.Election
	key     string
	fence   int64
}

// Campaign blocks until this Store's client holds leadership under name
// (for example the coordinator's host:port) or ctx ends. Candidates are
// served in the order they started campaigning. The session behind the
// leadership is a lease with Options.LeaderTTL, kept alive in the
// background; if this process stops, a standby takes over within that TTL.
func (s *Store) Campaign(ctx context.Context, name string) (*Leader, error) {
	if name == "" {
		return nil, fmt.Errorf("campaign: candidate name is empty: %w", ErrInvalid)
	}
	if err := s.checkValue(fmt.Sprintf("candidate name %.40q", name), []byte(name)); err != nil {
		return nil, fmt.Errorf("campaign: %w", err)
	}
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(s.leaderTTL))
	if err != nil {
		return nil, fmt.Errorf("campaign as %q: start session: %w", name, err)
	}
	el := concurrency.NewElection(sess, s.electionPrefix())
	if err := el.Campaign(ctx, name); err != nil {
		sess.Close()
		return nil, fmt.Errorf("campaign as %q: %w", name, err)
	}
	l := &Leader{s: s, name: name, session: sess, elect: el, key: el.Key(), fence: el.Rev()}
	// Campaign returns once every earlier candidate is gone, without
	// checking that our own key survived the wait: if the session lapsed
	// meanwhile we would lead with a fence that can never match.
	resp, err := s.cli.Get(ctx, l.key)
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("campaign as %q: confirm leadership: %w", name, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.fence {
		sess.Close()
		return nil, fmt.Errorf("campaign as %q: session lapsed while waiting: %w", name, ErrNotLeader)
	}
	return l, nil
}

// Name returns the name this leader campaigned with.
func (l *Leader) Name() string { return l.name }

// Fence returns the create revision of the leader key that guards writes.
func (l *Leader) Fence() int64 { return l.fence }

// Key returns the leader's election key.
func (l *Leader) Key() string { return l.key }

// Info returns the leader as others see it.
func (l *Leader) Info() LeaderInfo { return LeaderInfo{Name: l.name, Fence: l.fence, Key: l.key} }

// Store returns the Store this leader reads through.
func (l *Leader) Store() *Store { return l.s }

// Done is closed when the session behind the leadership ends: its lease
// expired or was revoked, the client closed, or Resign ran. After that every
// write fails with ErrNotLeader; the holder should stop acting as leader at
// once rather than wait for a write to fail.
func (l *Leader) Done() <-chan struct{} { return l.session.Done() }

// Resign gives up leadership: the leader key is deleted (so the next
// candidate takes over at once instead of after the TTL) and the session's
// lease revoked. Later writes through l fail with ErrNotLeader.
func (l *Leader) Resign(ctx context.Context) error {
	rerr := l.elect.Resign(ctx)
	cerr := l.session.Close()
	if rerr != nil {
		return fmt.Errorf("resign %q: %w", l.name, rerr)
	}
	// The revoke fails harmlessly when the lease is already gone.
	if cerr != nil && ctx.Err() == nil && !isLeaseNotFound(cerr) {
		return fmt.Errorf("resign %q: revoke session: %w", l.name, cerr)
	}
	return nil
}

// fenceCmp returns the compare that guards every write.
func (l *Leader) fenceCmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.fence)
}

// Leader returns the current leader, or ErrNoLeader.
func (s *Store) Leader(ctx context.Context) (LeaderInfo, error) {
	info, _, err := s.leaderAt(ctx)
	if err != nil {
		return LeaderInfo{}, err
	}
	if info == (LeaderInfo{}) {
		return LeaderInfo{}, ErrNoLeader
	}
	return info, nil
}

// leaderAt reads the leader (the earliest-created candidate key) and the
// revision it was read at.
func (s *Store) leaderAt(ctx context.Context) (LeaderInfo, int64, error) {
	resp, err := s.cli.Get(ctx, s.electionPrefix()+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return LeaderInfo{}, 0, fmt.Errorf("read leader: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return LeaderInfo{}, resp.Header.Revision, nil
	}
	kv := resp.Kvs[0]
	return LeaderInfo{Name: string(kv.Value), Fence: kv.CreateRevision, Key: string(kv.Key)}, resp.Header.Revision, nil
}

// observeRetry spaces out re-reads after a watch failure (for example while
// the etcd cluster has no raft leader), so the loop does not spin.
const observeRetry = 200 * time.Millisecond

// Observe sends the current leader, then every change of leader, in order,
// until ctx ends; then the channel is closed. A zero LeaderInfo means no
// leader. Changes that come and go between two reads may be skipped, but
// the last value sent is always the latest leader.
func (s *Store) Observe(ctx context.Context) <-chan LeaderInfo {
	ch := make(chan LeaderInfo)
	go func() {
		defer close(ch)
		var last LeaderInfo
		first := true
		for {
			cur, rev, err := s.leaderAt(ctx)
			if err == nil && (first || cur != last) {
				select {
				case ch <- cur:
				case <-ctx.Done():
					return
				}
				first, last = false, cur
			}
			if err == nil {
				err = s.waitChange(ctx, s.electionPrefix()+"/", rev)
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				t := time.NewTimer(observeRetry)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return
				}
			}
		}
	}()
	return ch
}

// waitChange returns when anything under prefix changes after rev.
func (s *Store) waitChange(ctx context.Context, prefix string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		if len(wr.Events) > 0 {
			return nil
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch closed")
}

// RevokeCandidates ends every candidate's session now, so that a Campaign
// that follows wins at once instead of waiting out a dead predecessor's
// LeaderTTL, and returns how many it ended. It is not fenced: call it only
// where no other coordinator can be alive on this etcd, as when the
// coordinator has just started its embedded member on its own data
// directory (etcd locks the directory, so whoever left a key there is
// dead: a coordinator killed without resigning).
func (s *Store) RevokeCandidates(ctx context.Context) (int, error) {
	resp, err := s.cli.Get(ctx, s.electionPrefix()+"/", clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list leader candidates: %w", err)
	}
	n := 0
	for _, kv := range resp.Kvs {
		if kv.Lease == 0 {
			// Not a session's key (concurrency.Election always attaches
			// one); leave it to whoever wrote it.
			continue
		}
		if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil && !isLeaseNotFound(err) {
			return n, fmt.Errorf("end the session of leader candidate %q: %w", kv.Value, err)
		}
		n++
	}
	return n, nil
}
