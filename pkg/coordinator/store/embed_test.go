package store

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
)

// A remembered port that another process now holds is replaced by a fresh
// one; a port the caller fixed is not, and the error says why.
func TestEmbeddedPortTaken(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyURL := "http://" + busy.Addr().String()

	dir := t.TempDir()
	free, err := FreeLoopbackURLs(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeMemberURLs(dir, memberURLs{Client: busyURL, Peer: free[0]}); err != nil {
		t.Fatal(err)
	}
	e := startEtcd(t, dir, EmbedOptions{DiscardLogs: true})
	if e.ClientURL() == busyURL {
		t.Fatalf("started on the busy URL %s", busyURL)
	}
	if got, ok := readMemberURLs(dir); !ok || got.Client != e.ClientURL() {
		t.Fatalf("remembered URLs %+v, serving on %s", got, e.ClientURL())
	}

	_, err = StartEmbedded(ctx, t.TempDir(), EmbedOptions{ClientURL: busyURL, DiscardLogs: true, UnsafeNoFsync: true})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("fixed busy client URL: got %v, want EADDRINUSE", err)
	}
}

func TestEmbeddedBadOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name, dir, want string
		opts            EmbedOptions
	}{
		{"no directory", "", "data directory is empty", EmbedOptions{}},
		{"log level", t.TempDir(), `log level "loud"`, EmbedOptions{LogLevel: "loud"}},
		{"client URL", t.TempDir(), "client URL", EmbedOptions{ClientURL: "http://[::1", DiscardLogs: true}},
		{"cluster without peer URL", t.TempDir(), "PeerURL is empty", EmbedOptions{InitialCluster: "a=http://127.0.0.1:1", DiscardLogs: true}},
	} {
		_, err := StartEmbedded(ctx, tc.dir, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, err := FreeLoopbackURLs(0); err == nil {
		t.Error("FreeLoopbackURLs(0) did not fail")
	}
}
