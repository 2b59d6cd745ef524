package store

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

var prefixSeq atomic.Int64

// testPrefix is a key prefix no other test, or other run of this test with
// -count, uses on the shared server.
func testPrefix(t *testing.T) string {
	return fmt.Sprintf("/test/%s/%d/", strings.ReplaceAll(t.Name(), "/", "_"), prefixSeq.Add(1))
}

// openStore opens a Store with its own client on endpoints, under a prefix
// unique to the test. Cleanups run in reverse order, so the client closes
// before a server the test started earlier.
func openStore(t *testing.T, endpoints []string, opts Options) *Store {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = testPrefix(t)
	}
	s, err := Open(testCtx(t), endpoints, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// lead opens a store on the shared server and makes it leader.
func lead(t *testing.T, opts Options) (*Store, *Leader) {
	t.Helper()
	s := openStore(t, shared.Endpoints(), opts)
	l, err := s.Campaign(testCtx(t), "coordinator-"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Resign(context.Background()) })
	return s, l
}
