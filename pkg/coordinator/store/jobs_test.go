package store

import (
	"bytes"
	"strings"
	"testing"
)

func TestJobLifecycle(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{})

	spec, state := []byte(`{"steps":100}`), []byte(`{"phase":"Pending"}`)
	created, err := l.CreateJob(ctx, "demo", spec, state)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.CreateJob(ctx, "demo", spec, state)
	wantErr(t, err, ErrExists, "create existing job")

	got, err := s.GetJob(ctx, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Spec, spec) || !bytes.Equal(got.State, state) || got.Revision != created.Revision || got.Created != created.Created {
		t.Fatalf("GetJob = %+v, want %+v", got, created)
	}

	// A conditional update succeeds from the revision read, and a second
	// update from the same (now stale) revision conflicts.
	running := got
	running.State = []byte(`{"phase":"Running"}`)
	updated, err := l.UpdateJob(ctx, running)
	if err != nil {
		t.Fatal(err)
	}
	if updated.Revision <= got.Revision {
		t.Fatalf("revision after update %d, before %d", updated.Revision, got.Revision)
	}
	stale := got
	stale.State = []byte(`{"phase":"Failed"}`)
	_, err = l.UpdateJob(ctx, stale)
	wantErr(t, err, ErrConflict, "update from a stale revision")
	if got, _ := s.GetJob(ctx, "demo"); string(got.State) != `{"phase":"Running"}` || got.Created != created.Created {
		t.Fatalf("after the refused update: %+v", got)
	}

	// Attempts list in numeric order although written out of order.
	for _, n := range []int{10, 2, 0} {
		if _, err := l.PutAttempt(ctx, "demo", n, []byte{byte(n)}); err != nil {
			t.Fatal(err)
		}
	}
	atts, err := s.ListAttempts(ctx, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(atts) != 3 || atts[0].N != 0 || atts[1].N != 2 || atts[2].N != 10 || atts[2].Value[0] != 10 {
		t.Fatalf("ListAttempts = %+v", atts)
	}
	if a, err := s.GetAttempt(ctx, "demo", 2); err != nil || a.Value[0] != 2 {
		t.Fatalf("GetAttempt(2) = %+v, %v", a, err)
	}
	if _, err := l.PutAssignment(ctx, "demo", []byte(`{"0":"w1"}`)); err != nil {
		t.Fatal(err)
	}
	if a, err := s.GetAssignment(ctx, "demo"); err != nil || string(a.Value) != `{"0":"w1"}` {
		t.Fatalf("GetAssignment = %+v, %v", a, err)
	}
	if _, err := l.CommitStep(ctx, "demo", 5, []byte("m5")); err != nil {
		t.Fatal(err)
	}

	// Sub-records need their job.
	_, err = l.PutAttempt(ctx, "nojob", 0, nil)
	wantErr(t, err, ErrNotFound, "attempt of a missing job")
	_, err = l.PutAssignment(ctx, "nojob", nil)
	wantErr(t, err, ErrNotFound, "assignment of a missing job")
	_, err = l.CommitStep(ctx, "nojob", 1, nil)
	wantErr(t, err, ErrNotFound, "commit of a missing job")

	if _, err := l.CreateJob(ctx, "demo2", spec, state); err != nil {
		t.Fatal(err)
	}
	// "demo2" shares a prefix with "demo": deleting demo must not touch it.
	if _, err := l.PutAttempt(ctx, "demo2", 0, []byte("x")); err != nil {
		t.Fatal(err)
	}
	jobs, rev, err := s.ListJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 2 || jobs[0].Name != "demo" || jobs[1].Name != "demo2" || rev < jobs[1].Revision {
		t.Fatalf("ListJobs = %+v at %d", jobs, rev)
	}

	err = l.DeleteJob(ctx, "demo", got.Revision)
	wantErr(t, err, ErrConflict, "delete from a stale revision")
	if err := l.DeleteJob(ctx, "demo", 0); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetJob(ctx, "demo")
	wantErr(t, err, ErrNotFound, "get deleted job")
	if atts, err := s.ListAttempts(ctx, "demo"); err != nil || len(atts) != 0 {
		t.Fatalf("attempts after delete: %+v, %v", atts, err)
	}
	_, err = s.GetAssignment(ctx, "demo")
	wantErr(t, err, ErrNotFound, "assignment after delete")
	_, err = s.GetCommitted(ctx, "demo")
	wantErr(t, err, ErrNotFound, "committed step after delete")
	if atts, err := s.ListAttempts(ctx, "demo2"); err != nil || len(atts) != 1 {
		t.Fatalf("attempts of demo2 after deleting demo: %+v, %v", atts, err)
	}
	err = l.DeleteJob(ctx, "demo", 0)
	wantErr(t, err, ErrNotFound, "delete missing job")

	// The name can be reused; the new record is a new incarnation.
	again, err := l.CreateJob(ctx, "demo", spec, state)
	if err != nil {
		t.Fatal(err)
	}
	if again.Created <= created.Created {
		t.Fatalf("recreated job's Created %d not after %d", again.Created, created.Created)
	}
	if _, err := s.GetCommitted(ctx, "demo"); err == nil {
		t.Fatal("recreated job inherited the old committed step")
	}
}

func TestCommitStep(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{})
	if _, err := l.CreateJob(ctx, "j", nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetCommitted(ctx, "j")
	wantErr(t, err, ErrNotFound, "committed step before the first commit")

	c10, err := l.CommitStep(ctx, "j", 10, []byte("m10"))
	if err != nil {
		t.Fatal(err)
	}
	// The same commit again (a retry after a lost reply) is a no-op.
	again, err := l.CommitStep(ctx, "j", 10, []byte("m10"))
	if err != nil || again.Revision != c10.Revision {
		t.Fatalf("repeated commit: %+v, %v (first at revision %d)", again, err, c10.Revision)
	}
	for _, tc := range []struct {
		step     uint64
		manifest string
	}{{10, "other"}, {9, "m9"}, {0, ""}} {
		_, err := l.CommitStep(ctx, "j", tc.step, []byte(tc.manifest))
		wantErr(t, err, ErrStaleStep, "commit an old step")
	}
	if _, err := l.CommitStep(ctx, "j", 11, []byte("m11")); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCommitted(ctx, "j")
	if err != nil || got.Step != 11 || string(got.Manifest) != "m11" {
		t.Fatalf("GetCommitted = %+v, %v", got, err)
	}

	// A batch built from a stale read conflicts instead of going back.
	b := l.Batch()
	b.CommitStep("j", c10, 12, nil)
	_, err = b.Commit(ctx)
	wantErr(t, err, ErrConflict, "commit from a stale read")
}

// A batch is all or nothing: one failed precondition leaves every key as
// it was.
func TestBatchIsAtomic(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{})
	if _, err := l.CreateJob(ctx, "taken", nil, nil); err != nil {
		t.Fatal(err)
	}
	b := l.Batch()
	b.CreateJob("fresh", []byte("spec"), nil)
	b.PutAttempt("taken", 0, []byte("a0"))
	b.CreateJob("taken", nil, nil)
	_, err := b.Commit(ctx)
	wantErr(t, err, ErrExists, "batch creating an existing job")
	if !strings.Contains(err.Error(), `job "taken"`) {
		t.Errorf("error does not name the job: %v", err)
	}
	_, err = s.GetJob(ctx, "fresh")
	wantErr(t, err, ErrNotFound, "job from the refused batch")
	if atts, _ := s.ListAttempts(ctx, "taken"); len(atts) != 0 {
		t.Fatalf("attempt from the refused batch was written: %+v", atts)
	}

	b = l.Batch()
	b.CreateJob("fresh", []byte("spec"), nil)
	b.PutAttempt("fresh", 0, []byte("a0"))
	b.PutAssignment("fresh", []byte("plan"))
	rev, err := b.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	j, err := s.GetJob(ctx, "fresh")
	if err != nil || j.Revision != rev {
		t.Fatalf("job from batch: %+v, %v (batch revision %d)", j, err, rev)
	}
	if a, err := s.GetAttempt(ctx, "fresh", 0); err != nil || a.Revision != rev {
		t.Fatalf("attempt from batch: %+v, %v", a, err)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{MaxValueBytes: 1024})
	big := bytes.Repeat([]byte("x"), 1025)
	if _, err := l.CreateJob(ctx, "ok", nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		run  func() error
	}{
		{"empty job name", ErrInvalid, func() error { _, err := l.CreateJob(ctx, "", nil, nil); return err }},
		{"slash in job name", ErrInvalid, func() error { _, err := l.CreateJob(ctx, "a/b", nil, nil); return err }},
		{"job name with space", ErrInvalid, func() error { _, err := s.GetJob(ctx, "a b"); return err }},
		{"job name too long", ErrInvalid, func() error { _, err := s.GetJob(ctx, strings.Repeat("a", 254)); return err }},
		{"oversized spec", ErrTooLarge, func() error { _, err := l.CreateJob(ctx, "big", big, nil); return err }},
		{"oversized state", ErrTooLarge, func() error { _, err := l.UpdateJob(ctx, Job{Name: "ok", State: big, Revision: 1}); return err }},
		{"oversized attempt", ErrTooLarge, func() error { _, err := l.PutAttempt(ctx, "ok", 0, big); return err }},
		{"oversized assignment", ErrTooLarge, func() error { _, err := l.PutAssignment(ctx, "ok", big); return err }},
		{"oversized manifest", ErrTooLarge, func() error { _, err := l.CommitStep(ctx, "ok", 1, big); return err }},
		{"negative attempt", ErrInvalid, func() error { _, err := l.PutAttempt(ctx, "ok", -1, nil); return err }},
		{"update without revision", ErrInvalid, func() error { _, err := l.UpdateJob(ctx, Job{Name: "ok"}); return err }},
		{"empty batch", ErrInvalid, func() error { _, err := l.Batch().Commit(ctx); return err }},
		{"empty candidate", ErrInvalid, func() error { _, err := s.Campaign(ctx, ""); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			wantErr(t, err, tc.err, tc.name)
			t.Log(err)
		})
	}
	if _, err := s.GetJob(ctx, "big"); err == nil {
		t.Fatal("oversized job was stored")
	}
	if _, err := New(s.Client(), Options{MaxValueBytes: MaxValueBytesLimit + 1}); err == nil {
		t.Fatal("New accepted MaxValueBytes over the limit")
	}
	if _, err := Open(ctx, nil, Options{}); err == nil {
		t.Fatal("Open accepted no endpoints")
	}
}

// Values each under the limit can still add up to more than etcd takes in
// one request; the batch is refused before it is sent.
func TestOversizedBatch(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{MaxValueBytes: MaxValueBytesLimit})
	if _, err := l.CreateJob(ctx, "j", nil, nil); err != nil {
		t.Fatal(err)
	}
	half := bytes.Repeat([]byte("x"), MaxValueBytesLimit)
	b := l.Batch()
	b.PutAttempt("j", 0, half)
	b.PutAssignment("j", half)
	_, err := b.Commit(ctx)
	wantErr(t, err, ErrTooLarge, "two 1 MiB values in one batch")
	t.Log(err)
	if atts, _ := s.ListAttempts(ctx, "j"); len(atts) != 0 {
		t.Fatal("part of the oversized batch was written")
	}
	// One value at the limit fits.
	if _, err := l.PutAttempt(ctx, "j", 0, half); err != nil {
		t.Fatal(err)
	}
}
