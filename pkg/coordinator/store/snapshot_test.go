package store

import (
	"testing"
)

// The committed in-memory snapshot only moves forward, a retried commit
// is a no-op, a commit from a stale read conflicts, a leader that
// resigned cannot commit, and the record goes with its job.
func TestCommitSnapshot(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s, l := lead(t, Options{})
	_, err := l.CommitSnapshot(ctx, "j", 4, []byte("m4"))
	wantErr(t, err, ErrNotFound, "commit a snapshot of a job that does not exist")
	if _, err := l.CreateJob(ctx, "j", nil, nil); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetSnapshot(ctx, "j")
	wantErr(t, err, ErrNotFound, "snapshot before the first commit")
	c4, err := l.CommitSnapshot(ctx, "j", 4, []byte("m4"))
	if err != nil {
		t.Fatal(err)
	}
	if again, err := l.CommitSnapshot(ctx, "j", 4, []byte("m4")); err != nil || again.Revision != c4.Revision {
		t.Fatalf("repeated commit: %+v, %v (first at revision %d)", again, err, c4.Revision)
	}
	for _, step := range []uint64{4, 3, 0} {
		_, err := l.CommitSnapshot(ctx, "j", step, []byte("other"))
		wantErr(t, err, ErrStaleStep, "commit an older snapshot")
	}
	// The progress commit is a key of its own: it does not hold the
	// snapshot back, nor the other way round.
	if _, err := l.CommitStep(ctx, "j", 9, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := l.CommitSnapshot(ctx, "j", 6, []byte("m6")); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSnapshot(ctx, "j")
	if err != nil || got.Step != 6 || string(got.Manifest) != "m6" {
		t.Fatalf("GetSnapshot = %+v, %v", got, err)
	}
	b := l.Batch()
	b.CommitSnapshot("j", c4, 8, []byte("m8"))
	_, err = b.Commit(ctx)
	wantErr(t, err, ErrConflict, "commit from a stale read")

	if err := l.DeleteJob(ctx, "j", 0); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetSnapshot(ctx, "j")
	wantErr(t, err, ErrNotFound, "snapshot of a deleted job")
	if _, err := l.CreateJob(ctx, "k", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = l.CommitSnapshot(ctx, "k", 2, []byte("m2"))
	wantErr(t, err, ErrNotLeader, "commit after resigning")
}
