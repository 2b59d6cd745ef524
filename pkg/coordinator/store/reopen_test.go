package store

import (
	"os"
	"path/filepath"
	"testing"
)

// Close and reopen the data directory: jobs, attempts and committed steps
// survive, and the member comes back on the same URLs.
func TestEmbeddedReopenKeepsData(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	var urls [2]string
	for round := range 2 {
		e, err := StartEmbedded(ctx, dir, EmbedOptions{UnsafeNoFsync: true})
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(ctx, e.Endpoints(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := s.Campaign(ctx, "coordinator")
		if err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			urls = [2]string{e.ClientURL(), e.PeerURL()}
			if _, err := l.CreateJob(ctx, "kept", []byte("spec"), []byte("state")); err != nil {
				t.Fatal(err)
			}
			if _, err := l.PutAttempt(ctx, "kept", 0, []byte("a0")); err != nil {
				t.Fatal(err)
			}
			if _, err := l.CommitStep(ctx, "kept", 42, []byte("manifest")); err != nil {
				t.Fatal(err)
			}
		} else {
			j, err := s.GetJob(ctx, "kept")
			if err != nil || string(j.Spec) != "spec" || string(j.State) != "state" {
				t.Fatalf("job after reopen: %+v, %v", j, err)
			}
			if a, err := s.GetAttempt(ctx, "kept", 0); err != nil || string(a.Value) != "a0" {
				t.Fatalf("attempt after reopen: %+v, %v", a, err)
			}
			if c, err := s.GetCommitted(ctx, "kept"); err != nil || c.Step != 42 || string(c.Manifest) != "manifest" {
				t.Fatalf("committed after reopen: %+v, %v", c, err)
			}
			// The ports were free again (nothing else binds them in between
			// unless the machine is busy), so they are reused.
			if got := [2]string{e.ClientURL(), e.PeerURL()}; got != urls {
				t.Logf("URLs changed across reopen: %v then %v (ports taken meanwhile?)", urls, got)
			}
		}
		if err := l.Resign(ctx); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		e.Close() // a second Close is harmless
	}
	if fi, err := os.Stat(filepath.Join(dir, logFileName)); err != nil || fi.Size() == 0 {
		t.Errorf("no etcd log in the data directory: %v", err)
	}
}
