package comm

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// outLink is this rank's stream to one peer: the sending direction.
type outLink struct {
	to     int
	stream ternv1.PeerService_ExchangeClient
	cancel context.CancelFunc // tears the stream down
	queue  chan *outMsg
	drain  chan struct{} // closed by Close: write what is queued, then end
	ended  chan struct{} // closed when the stream has ended
}

type outMsg struct {
	tag     Tag
	epoch   uint64
	payload []byte
}

// dial opens the stream to rank to, runs the dialer's half of the
// handshake within ctx and starts the goroutines that serve the stream.
func (t *GRPCTransport) dial(ctx context.Context, to int, addr string) error {
	conn, err := grpc.NewClient("passthrough:///"+addr, t.dialOpts...)
	if err != nil {
		return &PeerError{Rank: to, Op: "dial", Err: fmt.Errorf("%s: %w", addr, err)}
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		conn.Close()
		return ErrClosed
	}
	t.conns = append(t.conns, conn)
	t.mu.Unlock()

	// The stream outlives Connect, so it hangs off the transport's context;
	// Connect's deadline only aborts the handshake.
	sctx, cancel := context.WithCancel(t.base)
	stop := context.AfterFunc(ctx, cancel)
	stream, err := t.handshake(sctx, conn, to, addr)
	if !stop() && err == nil {
		err = errors.New("connect ended during the handshake")
	}
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			err = fmt.Errorf("no handshake with %s: %w (%v)", addr, ctx.Err(), err)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("%w: %w", err, ErrTimeout)
			}
		}
		return &PeerError{Rank: to, Op: "connect", Err: err}
	}

	l := &outLink{
		to:     to,
		stream: stream,
		cancel: cancel,
		queue:  make(chan *outMsg, t.opts.SendQueueLen),
		drain:  make(chan struct{}),
		ended:  make(chan struct{}),
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peers[to]
	switch {
	case t.closed:
		cancel()
		return ErrClosed
	case p.err != nil:
		cancel()
		return &PeerError{Rank: to, Op: "connect", Err: p.err}
	}
	p.out = l
	t.wg.Add(2)
	go t.sendLoop(l)
	go t.watch(l)
	return nil
}

// handshake opens the stream and runs the dialer's half of the hello
// exchange described in peer.proto.
// Backoff between attempts to reach a peer that is not listening yet.
const (
	dialRetryFirst = 50 * time.Millisecond
	dialRetryMax   = time.Second
)

func (t *GRPCTransport) handshake(ctx context.Context, conn *grpc.ClientConn, to int, addr string) (ternv1.PeerService_ExchangeClient, error) {
	o := &t.opts
	// A peer that is not listening yet (workers on several machines start
	// in any order) is dialled again until Connect's deadline; a TLS
	// certificate from another job is an error to report now.
	var stream ternv1.PeerService_ExchangeClient
	var err error
	for wait := dialRetryFirst; ; wait = min(2*wait, dialRetryMax) {
		stream, err = ternv1.NewPeerServiceClient(conn).Exchange(ctx)
		if err == nil {
			break
		}
		if t.useTLS && strings.Contains(err.Error(), "authentication handshake failed") {
			return nil, fmt.Errorf("TLS handshake with %s failed: a peer whose certificate is not signed by this job's CA holds another job token: %w", addr, err)
		}
		if status.Code(err) != codes.Unavailable {
			return nil, fmt.Errorf("open stream to %s: %w", addr, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open stream to %s: %w", addr, err)
		case <-time.After(wait):
		}
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, helloErr(to, addr, err)
	}
	h := resp.GetHello()
	switch {
	case h == nil:
		return nil, fmt.Errorf("%w: %s sent no hello", ErrRefused, addr)
	case h.Protocol != grpcProtocol:
		return nil, fmt.Errorf("%w: %s speaks protocol %d, this rank speaks %d", ErrRefused, addr, h.Protocol, grpcProtocol)
	case h.JobId != o.JobID:
		return nil, fmt.Errorf("%w: %s belongs to job %q, not %q", ErrRefused, addr, h.JobId, o.JobID)
	case h.World != uint32(o.World):
		return nil, fmt.Errorf("%w: %s is in a world of %d ranks, this rank in one of %d", ErrRefused, addr, h.World, o.World)
	case h.Rank != uint32(to):
		return nil, fmt.Errorf("%w: %s answers as rank %d, not rank %d: the peer list is out of order", ErrRefused, addr, h.Rank, to)
	case len(h.Nonce) != nonceBytes:
		return nil, fmt.Errorf("%w: %s sent a %d-byte nonce, want %d", ErrRefused, addr, len(h.Nonce), nonceBytes)
	}
	nonce := newNonce()
	me := &ternv1.PeerHello{
		JobId:    o.JobID,
		Rank:     uint32(o.Rank),
		World:    uint32(o.World),
		Epoch:    t.Epoch(),
		Protocol: grpcProtocol,
		Nonce:    nonce,
		Proof:    helloProof(t.helloKey, roleDialer, o.JobID, uint32(o.Rank), uint32(o.World), h.Nonce, nonce),
	}
	// A failed Send means the stream ended; Recv reports why.
	_ = stream.Send(&ternv1.ExchangeRequest{Frame: &ternv1.ExchangeRequest_Hello{Hello: me}})
	resp, err = stream.Recv()
	if err != nil {
		return nil, helloErr(to, addr, err)
	}
	h2 := resp.GetHello()
	want := helloProof(t.helloKey, roleAcceptor, o.JobID, uint32(to), uint32(o.World), nonce, h.Nonce)
	if h2 == nil || !hmac.Equal(h2.Proof, want) {
		return nil, fmt.Errorf("%w: rank %d at %s failed the token proof: the ranks were given different job tokens", ErrRefused, to, addr)
	}
	return stream, nil
}

// helloErr explains a stream that ended during the handshake.
func helloErr(to int, addr string, err error) error {
	st := status.Convert(err)
	if st.Code() == codes.PermissionDenied {
		return fmt.Errorf("%w: %s", ErrRefused, st.Message())
	}
	return fmt.Errorf("handshake with rank %d at %s: %w", to, addr, err)
}

// sendLoop writes the messages queued for one peer, in order.
func (t *GRPCTransport) sendLoop(l *outLink) {
	defer t.wg.Done()
	dead := t.peers[l.to].dead
	for {
		select {
		case m := <-l.queue:
			if !t.writeOrFail(l, m) {
				return
			}
		case <-l.drain:
			for {
				select {
				case m := <-l.queue:
					if !t.writeOrFail(l, m) {
						return
					}
				default:
					// Half-close: the peer reads everything before the end.
					_ = l.stream.CloseSend()
					return
				}
			}
		case <-dead:
			return
		}
	}
}

// writeOrFail writes m and reports whether the stream is still usable.
func (t *GRPCTransport) writeOrFail(l *outLink, m *outMsg) bool {
	err := t.write(l, m)
	if err == nil {
		return true
	}
	// The receiving side of the stream learns why it ended (the peer's
	// status); let it report first.
	<-l.ended
	t.failPeer(l.to, fmt.Errorf("stream to rank %d broke: %v: %w", l.to, err, ErrPeerClosed))
	return false
}

// write sends m as consecutive chunks and counts it once all are written.
func (t *GRPCTransport) write(l *outLink, m *outMsg) error {
	if m.epoch < t.Epoch() {
		// Stale before it left: the receiver would drop it.
		return nil
	}
	var framing int64
	for off := 0; ; {
		c, next := nextChunk(m.tag, m.epoch, m.payload, off, t.opts.ChunkBytes)
		req := &ternv1.ExchangeRequest{Frame: &ternv1.ExchangeRequest_Chunk{Chunk: c}}
		framing += int64(proto.Size(req) - len(c.Data) + grpcMessageHeaderBytes)
		if err := l.stream.Send(req); err != nil {
			return err
		}
		if c.Last {
			break
		}
		off = next
	}
	t.mu.Lock()
	t.stats.CountSend(m.tag.Kind, Counter{Payload: int64(len(m.payload)), Framing: framing})
	t.mu.Unlock()
	return nil
}

// watch reads the answering side of an outbound stream, which is silent
// after the handshake; whatever ends it says why the stream is gone.
func (t *GRPCTransport) watch(l *outLink) {
	defer t.wg.Done()
	defer close(l.ended)
	_, err := l.stream.Recv()
	if err == nil {
		err = status.Error(codes.InvalidArgument, "unexpected frame after the handshake")
		l.cancel()
	}
	select {
	case <-t.closing:
		return // our own Close ended it
	default:
	}
	var cause error
	st := status.Convert(err)
	switch {
	case err == io.EOF:
		cause = fmt.Errorf("rank %d ended the stream: %w", l.to, ErrPeerClosed)
	case st.Code() == codes.InvalidArgument:
		cause = fmt.Errorf("protocol error on the stream to rank %d: %s", l.to, st.Message())
	default:
		cause = fmt.Errorf("stream to rank %d broke (%s: %s): %w", l.to, st.Code(), st.Message(), ErrPeerClosed)
	}
	t.failPeer(l.to, cause)
}

// peerService accepts peers' streams.
type peerService struct {
	ternv1.UnimplementedPeerServiceServer
	t *GRPCTransport
}

// Exchange serves one peer's stream to this rank: the acceptor's half of
// the handshake, then reading its messages until the stream ends.
func (s *peerService) Exchange(stream ternv1.PeerService_ExchangeServer) error {
	t := s.t
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return status.Error(codes.Unavailable, "transport closing")
	}
	t.wg.Add(1)
	t.mu.Unlock()
	defer t.wg.Done()
	from, err := t.accept(stream)
	if err != nil {
		return err
	}
	return t.readLoop(from, stream)
}

// accept runs the acceptor's half of the handshake and registers the peer's
// stream. Refusals are returned as PermissionDenied statuses, which the
// dialer reports as ErrRefused.
func (t *GRPCTransport) accept(stream ternv1.PeerService_ExchangeServer) (int, error) {
	o := &t.opts
	nonce := newNonce()
	hello := &ternv1.PeerHello{
		JobId:    o.JobID,
		Rank:     uint32(o.Rank),
		World:    uint32(o.World),
		Epoch:    t.Epoch(),
		Protocol: grpcProtocol,
		Nonce:    nonce,
	}
	if err := stream.Send(&ternv1.ExchangeResponse{Frame: &ternv1.ExchangeResponse_Hello{Hello: hello}}); err != nil {
		return -1, err
	}
	req, err := t.recvWithin(stream, o.Timeout)
	if err != nil {
		return -1, err
	}
	h := req.GetHello()
	if err := t.checkHello(h, nonce); err != nil {
		return -1, t.refuse(stream, err)
	}
	from := int(h.Rank)

	t.mu.Lock()
	p := t.peers[from]
	switch {
	case t.closed:
		err = status.Error(codes.Unavailable, "transport closing")
	case p.in:
		err = fmt.Errorf("rank %d refused a second stream from rank %d", o.Rank, from)
	case p.err != nil:
		err = fmt.Errorf("rank %d refused a stream from rank %d, which failed earlier: %v", o.Rank, from, p.err)
	default:
		p.in = true
		close(t.inboundUp)
		t.inboundUp = make(chan struct{})
	}
	t.mu.Unlock()
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return -1, err
		}
		return -1, t.refuse(stream, err)
	}

	hello = &ternv1.PeerHello{Proof: helloProof(t.helloKey, roleAcceptor, o.JobID, uint32(o.Rank), uint32(o.World), h.Nonce, nonce)}
	if err := stream.Send(&ternv1.ExchangeResponse{Frame: &ternv1.ExchangeResponse_Hello{Hello: hello}}); err != nil {
		t.failPeer(from, fmt.Errorf("stream from rank %d broke during the handshake: %v: %w", from, err, ErrPeerClosed))
		return -1, err
	}
	return from, nil
}

// checkHello validates the dialer's hello against this rank's job and the
// challenge it sent.
func (t *GRPCTransport) checkHello(h *ternv1.PeerHello, challenge []byte) error {
	o := &t.opts
	if h == nil {
		return fmt.Errorf("rank %d refused a stream whose first frame is not a hello", o.Rank)
	}
	refused := func(format string, args ...any) error {
		return fmt.Errorf("rank %d refused hello from rank %d: %s", o.Rank, h.Rank, fmt.Sprintf(format, args...))
	}
	switch {
	case h.Protocol != grpcProtocol:
		return refused("protocol %d, this rank speaks %d", h.Protocol, grpcProtocol)
	case h.JobId != o.JobID:
		return refused("job id %q, this rank belongs to job %q", h.JobId, o.JobID)
	case h.World != uint32(o.World):
		return refused("world of %d ranks, this rank is in one of %d", h.World, o.World)
	case h.Rank >= uint32(o.World):
		return refused("rank out of range 0..%d", o.World-1)
	case h.Rank == uint32(o.Rank):
		return refused("a rank cannot open a stream to itself")
	case len(h.Nonce) != nonceBytes:
		return refused("%d-byte nonce, want %d", len(h.Nonce), nonceBytes)
	}
	want := helloProof(t.helloKey, roleDialer, o.JobID, h.Rank, h.World, challenge, h.Nonce)
	if !hmac.Equal(h.Proof, want) {
		return refused("token proof does not match: the ranks were given different job tokens")
	}
	return nil
}

// refuse records and logs a refused hello and turns it into the status the
// dialer sees.
func (t *GRPCTransport) refuse(stream ternv1.PeerService_ExchangeServer, err error) error {
	from := "unknown"
	if p, ok := peer.FromContext(stream.Context()); ok {
		from = p.Addr.String()
	}
	t.mu.Lock()
	t.refusal = fmt.Errorf("%w from %s: %w", ErrRefused, from, err)
	t.mu.Unlock()
	t.opts.Logger.Warn("comm: refused peer", "rank", t.opts.Rank, "from", from, "err", err)
	return status.Error(codes.PermissionDenied, err.Error())
}

// recvWithin reads the first frame of an incoming stream, waiting at most d:
// a dialer that never says hello must not hold the stream open.
func (t *GRPCTransport) recvWithin(stream ternv1.PeerService_ExchangeServer, d time.Duration) (*ternv1.ExchangeRequest, error) {
	type result struct {
		req *ternv1.ExchangeRequest
		err error
	}
	ch := make(chan result, 1)
	t.wg.Add(1)
	go func() {
		// Returns at the latest when the handler returns, which ends the
		// stream.
		defer t.wg.Done()
		req, err := stream.Recv()
		ch <- result{req, err}
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.req, r.err
	case <-timer.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "rank %d got no hello within %v", t.opts.Rank, d)
	case <-t.closing:
		return nil, status.Error(codes.Unavailable, "transport closing")
	}
}

// readLoop reads the chunks of peer from until the stream ends, checks and
// reassembles them and delivers the messages.
func (t *GRPCTransport) readLoop(from int, stream ternv1.PeerService_ExchangeServer) error {
	a := newAssembler(t.opts.MaxMessageBytes)
	var framing int64
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			t.failPeer(from, fmt.Errorf("rank %d closed its transport: %w", from, ErrPeerClosed))
			return nil
		}
		if err != nil {
			t.failPeer(from, fmt.Errorf("stream from rank %d broke: %v: %w", from, err, ErrPeerClosed))
			return err
		}
		c := req.GetChunk()
		var m *wireMsg
		if c == nil {
			err = errors.New("a frame that is not a chunk after the handshake")
		} else {
			m, err = a.add(c)
		}
		if err != nil {
			err = fmt.Errorf("rank %d refused a malformed frame from rank %d: %w", t.opts.Rank, from, err)
			t.failPeer(from, err)
			return status.Error(codes.InvalidArgument, err.Error())
		}
		framing += int64(proto.Size(req) - len(c.Data) + grpcMessageHeaderBytes)
		if m == nil {
			continue
		}
		m.framing, framing = framing, 0
		if err := t.deliver(from, m); err != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
	}
}
