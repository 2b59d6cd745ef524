package comm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// grpcTestToken is a job token of the required length; tests that need a
// wrong one change a byte.
const grpcTestToken = "0123456789abcdef0123456789abcdef"

// grpcTestTimeout is the transports' wait limit in tests: far above what any
// test needs, so reaching it means a bug (a test asserts the kind of error,
// never the elapsed time).
const grpcTestTimeout = 30 * time.Second

func grpcTestOptions(r, world int) GRPCOptions {
	return GRPCOptions{JobID: "job-test", Rank: r, World: world, Token: grpcTestToken, Timeout: grpcTestTimeout}
}

// listenGRPC starts world transports, adjusted by tweak, closed at the end
// of the test.
func listenGRPC(t testing.TB, world int, tweak func(r int, o *GRPCOptions)) ([]*GRPCTransport, []string) {
	t.Helper()
	trs := make([]*GRPCTransport, world)
	addrs := make([]string, world)
	for r := range world {
		o := grpcTestOptions(r, world)
		if tweak != nil {
			tweak(r, &o)
		}
		tr, err := ListenGRPC(o)
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
		t.Cleanup(func() { tr.Close() })
		trs[r], addrs[r] = tr, tr.Addr()
	}
	return trs, addrs
}

// connectGRPC calls Connect on every transport at once, as separate
// processes would, and returns their errors.
func connectGRPC(trs []*GRPCTransport, addrs []string) []error {
	ctx, cancel := context.WithTimeout(context.Background(), grpcTestTimeout)
	defer cancel()
	errs := make([]error, len(trs))
	var wg sync.WaitGroup
	for r, tr := range trs {
		wg.Go(func() { errs[r] = tr.Connect(ctx, addrs) })
	}
	wg.Wait()
	return errs
}

// newGRPCNet returns world connected transports.
func newGRPCNet(t testing.TB, world int, tweak func(r int, o *GRPCOptions)) []*GRPCTransport {
	t.Helper()
	trs, addrs := listenGRPC(t, world, tweak)
	for r, err := range connectGRPC(trs, addrs) {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	return trs
}

// grpcWait polls cond until it holds, failing the test after
// grpcTestTimeout.
func grpcWait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(grpcTestTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %v", what, grpcTestTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// grpcPattern is n deterministic bytes that differ per seed.
func grpcPattern(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func TestGRPCSendRecvSizes(t *testing.T) {
	const chunk = 64 << 10
	sizes := []int{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 7, 10 << 20}
	trs := newGRPCNet(t, 3, func(_ int, o *GRPCOptions) { o.ChunkBytes = chunk })
	ctx := context.Background()

	// Every rank sends every size to every other rank, all at once.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for from, tr := range trs {
		for to := range trs {
			if to == from {
				continue
			}
			wg.Go(func() {
				for i, n := range sizes {
					if err := tr.Send(ctx, to, Tag{Kind: KindBroadcast, Seq: uint64(i)}, grpcPattern(100*from+10*to+i, n)); err != nil {
						errs <- err
					}
				}
			})
			wg.Go(func() {
				for i, n := range sizes {
					got, err := trs[to].Recv(ctx, from, Tag{Kind: KindBroadcast, Seq: uint64(i)})
					if err != nil {
						errs <- err
						continue
					}
					if !bytes.Equal(got, grpcPattern(100*from+10*to+i, n)) {
						errs <- fmt.Errorf("%d -> %d, %d bytes: payload differs (got %d bytes)", from, to, n, len(got))
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	total := 0
	for _, n := range sizes {
		total += n
	}
	var sentFraming, recvFraming int64
	for r, tr := range trs {
		s := tr.Stats()
		want := int64(2 * total) // to and from each of the two others
		if s.Sent.Payload != want || s.Recv.Payload != want {
			t.Errorf("rank %d: payload sent %d received %d, want %d each", r, s.Sent.Payload, s.Recv.Payload, want)
		}
		if s.SentByKind[KindBroadcast] != s.Sent || s.RecvByKind[KindBroadcast] != s.Recv {
			t.Errorf("rank %d: per-kind counters %+v %+v do not match totals %+v %+v", r, s.SentByKind[KindBroadcast], s.RecvByKind[KindBroadcast], s.Sent, s.Recv)
		}
		if s.Sent.Framing <= 0 {
			t.Errorf("rank %d: no framing counted", r)
		}
		sentFraming += s.Sent.Framing
		recvFraming += s.Recv.Framing
	}
	// Both ends count the same frames.
	if sentFraming != recvFraming {
		t.Errorf("framing: %d bytes sent, %d received", sentFraming, recvFraming)
	}
}

func TestGRPCOutOfOrderTags(t *testing.T) {
	trs := newGRPCNet(t, 2, func(_ int, o *GRPCOptions) { o.ChunkBytes = 100 })
	ctx := context.Background()
	const n = 6
	for i := range n {
		if err := trs[0].Send(ctx, 1, Tag{Kind: KindP2P, Seq: uint64(i)}, grpcPattern(i, 250)); err != nil {
			t.Fatal(err)
		}
	}
	// The same tag twice is received first in, first out.
	for _, seed := range []int{40, 41} {
		if err := trs[0].Send(ctx, 1, Tag{Kind: KindP2P, Seq: 99}, grpcPattern(seed, 10)); err != nil {
			t.Fatal(err)
		}
	}
	for i := n - 1; i >= 0; i-- {
		got, err := trs[1].Recv(ctx, 0, Tag{Kind: KindP2P, Seq: uint64(i)})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, grpcPattern(i, 250)) {
			t.Errorf("tag %d: wrong payload", i)
		}
	}
	for _, seed := range []int{40, 41} {
		got, err := trs[1].Recv(ctx, 0, Tag{Kind: KindP2P, Seq: 99})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, grpcPattern(seed, 10)) {
			t.Errorf("repeated tag: got the messages out of order")
		}
	}
}

func TestGRPCConcurrentSends(t *testing.T) {
	trs := newGRPCNet(t, 3, func(_ int, o *GRPCOptions) { o.ChunkBytes = 1000; o.SendQueueLen = 2 })
	ctx := context.Background()
	const goroutines, msgs = 6, 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*goroutines*msgs)
	for from := range 2 {
		for g := range goroutines {
			wg.Go(func() {
				for i := range msgs {
					seq := uint64(g*msgs + i)
					if err := trs[from].Send(ctx, 2, Tag{Kind: KindAllGather, Seq: seq}, grpcPattern(int(seq)+1000*from, 3000+int(seq))); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Go(func() {
			for seq := range uint64(goroutines * msgs) {
				got, err := trs[2].Recv(ctx, from, Tag{Kind: KindAllGather, Seq: seq})
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, grpcPattern(int(seq)+1000*from, 3000+int(seq))) {
					errs <- fmt.Errorf("from %d seq %d: wrong payload", from, seq)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestGRPCSendToSelf(t *testing.T) {
	trs := newGRPCNet(t, 2, nil)
	ctx := context.Background()
	payload := []byte("to myself")
	if err := trs[1].Send(ctx, 1, Tag{Seq: 1}, payload); err != nil {
		t.Fatal(err)
	}
	payload[0] = 'X' // the message is a copy
	got, err := trs[1].Recv(ctx, 1, Tag{Seq: 1})
	if err != nil || string(got) != "to myself" {
		t.Fatalf("got %q, %v", got, err)
	}
	if s := trs[1].Stats(); s.Sent.Total() != 0 || s.Recv.Total() != 0 {
		t.Errorf("a message to itself touched no wire but was counted: %+v", s)
	}
}

func TestGRPCStaleEpochDropped(t *testing.T) {
	trs := newGRPCNet(t, 2, nil)
	ctx := context.Background()
	tag := Tag{Kind: KindAllReduce, Seq: 7}

	// The receiver moved on; the sender has not: its message is dropped.
	if err := trs[1].SetEpoch(1); err != nil {
		t.Fatal(err)
	}
	if err := trs[0].Send(ctx, 1, tag, []byte("old")); err != nil {
		t.Fatal(err)
	}
	grpcWait(t, "the stale message to be dropped", func() bool { return trs[1].Stats().Dropped == 1 })
	if s := trs[1].Stats(); s.Recv.Payload != 3 {
		t.Errorf("a dropped message still crossed the wire: received payload %d, want 3", s.Recv.Payload)
	}

	// Same tag in the new epoch goes through.
	if err := trs[0].SetEpoch(1); err != nil {
		t.Fatal(err)
	}
	if err := trs[0].Send(ctx, 1, tag, []byte("new")); err != nil {
		t.Fatal(err)
	}
	got, err := trs[1].Recv(ctx, 0, tag)
	if err != nil || string(got) != "new" {
		t.Fatalf("got %q, %v; want the epoch-1 message", got, err)
	}

	// A message buffered unreceived is dropped when the epoch moves past it.
	if err := trs[0].Send(ctx, 1, Tag{Seq: 8}, []byte("buffered")); err != nil {
		t.Fatal(err)
	}
	grpcWait(t, "the message to arrive", func() bool { return trs[1].Stats().Recv.Payload == 3+3+8 })
	if err := trs[1].SetEpoch(2); err != nil {
		t.Fatal(err)
	}
	if d := trs[1].Stats().Dropped; d != 2 {
		t.Errorf("dropped %d messages, want 2", d)
	}
	if err := trs[1].SetEpoch(2); err == nil {
		t.Error("SetEpoch to the current epoch succeeded")
	}
}

func TestGRPCSetEpochAbortsBlockedCalls(t *testing.T) {
	// Rank 1 buffers at most one message, so rank 0's stream to it stalls,
	// then rank 0's one-message queue fills and its Send blocks.
	trs := newGRPCNet(t, 2, func(_ int, o *GRPCOptions) { o.SendQueueLen = 1; o.MaxBufferedBytes = 1 })
	ctx := context.Background()

	recvErr := make(chan error, 1)
	go func() {
		_, err := trs[1].Recv(ctx, 0, Tag{Seq: 1000})
		recvErr <- err
	}()
	sendErr := make(chan error, 1)
	go func() {
		big := make([]byte, 1<<20)
		for i := uint64(0); ; i++ {
			if err := trs[0].Send(ctx, 1, Tag{Seq: i}, big); err != nil {
				sendErr <- err
				return
			}
		}
	}()
	grpcWait(t, "a blocked Recv", func() bool { return trs[1].blocked.Load() == 1 })
	grpcWait(t, "a blocked Send", func() bool { return trs[0].blocked.Load() == 1 })

	// The sender first: once the receiver moves on it drops what it holds
	// and the stalled stream would flow again. A Send seen blocked may still
	// have been taken by a stream that had not quite stalled, and the next
	// one may start in the new epoch, so the epoch moves on until a Send
	// fails.
	var sendFailed error
	grpcWait(t, "a Send to fail", func() bool {
		if err := trs[0].SetEpoch(trs[0].Epoch() + 1); err != nil {
			t.Fatal(err)
		}
		select {
		case sendFailed = <-sendErr:
			return true
		default:
			return false
		}
	})
	var ee *EpochError
	if !errors.As(sendFailed, &ee) || ee.Have >= ee.Now {
		t.Errorf("blocked Send: got %v, want an *EpochError", sendFailed)
	}
	if err := trs[1].SetEpoch(3); err != nil {
		t.Fatal(err)
	}
	if err := <-recvErr; !errors.As(err, &ee) || ee.Have != 0 || ee.Now != 3 {
		t.Errorf("blocked Recv: got %v, want an *EpochError from 0 to 3", err)
	}
}

func TestGRPCRecvTimeout(t *testing.T) {
	trs := newGRPCNet(t, 2, func(_ int, o *GRPCOptions) { o.Timeout = 200 * time.Millisecond })
	_, err := trs[0].Recv(context.Background(), 1, Tag{Seq: 1})
	var pe *PeerError
	if !errors.As(err, &pe) || pe.Rank != 1 || !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want a *PeerError for rank 1 wrapping ErrTimeout", err)
	}
	// The peer is alive: it still works afterwards.
	if err := trs[1].Send(context.Background(), 0, Tag{Seq: 2}, []byte("late")); err != nil {
		t.Fatal(err)
	}
	if got, err := trs[0].Recv(context.Background(), 1, Tag{Seq: 2}); err != nil || string(got) != "late" {
		t.Fatalf("after a timeout: got %q, %v", got, err)
	}
}

func TestGRPCRecvContext(t *testing.T) {
	trs := newGRPCNet(t, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		grpcWait(t, "a blocked Recv", func() bool { return trs[0].blocked.Load() == 1 })
		cancel()
	}()
	if _, err := trs[0].Recv(ctx, 1, Tag{Seq: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestGRPCPeerClosed(t *testing.T) {
	trs := newGRPCNet(t, 3, nil)
	ctx := context.Background()

	recvErr := make(chan error, 1)
	go func() {
		_, err := trs[0].Recv(ctx, 2, Tag{Seq: 2})
		recvErr <- err
	}()
	grpcWait(t, "a blocked Recv", func() bool { return trs[0].blocked.Load() == 1 })

	// What rank 2 queued before closing still arrives.
	if err := trs[2].Send(ctx, 1, Tag{Seq: 1}, grpcPattern(5, 200_000)); err != nil {
		t.Fatal(err)
	}
	if err := trs[2].Close(); err != nil {
		t.Fatal(err)
	}
	var pe *PeerError
	if err := <-recvErr; !errors.As(err, &pe) || pe.Rank != 2 || !errors.Is(err, ErrPeerClosed) {
		t.Errorf("pending Recv: got %v, want a *PeerError for rank 2 wrapping ErrPeerClosed", err)
	}
	got, err := trs[1].Recv(ctx, 2, Tag{Seq: 1})
	if err != nil || !bytes.Equal(got, grpcPattern(5, 200_000)) {
		t.Errorf("message sent before Close: got %d bytes, %v", len(got), err)
	}
	if _, err := trs[1].Recv(ctx, 2, Tag{Seq: 3}); !errors.As(err, &pe) || pe.Rank != 2 {
		t.Errorf("later Recv: got %v, want a *PeerError for rank 2", err)
	}
	grpcWait(t, "rank 1 to see rank 2 gone", func() bool {
		err := trs[1].Send(ctx, 2, Tag{Seq: 4}, nil)
		return errors.As(err, &pe) && pe.Rank == 2
	})
	// The survivors still talk to each other.
	if err := trs[0].Send(ctx, 1, Tag{Seq: 5}, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	if got, err := trs[1].Recv(ctx, 0, Tag{Seq: 5}); err != nil || string(got) != "ok" {
		t.Fatalf("got %q, %v", got, err)
	}
	// Calls on the closed transport fail with ErrClosed.
	if err := trs[2].Send(ctx, 0, Tag{}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if _, err := trs[2].Recv(ctx, 0, Tag{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Recv after Close: %v", err)
	}
}

func TestGRPCCloseAbortsBlockedRecv(t *testing.T) {
	trs := newGRPCNet(t, 2, nil)
	recvErr := make(chan error, 1)
	go func() {
		_, err := trs[0].Recv(context.Background(), 1, Tag{Seq: 1})
		recvErr <- err
	}()
	grpcWait(t, "a blocked Recv", func() bool { return trs[0].blocked.Load() == 1 })
	trs[0].Close()
	if err := <-recvErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

func TestGRPCHelloRefused(t *testing.T) {
	otherToken := "X" + grpcTestToken[1:]
	cases := []struct {
		name  string
		tweak func(r int, o *GRPCOptions)
		ranks []int  // whose Connect error is checked
		want  string // in those errors
	}{
		{"job id", func(r int, o *GRPCOptions) {
			if r == 1 {
				o.JobID = "another-job"
			}
		}, []int{0, 1}, "job"},
		{"token", func(r int, o *GRPCOptions) {
			if r == 1 {
				o.Token = otherToken
			}
		}, []int{0, 1}, "token"},
		{"world", func(r int, o *GRPCOptions) {
			if r == 1 {
				o.World = 3
			}
		}, []int{0}, "world"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			trs, addrs := listenGRPC(t, 2, tc.tweak)
			if len(addrs) == 2 && trs[1].World() == 3 {
				addrs = append(addrs, "127.0.0.1:1") // rank 1 needs 3 addresses
			}
			errs := []error{
				trs[0].Connect(context.Background(), addrs[:2]),
				trs[1].Connect(context.Background(), addrs[:trs[1].World()]),
			}
			for _, r := range tc.ranks {
				err := errs[r]
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("rank %d: got %v, want ErrRefused mentioning %q", r, err, tc.want)
				}
			}
		})
	}
}

func TestGRPCTLS(t *testing.T) {
	trs := newGRPCNet(t, 3, func(_ int, o *GRPCOptions) { o.TLS = TLSOn })
	ctx := context.Background()
	for r, tr := range trs {
		if !tr.TLS() {
			t.Fatalf("rank %d: TLS is off", r)
		}
	}
	for from := range 3 {
		for to := range 3 {
			if to != from {
				if err := trs[from].Send(ctx, to, Tag{Seq: uint64(from)}, grpcPattern(from*3+to, 70_000)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for to := range 3 {
		for from := range 3 {
			if to != from {
				got, err := trs[to].Recv(ctx, from, Tag{Seq: uint64(from)})
				if err != nil || !bytes.Equal(got, grpcPattern(from*3+to, 70_000)) {
					t.Fatalf("%d -> %d over TLS: %d bytes, %v", from, to, len(got), err)
				}
			}
		}
	}
}

func TestGRPCTLSOtherTokenCannotConnect(t *testing.T) {
	trs, addrs := listenGRPC(t, 2, func(r int, o *GRPCOptions) {
		o.TLS = TLSOn
		o.Timeout = 2 * time.Second // rank 0 waits that long for a stream that never comes
		if r == 1 {
			o.Token = "X" + grpcTestToken[1:]
		}
	})
	for r, err := range connectGRPC(trs, addrs) {
		if err == nil || !strings.Contains(err.Error(), "token") {
			t.Errorf("rank %d: got %v, want an error that names the job token", r, err)
		}
	}
}

func TestGRPCOptionsRejected(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(o *GRPCOptions)
		want  string
	}{
		{"rank", func(o *GRPCOptions) { o.Rank = 2 }, "rank 2"},
		{"world", func(o *GRPCOptions) { o.World = 0 }, "world size"},
		{"job", func(o *GRPCOptions) { o.JobID = "" }, "job id"},
		{"short token", func(o *GRPCOptions) { o.Token = "secret" }, "token"},
		{"chunk", func(o *GRPCOptions) { o.ChunkBytes = MaxChunkBytes + 1 }, "chunk size"},
		{"plaintext on a public address", func(o *GRPCOptions) { o.TLS = TLSOff; o.Addr = "0.0.0.0:0" }, "TLS is required"},
		{"TLS mode", func(o *GRPCOptions) { o.TLS = 7 }, "TLS mode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := grpcTestOptions(0, 2)
			tc.tweak(&o)
			tr, err := ListenGRPC(o)
			if err == nil {
				tr.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}

	// Plaintext needs loopback peers; the list needs one address per rank.
	tr, err := ListenGRPC(grpcTestOptions(0, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.Connect(context.Background(), []string{tr.Addr(), "10.1.2.3:4000"}); err == nil || !strings.Contains(err.Error(), "TLS is required") {
		t.Errorf("plaintext to a remote peer: got %v", err)
	}
	if err := tr.Connect(context.Background(), []string{tr.Addr()}); err == nil || !strings.Contains(err.Error(), "one per rank") {
		t.Errorf("short peer list: got %v", err)
	}
	if err := tr.Send(context.Background(), 1, Tag{}, nil); err == nil || !strings.Contains(err.Error(), "Connect first") {
		t.Errorf("Send before Connect: got %v", err)
	}
}

func TestGRPCBadRank(t *testing.T) {
	trs := newGRPCNet(t, 2, nil)
	if err := trs[0].Send(context.Background(), 2, Tag{}, nil); err == nil || !strings.Contains(err.Error(), "ranks are 0..1") {
		t.Errorf("Send to rank 2: %v", err)
	}
	if _, err := trs[0].Recv(context.Background(), -1, Tag{}); err == nil || !strings.Contains(err.Error(), "ranks are 0..1") {
		t.Errorf("Recv from rank -1: %v", err)
	}
}

func TestGRPCTLSAutoOnPublicAddress(t *testing.T) {
	// A wildcard listen address is reachable from other machines, so auto
	// mode turns TLS on; the peers are still dialled on loopback here.
	trs, _ := listenGRPC(t, 2, func(_ int, o *GRPCOptions) { o.Addr = "0.0.0.0:0" })
	addrs := make([]string, len(trs))
	for r, tr := range trs {
		if !tr.TLS() {
			t.Fatalf("rank %d: TLS is off on %s", r, tr.Addr())
		}
		_, port, _ := strings.Cut(tr.Addr(), "]:")
		if port == "" {
			_, port, _ = strings.Cut(tr.Addr(), ":")
		}
		addrs[r] = "127.0.0.1:" + port
	}
	for r, err := range connectGRPC(trs, addrs) {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	if err := trs[0].Send(context.Background(), 1, Tag{}, []byte("tls")); err != nil {
		t.Fatal(err)
	}
	if got, err := trs[1].Recv(context.Background(), 0, Tag{}); err != nil || string(got) != "tls" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// rawPeer opens a stream to tr as rank 1 of a world of 2 and completes the
// handshake by hand, so a test can then send whatever frames it likes.
func rawPeer(t *testing.T, tr *GRPCTransport) ternv1.PeerService_ExchangeClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+tr.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithNoProxy())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), grpcTestTimeout)
	t.Cleanup(cancel)
	stream, err := ternv1.NewPeerServiceClient(conn).Exchange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	key, err := helloKey(grpcTestToken)
	if err != nil {
		t.Fatal(err)
	}
	o := grpcTestOptions(1, 2)
	nonce := newNonce()
	proof := helloProof(key, roleDialer, o.JobID, 1, 2, resp.GetHello().GetNonce(), nonce)
	hello := &ternv1.PeerHello{JobId: o.JobID, Rank: 1, World: 2, Protocol: grpcProtocol, Nonce: nonce, Proof: proof}
	if err := stream.Send(&ternv1.ExchangeRequest{Frame: &ternv1.ExchangeRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return stream
}

func TestGRPCMalformedFrameClosesPeer(t *testing.T) {
	cases := []struct {
		name  string
		frame *ternv1.ExchangeRequest
		want  string
	}{
		{"offset", &ternv1.ExchangeRequest{Frame: &ternv1.ExchangeRequest_Chunk{Chunk: &ternv1.PeerChunk{Length: 10, Offset: 4, Data: []byte("abcdef"), Last: true}}}, "must be 0"},
		{"length", &ternv1.ExchangeRequest{Frame: &ternv1.ExchangeRequest_Chunk{Chunk: &ternv1.PeerChunk{Length: 1 << 40, Data: []byte("a")}}}, "at most"},
		{"kind", &ternv1.ExchangeRequest{Frame: &ternv1.ExchangeRequest_Chunk{Chunk: &ternv1.PeerChunk{Kind: 99, Length: 1, Data: []byte("a"), Last: true}}}, "kinds are"},
		{"second hello", &ternv1.ExchangeRequest{Frame: &ternv1.ExchangeRequest_Hello{Hello: &ternv1.PeerHello{}}}, "not a chunk"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			trs, _ := listenGRPC(t, 1, func(_ int, o *GRPCOptions) { o.World = 2 })
			tr := trs[0]
			stream := rawPeer(t, tr)
			if err := stream.Send(tc.frame); err != nil {
				t.Fatal(err)
			}
			_, err := stream.Recv()
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("the sender of the bad frame got %v, want InvalidArgument mentioning %q", err, tc.want)
			}
			var cause error
			grpcWait(t, "rank 1 to be marked failed", func() bool {
				tr.mu.Lock()
				defer tr.mu.Unlock()
				cause = tr.peers[1].err
				return cause != nil
			})
			if !strings.Contains(cause.Error(), "malformed") || errors.Is(cause, ErrPeerClosed) {
				t.Errorf("rank 1 failed with %v, want a malformed-frame error", cause)
			}
		})
	}
}

func TestGRPCSilentDialerCutOff(t *testing.T) {
	// A client that opens a stream and never says hello is cut off after
	// the timeout, and the transport closes promptly either way.
	trs, _ := listenGRPC(t, 1, func(_ int, o *GRPCOptions) { o.World = 2; o.Timeout = 100 * time.Millisecond })
	conn, err := grpc.NewClient("passthrough:///"+trs[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithNoProxy())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := ternv1.NewPeerServiceClient(conn).Exchange(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // the acceptor's hello
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("got %v, want DeadlineExceeded", err)
	}
}

// BenchmarkGRPCSendRecv moves 1 MiB messages from rank 0 to rank 1 over
// loopback: the transport's throughput with default settings.
func BenchmarkGRPCSendRecv(b *testing.B) {
	for _, tlsMode := range []TLSMode{TLSOff, TLSOn} {
		b.Run("tls="+tlsMode.String(), func(b *testing.B) {
			trs := newGRPCNet(b, 2, func(_ int, o *GRPCOptions) { o.TLS = tlsMode })
			ctx := context.Background()
			payload := grpcPattern(1, 1<<20)
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			go func() {
				for i := range b.N {
					if err := trs[0].Send(ctx, 1, Tag{Seq: uint64(i)}, payload); err != nil {
						b.Error(err)
						return
					}
				}
			}()
			for i := range b.N {
				if _, err := trs[1].Recv(ctx, 0, Tag{Seq: uint64(i)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
