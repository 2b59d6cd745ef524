package store

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type campaignResult struct {
	l   *Leader
	err error
}

// campaign runs Campaign in the background; the result arrives on the
// returned channel.
func campaign(ctx context.Context, s *Store, name string) <-chan campaignResult {
	ch := make(chan campaignResult, 1)
	go func() {
		l, err := s.Campaign(ctx, name)
		ch <- campaignResult{l, err}
	}()
	return ch
}

// candidates counts the keys under the election prefix.
func candidates(ctx context.Context, s *Store) (int64, error) {
	r, err := s.Client().Get(ctx, s.electionPrefix()+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return r.Count, nil
}

// waitCandidates waits until n candidates are campaigning.
func waitCandidates(t *testing.T, s *Store, n int64) {
	t.Helper()
	waitFor(t, "candidates to line up", func() (bool, error) {
		c, err := candidates(testCtx(t), s)
		return c == n, err
	})
}

// Two coordinators on one etcd: the second waits while the first leads,
// and takes over when the first resigns; then a third takes over when the
// second's session is closed. Observers see each change in order.
func TestElectionHandover(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	opts := Options{Prefix: testPrefix(t)}
	a := openStore(t, shared.Endpoints(), opts)
	b := openStore(t, shared.Endpoints(), opts)
	c := openStore(t, shared.Endpoints(), opts)
	observed := a.Observe(ctx)
	if first := recv(t, observed, "initial leader"); first != (LeaderInfo{}) {
		t.Fatalf("leader before any campaign: %+v", first)
	}
	_, err := a.Leader(ctx)
	wantErr(t, err, ErrNoLeader, "leader before any campaign")

	la, err := a.Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := recv(t, observed, "leader a"); got != la.Info() {
		t.Fatalf("observed %+v, want %+v", got, la.Info())
	}
	if _, err := la.CreateJob(ctx, "j", nil, []byte("by a")); err != nil {
		t.Fatal(err)
	}

	bres := campaign(ctx, b, "b")
	waitCandidates(t, a, 2)
	select {
	case r := <-bres:
		t.Fatalf("b won while a leads: %+v, %v", r.l, r.err)
	default:
	}
	if cur, err := b.Leader(ctx); err != nil || cur != la.Info() {
		t.Fatalf("Leader() while b waits = %+v, %v", cur, err)
	}

	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	r := recv(t, bres, "b's campaign")
	if r.err != nil {
		t.Fatal(r.err)
	}
	lb := r.l
	if lb.Fence() <= la.Fence() {
		t.Fatalf("b's fence %d not after a's %d", lb.Fence(), la.Fence())
	}
	// The observer may see a gap (no leader) between a and b.
	for got := recv(t, observed, "leader b"); got != lb.Info(); got = recv(t, observed, "leader b") {
		if got != (LeaderInfo{}) {
			t.Fatalf("observed %+v between a and b", got)
		}
	}
	_, err = la.CreateJob(ctx, "after-resign", nil, nil)
	wantErr(t, err, ErrNotLeader, "write after resigning")
	j, err := b.GetJob(ctx, "j")
	if err != nil {
		t.Fatal(err)
	}
	j.State = []byte("by b")
	if _, err := lb.UpdateJob(ctx, j); err != nil {
		t.Fatal(err)
	}

	// b's session ends (its lease revoked, as when its process exits
	// cleanly): c, waiting, takes over.
	cres := campaign(ctx, c, "c")
	waitCandidates(t, a, 2)
	if err := lb.session.Close(); err != nil {
		t.Fatal(err)
	}
	r = recv(t, cres, "c's campaign")
	if r.err != nil {
		t.Fatal(r.err)
	}
	lc := r.l
	defer lc.Resign(ctx)
	for got := recv(t, observed, "leader c"); got != lc.Info(); got = recv(t, observed, "leader c") {
		if got != (LeaderInfo{}) {
			t.Fatalf("observed %+v between b and c", got)
		}
	}
	select {
	case <-lb.Done():
	default:
		t.Fatal("b's Done not closed after its session closed")
	}
	_, err = lb.UpdateJob(ctx, j)
	wantErr(t, err, ErrNotLeader, "write after the session closed")
}

// A leader whose process dies without resigning (its client just stops)
// is replaced once its session lease expires.
func TestElectionFailoverOnCrash(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	opts := Options{Prefix: testPrefix(t), LeaderTTL: 2 * time.Second}
	a, err := Open(ctx, shared.Endpoints(), opts)
	if err != nil {
		t.Fatal(err)
	}
	b := openStore(t, shared.Endpoints(), opts)
	la, err := a.Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	bres := campaign(ctx, b, "b")
	waitCandidates(t, b, 2)
	// Orphan the session: keepalives stop but nothing is revoked, as when
	// the process is killed.
	la.session.Orphan()
	a.Close()
	r := recv(t, bres, "b's campaign after a's lease expired")
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.l.Resign(ctx)
	if info, err := b.Leader(ctx); err != nil || info.Name != "b" {
		t.Fatalf("Leader() = %+v, %v", info, err)
	}
}

// A leader that is paused (here: its lease revoked behind its back, as when
// it expires during a long GC pause or partition) and replaced can still
// try to write. Every write is refused with ErrNotLeader and leaves no
// trace.
func TestDeposedLeaderIsFenced(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	opts := Options{Prefix: testPrefix(t), LeaderTTL: 2 * time.Second}
	a := openStore(t, shared.Endpoints(), opts)
	b := openStore(t, shared.Endpoints(), opts)
	la, err := a.Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	job, err := la.CreateJob(ctx, "j", []byte("spec"), []byte("s1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := la.CommitStep(ctx, "j", 7, []byte("m7")); err != nil {
		t.Fatal(err)
	}

	if _, err := b.Client().Revoke(ctx, la.session.Lease()); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Campaign(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Resign(ctx)
	_, revBefore, err := b.ListJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}

	stale := job
	stale.State = []byte("s2 by a")
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"update job", func() error { _, err := la.UpdateJob(ctx, stale); return err }},
		{"create job", func() error { _, err := la.CreateJob(ctx, "ghost", nil, nil); return err }},
		{"delete job", func() error { return la.DeleteJob(ctx, "j", 0) }},
		{"put attempt", func() error { _, err := la.PutAttempt(ctx, "j", 1, []byte("x")); return err }},
		{"put assignment", func() error { _, err := la.PutAssignment(ctx, "j", []byte("x")); return err }},
		{"commit step", func() error { _, err := la.CommitStep(ctx, "j", 8, []byte("m8")); return err }},
		{"register worker", func() error { _, err := la.RegisterWorker(ctx, "w", nil, 2*time.Second); return err }},
		{"delete worker", func() error { return la.DeleteWorker(ctx, "w") }},
		{"batch", func() error {
			bt := la.Batch()
			bt.UpdateJob(stale)
			bt.PutAttempt("j", 2, nil)
			_, err := bt.Commit(ctx)
			return err
		}},
		// A stale precondition would fail too; the fence is reported first.
		{"stale batch", func() error {
			bt := la.Batch()
			bt.CreateJob("j", nil, nil)
			_, err := bt.Commit(ctx)
			return err
		}},
	} {
		if err := tc.run(); !errors.Is(err, ErrNotLeader) {
			t.Errorf("%s by the deposed leader: got %v, want ErrNotLeader", tc.name, err)
		}
	}

	// No trace: no key under the prefix changed after b took over (the
	// only revision since is b's own election key, read before the writes).
	all, err := b.Client().Get(ctx, opts.Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range all.Kvs {
		if kv.ModRevision > revBefore {
			t.Errorf("key %s written at revision %d, after the deposed leader's fence failed", kv.Key, kv.ModRevision)
		}
	}
	if got, err := b.GetJob(ctx, "j"); err != nil || string(got.State) != "s1" || got.Revision != job.Revision {
		t.Fatalf("job after refused writes: %+v, %v", got, err)
	}
	if c, err := b.GetCommitted(ctx, "j"); err != nil || c.Step != 7 {
		t.Fatalf("committed after refused writes: %+v, %v", c, err)
	}
	waitFor(t, "a's Done to close", func() (bool, error) {
		select {
		case <-la.Done():
			return true, nil
		default:
			return false, nil
		}
	})
}
