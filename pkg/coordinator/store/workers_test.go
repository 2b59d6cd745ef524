package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

// workerTTL is etcd's minimum lease TTL with default raft timings.
const workerTTL = 2 * time.Second

// A worker's key lives while its lease is renewed and disappears one TTL
// after renewals stop; watchers see it leave.
func TestWorkerLeaseExpires(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{})
	_, rev, err := s.ListWorkers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	events := s.WatchWorkers(ctx, rev)

	w, err := l.RegisterWorker(ctx, "w1", []byte(`{"addr":"127.0.0.1:1"}`), workerTTL)
	if err != nil {
		t.Fatal(err)
	}
	if w.TTL() < workerTTL {
		t.Fatalf("granted TTL %v, asked for %v", w.TTL(), workerTTL)
	}
	ev := recv(t, events, "registration event")
	if ev.Err != nil || ev.Type != EventPut || ev.Worker.Name != "w1" || ev.Worker.Lease != w.ID() {
		t.Fatalf("registration event = %+v", ev)
	}

	// Kept alive, the key outlives two TTLs.
	kctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.KeepAlive(kctx) }()
	until := time.Now().Add(2 * w.TTL())
	waitFor(t, "two TTLs to pass with the worker kept alive", func() (bool, error) {
		if _, err := s.GetWorker(ctx, "w1"); err != nil {
			return false, err
		}
		return time.Now().After(until), nil
	})

	// Renewals stop: the key goes, and the watch says so.
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("KeepAlive after cancel returned %v", err)
	}
	ev = recv(t, events, "expiry event")
	if ev.Err != nil || ev.Type != EventDelete || ev.Worker.Name != "w1" || string(ev.Worker.Info) != `{"addr":"127.0.0.1:1"}` {
		t.Fatalf("expiry event = %+v", ev)
	}
	_, err = s.GetWorker(ctx, "w1")
	wantErr(t, err, ErrNotFound, "expired worker")
	wantErr(t, w.Refresh(ctx), ErrLeaseExpired, "refresh after expiry")
}

// Heartbeat-driven renewal (Refresh), re-registration under the same name,
// adoption by a handle from ListWorkers, and deletion.
func TestWorkerRefreshAndReregister(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{})
	w, err := l.RegisterWorker(ctx, "w1", []byte("v1"), workerTTL)
	if err != nil {
		t.Fatal(err)
	}
	// Let the lease run down to its last second (etcd reports whole
	// seconds left, rounded down), then a refresh restores it.
	waitFor(t, "the lease to run down", func() (bool, error) {
		r, err := s.Client().TimeToLive(ctx, w.ID())
		if err == nil && r.TTL < 0 {
			return false, errors.New("lease expired before its last second was seen")
		}
		return err == nil && r.TTL == 0, err
	})
	if err := w.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Client().TimeToLive(ctx, w.ID()); err != nil || r.TTL < 1 {
		t.Fatalf("TTL after refresh = %+v, %v", r, err)
	}

	// The worker restarts and registers again: the key moves to a new
	// lease, the old lease is revoked, and the key stays.
	w2, err := l.RegisterWorker(ctx, "w1", []byte("v2"), workerTTL)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, w.Refresh(ctx), ErrLeaseExpired, "refresh of the replaced lease")
	got, err := s.GetWorker(ctx, "w1")
	if err != nil || string(got.Info) != "v2" || got.Lease != w2.ID() {
		t.Fatalf("re-registered worker = %+v, %v", got, err)
	}

	// A new leader adopts the lease it finds.
	adopted, err := s.WorkerLease(ctx, "w1")
	if err != nil || adopted.ID() != w2.ID() || adopted.TTL() != w2.TTL() {
		t.Fatalf("adopted lease = %+v, %v", adopted, err)
	}
	if err := adopted.Refresh(ctx); err != nil {
		t.Fatal(err)
	}

	if err := l.DeleteWorker(ctx, "w1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, w2.Refresh(ctx), ErrLeaseExpired, "refresh after delete")
	wantErr(t, l.DeleteWorker(ctx, "w1"), ErrNotFound, "delete a deleted worker")
	_, err = s.WorkerLease(ctx, "w1")
	wantErr(t, err, ErrNotFound, "adopt a deleted worker")
}

func TestWorkerBadInput(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{MaxValueBytes: 1024})
	for _, tc := range []struct {
		name string
		err  error
		run  func() error
	}{
		{"oversized info", ErrTooLarge, func() error { _, err := l.RegisterWorker(ctx, "w", make([]byte, 1025), workerTTL); return err }},
		{"TTL under a second", ErrInvalid, func() error { _, err := l.RegisterWorker(ctx, "w", nil, time.Second/10); return err }},
		{"name starting with '-'", ErrInvalid, func() error { _, err := l.RegisterWorker(ctx, "-w", nil, workerTTL); return err }},
		{"name with '/'", ErrInvalid, func() error { _, err := s.GetWorker(ctx, "a/b"); return err }},
		{"delete missing", ErrNotFound, func() error { return l.DeleteWorker(ctx, "absent") }},
	} {
		err := tc.run()
		wantErr(t, err, tc.err, tc.name)
		t.Logf("%s: %v", tc.name, err)
	}
	if ws, _, _ := s.ListWorkers(ctx); len(ws) != 0 {
		t.Fatalf("refused worker registered: %+v", ws)
	}
}
