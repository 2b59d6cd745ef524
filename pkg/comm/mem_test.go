package comm

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestMemNetworkOptionsRejected(t *testing.T) {
	for _, tc := range []struct {
		name  string
		world int
		opts  MemOptions
	}{
		{"no ranks", 0, MemOptions{}},
		{"negative timeout", 2, MemOptions{Timeout: -time.Second}},
		{"negative buffer", 2, MemOptions{LinkBufferBytes: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewMemNetwork(tc.world, tc.opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestMemMatchesBySenderAndTag(t *testing.T) {
	net := newNet(t, 3, MemOptions{})
	ctx := testCtx(t)
	a, b := Tag{KindP2P, 1, 0}, Tag{KindP2P, 1, 1}
	send := func(from, to int, tag Tag, s string) {
		t.Helper()
		if err := net[from].Send(ctx, to, tag, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	send(0, 2, a, "0a1")
	send(0, 2, b, "0b")
	send(1, 2, a, "1a")
	send(0, 2, a, "0a2")
	for _, want := range []struct {
		from int
		tag  Tag
		s    string
	}{{1, a, "1a"}, {0, b, "0b"}, {0, a, "0a1"}, {0, a, "0a2"}} {
		got, err := net[2].Recv(ctx, want.from, want.tag)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want.s {
			t.Fatalf("recv from %d %v = %q, want %q", want.from, want.tag, got, want.s)
		}
	}
	if n := len(net[2].boxes); n != 0 {
		t.Fatalf("%d mailboxes left after every message was received", n)
	}
}

func TestMemSendCopiesPayload(t *testing.T) {
	net := newNet(t, 2, MemOptions{})
	ctx := testCtx(t)
	p := []byte("abc")
	if err := net[0].Send(ctx, 1, Tag{}, p); err != nil {
		t.Fatal(err)
	}
	p[0] = 'x'
	got, err := net[1].Recv(ctx, 0, Tag{})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "abc" {
		t.Fatalf("got %q: the sender's later write reached the receiver", got)
	}
}

func TestMemCountsBytes(t *testing.T) {
	net := newNet(t, 2, MemOptions{})
	ctx := testCtx(t)
	for _, n := range []int{0, 5, 100} {
		if err := net[0].Send(ctx, 1, Tag{Kind: KindBroadcast, Seq: uint64(n)}, make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	want := Counter{Payload: 105, Framing: 3 * MemHeaderBytes}
	s0, s1 := net[0].Stats(), net[1].Stats()
	if s0.Sent != want || s0.SentByKind[KindBroadcast] != want || s0.Recv != (Counter{}) {
		t.Fatalf("sender stats %+v, want sent %+v", s0, want)
	}
	if s1.Recv != want || s1.RecvByKind[KindBroadcast] != want || s1.Sent != (Counter{}) {
		t.Fatalf("receiver stats %+v, want recv %+v", s1, want)
	}
}

func TestMemBadRank(t *testing.T) {
	net := newNet(t, 2, MemOptions{})
	ctx := testCtx(t)
	if err := net[0].Send(ctx, 2, Tag{}, nil); err == nil {
		t.Fatal("send to rank 2 of 2 accepted")
	}
	if _, err := net[0].Recv(ctx, -1, Tag{}); err == nil {
		t.Fatal("recv from rank -1 accepted")
	}
}

func TestMemRecvTimeout(t *testing.T) {
	net := newNet(t, 2, MemOptions{Timeout: 20 * time.Millisecond})
	_, err := net[0].Recv(context.Background(), 1, Tag{})
	var pe *PeerError
	if !errors.As(err, &pe) || pe.Rank != 1 || !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want a *PeerError for rank 1 wrapping ErrTimeout", err)
	}
}

func TestMemRecvContext(t *testing.T) {
	net := newNet(t, 2, MemOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := net[0].Recv(ctx, 1, Tag{})
		errc <- err
	}()
	waitFor(t, "recv to block", func() bool { return net[0].blocked() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if n := len(net[0].boxes); n != 0 {
		t.Fatalf("%d mailboxes left after the wait ended", n)
	}
}

func TestMemEpoch(t *testing.T) {
	net := newNet(t, 2, MemOptions{})
	ctx := testCtx(t)
	if err := net[0].SetEpoch(0); err == nil {
		t.Fatal("epoch 0 -> 0 accepted")
	}

	// A blocked Recv aborts with the epochs it ran under and moved to.
	errc := make(chan error, 1)
	go func() {
		_, err := net[1].Recv(ctx, 0, Tag{})
		errc <- err
	}()
	waitFor(t, "recv to block", func() bool { return net[1].blocked() == 1 })
	if err := net[1].SetEpoch(3); err != nil {
		t.Fatal(err)
	}
	var ee *EpochError
	if err := <-errc; !errors.As(err, &ee) || ee.Have != 0 || ee.Now != 3 {
		t.Fatalf("got %v, want *EpochError 0 -> 3", err)
	}

	// Rank 0 is still at epoch 0: its message is stale at rank 1 and
	// dropped on arrival, though the bytes crossed the wire.
	if err := net[0].Send(ctx, 1, Tag{}, []byte("old")); err != nil {
		t.Fatal(err)
	}
	if s := net[1].Stats(); s.Dropped != 1 || s.Recv.Payload != 3 {
		t.Fatalf("stats %+v: want 1 dropped, 3 payload bytes received", s)
	}

	// A message from a newer epoch waits until the receiver gets there.
	if err := net[0].SetEpoch(5); err != nil {
		t.Fatal(err)
	}
	if err := net[0].Send(ctx, 1, Tag{}, []byte("new")); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	if _, err := net[1].Recv(short, 0, Tag{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("recv at epoch 3 of an epoch-5 message: got %v, want to wait", err)
	}
	cancel()
	if err := net[1].SetEpoch(5); err != nil {
		t.Fatal(err)
	}
	got, err := net[1].Recv(ctx, 0, Tag{})
	if err != nil || string(got) != "new" {
		t.Fatalf("recv at epoch 5 = %q, %v", got, err)
	}

	// Buffered messages of an older epoch are dropped when the epoch moves.
	if err := net[0].Send(ctx, 1, Tag{Seq: 9}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := net[1].SetEpoch(6); err != nil {
		t.Fatal(err)
	}
	if s := net[1].Stats(); s.Dropped != 2 {
		t.Fatalf("dropped %d, want 2", s.Dropped)
	}
	if n := len(net[1].boxes); n != 0 {
		t.Fatalf("%d mailboxes left after dropping", n)
	}
}

func TestMemClose(t *testing.T) {
	net := newNet(t, 3, MemOptions{})
	ctx := testCtx(t)
	if err := net[2].Send(ctx, 0, Tag{}, []byte("last words")); err != nil {
		t.Fatal(err)
	}

	// A Recv blocked on rank 0 itself fails with ErrClosed when it closes;
	// one on rank 1 waiting for rank 2 fails at once when rank 2 closes.
	errc := make(chan error, 2)
	go func() {
		_, err := net[0].Recv(ctx, 1, Tag{})
		errc <- err
	}()
	go func() {
		_, err := net[1].Recv(ctx, 2, Tag{})
		errc <- err
	}()
	waitFor(t, "both recvs to block", func() bool { return net[0].blocked() == 1 && net[1].blocked() == 1 })
	if err := net[2].Close(); err != nil {
		t.Fatal(err)
	}
	var pe *PeerError
	if err := <-errc; !errors.As(err, &pe) || pe.Rank != 2 || !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("recv from closed rank 2: got %v, want *PeerError for rank 2 wrapping ErrPeerClosed", err)
	}
	// What rank 2 sent before it died is still delivered.
	if got, err := net[0].Recv(ctx, 2, Tag{}); err != nil || !bytes.Equal(got, []byte("last words")) {
		t.Fatalf("buffered message from closed rank: %q, %v", got, err)
	}
	if _, err := net[0].Recv(ctx, 2, Tag{}); !errors.As(err, &pe) || pe.Rank != 2 {
		t.Fatalf("second recv from closed rank 2: got %v", err)
	}
	if err := net[1].Send(ctx, 2, Tag{}, nil); !errors.As(err, &pe) || pe.Rank != 2 || !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("send to closed rank 2: got %v", err)
	}

	if err := net[0].Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("recv blocked on a transport being closed: got %v, want ErrClosed", err)
	}
	if err := net[0].Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if err := net[0].Send(ctx, 1, Tag{}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("send on closed transport: %v", err)
	}
	if err := net[0].SetEpoch(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("set epoch on closed transport: %v", err)
	}
}

func TestMemFlowControl(t *testing.T) {
	net := newNet(t, 2, MemOptions{LinkBufferBytes: 4})
	ctx := testCtx(t)
	// An empty queue takes any message; the next one must wait for room.
	if err := net[0].Send(ctx, 1, Tag{Part: 0}, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- net[0].Send(ctx, 1, Tag{Part: 1}, make([]byte, 1)) }()
	waitFor(t, "send to block", func() bool { return net[0].blocked() == 1 })
	if _, err := net[1].Recv(ctx, 0, Tag{Part: 0}); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := net[1].Recv(ctx, 0, Tag{Part: 1}); err != nil {
		t.Fatal(err)
	}

	// A Send blocked on a full queue aborts on an epoch change.
	if err := net[0].Send(ctx, 1, Tag{Part: 2}, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	go func() { errc <- net[0].Send(ctx, 1, Tag{Part: 3}, make([]byte, 4)) }()
	waitFor(t, "send to block", func() bool { return net[0].blocked() == 1 })
	if err := net[0].SetEpoch(1); err != nil {
		t.Fatal(err)
	}
	var ee *EpochError
	if err := <-errc; !errors.As(err, &ee) || ee.Now != 1 {
		t.Fatalf("got %v, want *EpochError", err)
	}
}
