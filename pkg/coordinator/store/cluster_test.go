package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Three members in one process (a later test runs them as separate
// processes). The store, given every member's endpoint, keeps reading and
// writing after the raft leader member stops, through the remaining quorum,
// and its leadership session survives.
func TestClusterSurvivesMemberLoss(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	const n = 3
	urls, err := FreeLoopbackURLs(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, n)
	initial := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("m%d", i)
		initial[i] = names[i] + "=" + urls[n+i]
	}
	start := time.Now()
	members := make([]*Embedded, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			e, err := StartEmbedded(ctx, t.TempDir(), EmbedOptions{
				Name: names[i], ClientURL: urls[i], PeerURL: urls[n+i],
				InitialCluster: strings.Join(initial, ","),
				// Faster raft timings make the re-election after the
				// leader stops quick on loopback.
				HeartbeatInterval: 50 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
				DiscardLogs: true, UnsafeNoFsync: true,
			})
			members[i] = e
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("cluster up after %v", time.Since(start))
	stopped := make([]bool, n)
	t.Cleanup(func() {
		for i, m := range members {
			if !stopped[i] {
				m.Close()
			}
		}
	})

	s := openStore(t, urls[:n], Options{LeaderTTL: 5 * time.Second})
	l, err := s.Campaign(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	job, err := l.CreateJob(ctx, "j", []byte("spec"), []byte("before"))
	if err != nil {
		t.Fatal(err)
	}

	victim := -1
	for i, m := range members {
		if m.etcd.Server.Leader() == m.etcd.Server.MemberID() {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatal("no member is the raft leader")
	}
	t0 := time.Now()
	members[victim].Close()
	stopped[victim] = true
	t.Logf("stopping the leader member took %v", time.Since(t0))
	t0 = time.Now()
	defer func() { t.Logf("write after %v", time.Since(t0)) }()

	// The first requests may hit the stopped member or the election; the
	// client moves to the others. Retrying is the caller's job, so retry.
	job.State = []byte("after")
	waitFor(t, "a write through the remaining quorum", func() (bool, error) {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		updated, err := l.UpdateJob(wctx, job)
		if err != nil {
			t.Logf("write after stopping %s: %v", names[victim], err)
			return false, nil
		}
		job = updated
		return true, nil
	})
	got, err := s.GetJob(ctx, "j")
	if err != nil || string(got.State) != "after" || got.Revision != job.Revision {
		t.Fatalf("read after member loss: %+v, %v", got, err)
	}
	select {
	case <-l.Done():
		t.Fatal("leadership session ended when one member of three stopped")
	default:
	}
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
}
