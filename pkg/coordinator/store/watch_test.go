package store

import (
	"context"
	"testing"
)

func TestWatchJobs(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{})
	if _, err := l.CreateJob(ctx, "before", nil, []byte("s0")); err != nil {
		t.Fatal(err)
	}
	jobs, rev, err := s.ListJobs(ctx)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("ListJobs = %+v, %v", jobs, err)
	}
	wctx, stop := context.WithCancel(ctx)
	events := s.WatchJobs(wctx, rev)

	a, err := l.CreateJob(ctx, "a", []byte("spec"), []byte("s1"))
	if err != nil {
		t.Fatal(err)
	}
	// Sub-records are not job events.
	if _, err := l.PutAttempt(ctx, "a", 0, []byte("att")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CommitStep(ctx, "a", 1, nil); err != nil {
		t.Fatal(err)
	}
	a.State = []byte("s2")
	a, err = l.UpdateJob(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteJob(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		typ   EventType
		state string
	}{{EventPut, "s1"}, {EventPut, "s2"}, {EventDelete, "s2"}}
	var last int64
	for i, w := range want {
		ev := recv(t, events, "job event")
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
		if ev.Type != w.typ || ev.Job.Name != "a" || string(ev.Job.State) != w.state || ev.Job.Revision <= last {
			t.Fatalf("event %d = %v %+v, want %v of job a with state %s after revision %d", i, ev.Type, ev.Job, w.typ, w.state, last)
		}
		last = ev.Job.Revision
	}
	stop()
	for ev := range events {
		if ev.Err != nil || ev.Job.Name != "" {
			t.Fatalf("event after cancel: %+v", ev)
		}
	}
}

// A watch from a compacted revision ends with ErrCompacted, telling the
// caller to list again.
func TestWatchCompacted(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	e := startEtcd(t, t.TempDir(), EmbedOptions{DiscardLogs: true})
	s := openStore(t, e.Endpoints(), Options{})
	l, err := s.Campaign(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	_, rev, err := s.ListJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := l.CreateJob(ctx, name, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, now, err := s.ListJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Compact(ctx, now); err != nil {
		t.Fatal(err)
	}
	ev := recv(t, s.WatchJobs(ctx, rev), "compacted watch")
	wantErr(t, ev.Err, ErrCompacted, "watch from a compacted revision")
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
}
