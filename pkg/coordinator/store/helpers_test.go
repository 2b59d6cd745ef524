package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// shared is one embedded etcd for the tests that do not stop or compact
// it; each test works under its own key prefix.
var shared *Embedded

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "store-test-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared, err = StartEmbedded(context.Background(), dir, EmbedOptions{UnsafeNoFsync: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	shared.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testDeadline bounds every wait for a condition. Generous, since it only
// matters when a test is failing.
const testDeadline = 20 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	t.Cleanup(cancel)
	return ctx
}

// startEtcd starts a private embedded member in a temporary directory.
func startEtcd(t *testing.T, dir string, opts EmbedOptions) *Embedded {
	t.Helper()
	opts.UnsafeNoFsync = true
	e, err := StartEmbedded(testCtx(t), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// waitFor polls cond until it reports true, failing the test if it errors
// or testDeadline passes first.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v", what, testDeadline)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recv reads one value from ch or fails after testDeadline.
func recv[E any](t *testing.T, ch <-chan E, what string) E {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return e
	case <-time.After(testDeadline):
		t.Fatalf("%s: nothing within %v", what, testDeadline)
	}
	panic("unreachable")
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}
