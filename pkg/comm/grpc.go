package comm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Defaults of GRPCOptions.
const (
	DefaultGRPCAddr         = "127.0.0.1:0"
	DefaultGRPCTimeout      = 60 * time.Second
	DefaultSendQueueLen     = 64
	DefaultMaxBufferedBytes = 256 << 20

	// grpcProtocol is the version of the frame protocol in peer.proto;
	// peers that speak another version refuse each other at the hello.
	grpcProtocol = 1
	// closeFlushTimeout bounds how long Close waits for queued messages to
	// reach peers that are alive but slow to take them.
	closeFlushTimeout = 5 * time.Second
	// keepaliveInterval and keepaliveTimeout detect a peer whose machine
	// vanished without closing its connections (power loss, partition):
	// the connection is declared dead this long after it went silent.
	keepaliveInterval = 10 * time.Second
	keepaliveTimeout  = 10 * time.Second
)

// ErrRefused is wrapped by the error of Connect (and logged by the refusing
// side) when a peer's hello does not match: another job id, world size or
// protocol version, a rank out of range, or a token proof that fails.
var ErrRefused = errors.New("hello refused")

// TLSMode says whether peer streams use TLS.
type TLSMode int

const (
	// TLSAuto uses TLS unless the listen address is loopback; with a
	// loopback listen address every peer address must be loopback too.
	TLSAuto TLSMode = iota
	// TLSOn always uses TLS (mutual, with certificates derived from the job
	// token), also on loopback.
	TLSOn
	// TLSOff never uses TLS; it is refused unless every address is loopback.
	TLSOff
)

func (m TLSMode) String() string {
	switch m {
	case TLSAuto:
		return "auto"
	case TLSOn:
		return "on"
	case TLSOff:
		return "off"
	}
	return fmt.Sprintf("TLSMode(%d)", int(m))
}

// GRPCOptions configures one rank's gRPC transport. JobID, World, Token and
// TLS (as resolved) must be the same on every rank of a job.
type GRPCOptions struct {
	// Addr is the listen address (default DefaultGRPCAddr, an ephemeral
	// loopback port); Addr() reports the bound one.
	Addr string
	// JobID names the job; a peer of another job is refused.
	JobID string
	// Rank is this process's rank in [0, World).
	Rank, World int
	// Token is the job's shared secret, at least MinTokenBytes random bytes.
	// A peer that cannot prove it holds the same token is refused.
	Token string
	// Epoch is the starting membership epoch.
	Epoch uint64
	// Timeout bounds every wait: a Recv for its message, a Send for queue
	// space, Connect for all streams, the hello of an incoming stream.
	// Default DefaultGRPCTimeout.
	Timeout time.Duration
	// ChunkBytes is the size of the chunks messages are cut into, in
	// [1, MaxChunkBytes]; default DefaultChunkBytes.
	ChunkBytes int
	// MaxMessageBytes is the largest message this rank accepts from a peer,
	// and the largest it sends; default DefaultMaxMessageBytes.
	MaxMessageBytes int
	// SendQueueLen is how many messages may wait for one peer's stream
	// before Send blocks; default DefaultSendQueueLen.
	SendQueueLen int
	// MaxBufferedBytes bounds the bytes of messages received from one peer
	// that no Recv has taken yet. When a new message would exceed it, the
	// stream from that peer is not read until a Recv takes a message, the
	// epoch moves on, or a Recv waits for exactly that message; HTTP/2 flow
	// control then stops the sender, whose Send blocks once its queue is
	// full. One message is always admitted to an empty buffer whatever its
	// size. Default DefaultMaxBufferedBytes.
	MaxBufferedBytes int
	// TLS chooses plaintext or TLS; see TLSMode.
	TLS TLSMode
	// Logger receives refused hellos and failed peers; nil discards.
	Logger *slog.Logger
}

func (o *GRPCOptions) setDefaults() error {
	if o.Addr == "" {
		o.Addr = DefaultGRPCAddr
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultGRPCTimeout
	}
	if o.ChunkBytes == 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.SendQueueLen == 0 {
		o.SendQueueLen = DefaultSendQueueLen
	}
	if o.MaxBufferedBytes == 0 {
		o.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.World < 1:
		return fmt.Errorf("world size %d: need at least 1 rank", o.World)
	case o.Rank < 0 || o.Rank >= o.World:
		return fmt.Errorf("rank %d: ranks are 0..%d", o.Rank, o.World-1)
	case o.JobID == "":
		return errors.New("job id is empty: every rank needs the job's id")
	case len(o.Token) < MinTokenBytes:
		return fmt.Errorf("job token has %d bytes: need at least %d random bytes, the same on every rank (e.g. 32 hex digits from a random source)", len(o.Token), MinTokenBytes)
	case o.Timeout < 0:
		return fmt.Errorf("timeout %v: must be positive (zero means %v)", o.Timeout, DefaultGRPCTimeout)
	case o.ChunkBytes < 1 || o.ChunkBytes > MaxChunkBytes:
		return fmt.Errorf("chunk size %d bytes: allowed 1..%d", o.ChunkBytes, MaxChunkBytes)
	case o.MaxMessageBytes < 0:
		return fmt.Errorf("max message size %d bytes: must be positive", o.MaxMessageBytes)
	case o.SendQueueLen < 0:
		return fmt.Errorf("send queue length %d: must be positive", o.SendQueueLen)
	case o.MaxBufferedBytes < 0:
		return fmt.Errorf("max buffered bytes %d: must be positive", o.MaxBufferedBytes)
	case o.TLS < TLSAuto || o.TLS > TLSOff:
		return fmt.Errorf("TLS mode %v: allowed auto, on, off", o.TLS)
	}
	return nil
}

// GRPCTransport is one rank's Transport over gRPC.
//
// Setup has two phases, so that a launcher can start every rank before any
// knows the others' addresses: ListenGRPC binds and serves (Addr reports
// the port), then Connect gets every rank's address and returns once every
// stream is up.
//
// Streams: every ordered pair of ranks (a, b) has one long-lived
// bidirectional stream that a opens to b and sends its messages on; b
// answers only the handshake. Keeping each direction on its own stream
// keeps every stream's sending side in the process that dialed it, so a
// stream's end is never ambiguous. A message is cut into chunks of at most
// ChunkBytes, sent consecutively; a goroutine per peer writes them from a
// queue of SendQueueLen messages, so Send returns once its message is
// queued (the payload is read later: the caller must not modify it). On
// the receiving side the chunks are checked and reassembled, and the
// message is handed to a waiting Recv or buffered (see MaxBufferedBytes).
//
// Failures: when a stream ends or breaks (the peer closed its transport,
// its process died, it sent a malformed frame), the peer is marked failed
// at once, our stream to it is torn down (its stream to us at its next
// message), every Recv waiting on it and every later Send to it fails with
// a *PeerError (wrapping ErrPeerClosed unless the cause was a malformed
// frame), and Recv still returns messages that had fully arrived before. A failed peer stays failed for the life of
// the transport. A live but silent peer costs a Recv Timeout, then a
// *PeerError wrapping ErrTimeout.
//
// Epochs: messages carry the sender's epoch and match Recv calls of the
// same epoch; older ones are dropped on arrival or when SetEpoch moves on,
// and counted in Stats.Dropped; newer ones wait until this rank reaches
// their epoch. Queued messages that became stale before
// they were written are discarded by the sender without being counted.
//
// Byte counters: payload is the message bytes; framing is what the
// transport adds and can see, the protobuf fields of every chunk frame
// besides its data plus gRPC's 5-byte message prefix. HTTP/2 frame headers,
// TLS records, the handshake frames and keepalives are not counted. A
// message is counted by the sender once all its chunks are written and by
// the receiver once it is complete (also when then dropped for its epoch).
// Messages a rank sends to itself never touch the wire and are not counted.
type GRPCTransport struct {
	opts     GRPCOptions
	useTLS   bool
	lis      net.Listener
	srv      *grpc.Server
	dialOpts []grpc.DialOption
	helloKey []byte

	// base scopes the outbound streams; cancel tears them all down.
	base   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine this transport starts
	// closing is closed when Close starts; sendMu lets Close wait until no
	// Send is between its checks and its enqueue.
	closing chan struct{}
	sendMu  sync.RWMutex
	// blocked counts Send and Recv calls waiting now; tests wait on it.
	blocked atomic.Int64

	mu        sync.Mutex
	state     connState
	closed    bool
	epoch     uint64
	epochCh   chan struct{} // closed and replaced by SetEpoch
	changed   chan struct{} // closed and replaced when a blocked reader should look again
	inboundUp chan struct{} // closed and replaced when a peer's stream to us is accepted
	peers     []*grpcPeer
	waiters   map[msgKey][]*recvWaiter
	inbox     map[msgKey][][]byte
	conns     []*grpc.ClientConn
	refusal   error // last refused hello, for Connect's error
	stats     Stats
}

type connState int

const (
	listening connState = iota
	connecting
	connected
)

// grpcPeer is the state of one other rank; guarded by GRPCTransport.mu.
type grpcPeer struct {
	rank     int
	addr     string
	out      *outLink // our stream to it, once its handshake is done
	in       bool     // its stream to us has been accepted
	buffered int      // bytes of its messages in the inbox
	err      error    // why it failed; nil while alive
	dead     chan struct{}
}

// msgKey identifies the messages a Recv can take.
type msgKey struct {
	from  int
	tag   Tag
	epoch uint64
}

type recvWaiter struct {
	ch chan recvResult // buffered: resolved once, under mu
}

type recvResult struct {
	payload []byte
	err     error
}

// ListenGRPC validates opts, binds the listen address and starts serving
// peers' streams. Call Connect next.
func ListenGRPC(opts GRPCOptions) (*GRPCTransport, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, fmt.Errorf("comm: grpc transport: %w", err)
	}
	useTLS := opts.TLS == TLSOn || opts.TLS == TLSAuto && !isLoopback(opts.Addr)
	if opts.TLS == TLSOff && !isLoopback(opts.Addr) {
		return nil, fmt.Errorf("comm: grpc transport: listen address %s is not loopback: TLS is required (TLS mode auto or on)", opts.Addr)
	}
	key, err := helloKey(opts.Token)
	if err != nil {
		return nil, fmt.Errorf("comm: grpc transport: %w", err)
	}
	kp := keepalive.ClientParameters{Time: keepaliveInterval, Timeout: keepaliveTimeout, PermitWithoutStream: true}
	dialOpts := []grpc.DialOption{
		grpc.WithKeepaliveParams(kp),
		// Peers are addressed directly; an HTTP proxy from the environment
		// must not get in between.
		grpc.WithNoProxy(),
	}
	srvOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxFrameBytes),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveInterval, Timeout: keepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveInterval / 2, PermitWithoutStream: true}),
	}
	if useTLS {
		srvCfg, cliCfg, err := peerTLS(opts.Token, opts.JobID, opts.Rank)
		if err != nil {
			return nil, fmt.Errorf("comm: grpc transport: %w", err)
		}
		srvOpts = append(srvOpts, grpc.Creds(credentials.NewTLS(srvCfg)))
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(cliCfg)))
	} else {
		dialOpts = append(dialOpts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}

	lis, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("comm: grpc transport rank %d: listen on %s: %w", opts.Rank, opts.Addr, err)
	}
	base, cancel := context.WithCancel(context.Background())
	t := &GRPCTransport{
		opts:      opts,
		useTLS:    useTLS,
		lis:       lis,
		srv:       grpc.NewServer(srvOpts...),
		dialOpts:  dialOpts,
		helloKey:  key,
		base:      base,
		cancel:    cancel,
		closing:   make(chan struct{}),
		epoch:     opts.Epoch,
		epochCh:   make(chan struct{}),
		changed:   make(chan struct{}),
		inboundUp: make(chan struct{}),
		peers:     make([]*grpcPeer, opts.World),
		waiters:   make(map[msgKey][]*recvWaiter),
		inbox:     make(map[msgKey][][]byte),
	}
	for r := range t.peers {
		t.peers[r] = &grpcPeer{rank: r, dead: make(chan struct{})}
	}
	ternv1.RegisterPeerServiceServer(t.srv, &peerService{t: t})
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		// Serve returns when Close stops the server; nothing to report then.
		_ = t.srv.Serve(lis)
	}()
	return t, nil
}

// Addr is the address this rank listens on, with the bound port.
func (t *GRPCTransport) Addr() string { return t.lis.Addr().String() }

// TLS reports whether this transport's streams use TLS.
func (t *GRPCTransport) TLS() bool { return t.useTLS }

// Rank is this process's rank.
func (t *GRPCTransport) Rank() int { return t.opts.Rank }

// World is the number of ranks.
func (t *GRPCTransport) World() int { return t.opts.World }

// Epoch is the current epoch.
func (t *GRPCTransport) Epoch() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.epoch
}

// Stats returns a copy of the byte counters.
func (t *GRPCTransport) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// Connect opens a stream to every other rank (peers[r] is rank r's address;
// this rank's own entry is ignored) and waits until every other rank's
// stream to this one is up too, within ctx and the Timeout. Every rank must
// call it. On error the transport cannot be used; Close it.
func (t *GRPCTransport) Connect(ctx context.Context, peers []string) error {
	if err := t.checkPeers(peers); err != nil {
		return fmt.Errorf("comm: connect rank %d: %w", t.opts.Rank, err)
	}
	t.mu.Lock()
	switch {
	case t.closed:
		t.mu.Unlock()
		return ErrClosed
	case t.state != listening:
		t.mu.Unlock()
		return fmt.Errorf("comm: connect rank %d: Connect was already called", t.opts.Rank)
	}
	t.state = connecting
	for r, p := range t.peers {
		p.addr = peers[r]
	}
	t.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, t.opts.Timeout)
	defer cancel()
	errs := make(chan error, t.opts.World)
	for r := range t.opts.World {
		if r == t.opts.Rank {
			continue
		}
		go func() { errs <- t.dial(ctx, r, peers[r]) }()
	}
	var first error
	for range t.opts.World - 1 {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel() // stop the other dials early
		}
	}
	if first != nil {
		return fmt.Errorf("comm: connect rank %d: %w", t.opts.Rank, first)
	}
	if err := t.awaitInbound(ctx); err != nil {
		return fmt.Errorf("comm: connect rank %d: %w", t.opts.Rank, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	t.state = connected
	return nil
}

// checkPeers validates the address list, and that plaintext is used only
// where every address is loopback.
func (t *GRPCTransport) checkPeers(peers []string) error {
	if len(peers) != t.opts.World {
		return fmt.Errorf("got %d peer addresses for a world of %d ranks: need one per rank, indexed by rank", len(peers), t.opts.World)
	}
	for r, a := range peers {
		if r == t.opts.Rank {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("address of rank %d %q: want host:port: %w", r, a, err)
		}
		if !t.useTLS && !isLoopback(a) {
			return fmt.Errorf("address of rank %d %s is not loopback: TLS is required; listen on a non-loopback address (TLS mode auto) or set TLS mode on, on every rank", r, a)
		}
	}
	return nil
}

// awaitInbound waits until every other rank's stream to this one is up.
func (t *GRPCTransport) awaitInbound(ctx context.Context) error {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return ErrClosed
		}
		var missing []int
		for _, p := range t.peers {
			if p.rank == t.opts.Rank {
				continue
			}
			if p.err != nil {
				err := &PeerError{Rank: p.rank, Op: "connect", Err: p.err}
				t.mu.Unlock()
				return err
			}
			if !p.in {
				missing = append(missing, p.rank)
			}
		}
		up, refusal := t.inboundUp, t.refusal
		t.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-up:
		case <-t.closing:
		case <-ctx.Done():
			err := fmt.Errorf("no stream from rank(s) %v: %w", missing, ctx.Err())
			if refusal != nil {
				err = fmt.Errorf("%w (last refused hello: %v)", err, refusal)
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return &PeerError{Rank: missing[0], Op: "connect", Err: fmt.Errorf("%w: %w", err, ErrTimeout)}
			}
			return err
		}
	}
}

// Send queues payload for rank to and returns; the payload is read after
// Send returns, so the caller must not modify it. It blocks while the
// queue to that rank is full.
func (t *GRPCTransport) Send(ctx context.Context, to int, tag Tag, payload []byte) error {
	what := func() string { return fmt.Sprintf("send %v to rank %d", tag, to) }
	if to < 0 || to >= t.opts.World {
		return fmt.Errorf("comm: %s: ranks are 0..%d", what(), t.opts.World-1)
	}
	if len(payload) > t.opts.MaxMessageBytes {
		return fmt.Errorf("comm: %s: message of %d bytes is above the %d-byte maximum", what(), len(payload), t.opts.MaxMessageBytes)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("comm: %s: %w", what(), err)
	}
	t.sendMu.RLock()
	defer t.sendMu.RUnlock()
	t.mu.Lock()
	if err := t.usable(what); err != nil {
		t.mu.Unlock()
		return err
	}
	have, epochCh := t.epoch, t.epochCh
	if to == t.opts.Rank {
		t.deliverLocal(tag, have, append([]byte(nil), payload...))
		t.mu.Unlock()
		return nil
	}
	p := t.peers[to]
	if p.err != nil {
		t.mu.Unlock()
		return &PeerError{Rank: to, Op: "send", Err: fmt.Errorf("tag %v: %w", tag, p.err)}
	}
	l := p.out
	t.mu.Unlock()

	m := &outMsg{tag: tag, epoch: have, payload: payload}
	select {
	case l.queue <- m:
		return nil
	default:
	}
	timer := time.NewTimer(t.opts.Timeout)
	defer timer.Stop()
	t.blocked.Add(1)
	defer t.blocked.Add(-1)
	select {
	case l.queue <- m:
		select {
		case <-epochCh:
			// Queued in the same instant the epoch moved on: the sender
			// will skip it, so report the abort like the other blocked calls.
			return fmt.Errorf("comm: %s: %w", what(), &EpochError{Have: have, Now: t.Epoch()})
		default:
			return nil
		}
	case <-p.dead:
		return &PeerError{Rank: to, Op: "send", Err: fmt.Errorf("tag %v: %w", tag, t.peerErr(p))}
	case <-epochCh:
		return fmt.Errorf("comm: %s: %w", what(), &EpochError{Have: have, Now: t.Epoch()})
	case <-t.closing:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("comm: %s: %w", what(), ctx.Err())
	case <-timer.C:
		return &PeerError{Rank: to, Op: "send", Err: fmt.Errorf("tag %v: send queue full for %v: %w", tag, t.opts.Timeout, ErrTimeout)}
	}
}

// usable checks that Send and Recv may run; the caller holds mu.
func (t *GRPCTransport) usable(what func() string) error {
	if t.closed {
		return ErrClosed
	}
	if t.state != connected {
		return fmt.Errorf("comm: %s: call Connect first", what())
	}
	return nil
}

func (t *GRPCTransport) peerErr(p *grpcPeer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return p.err
}

// Recv returns the payload of the message from rank from with tag in the
// current epoch, waiting for it if needed.
func (t *GRPCTransport) Recv(ctx context.Context, from int, tag Tag) ([]byte, error) {
	what := func() string { return fmt.Sprintf("recv %v from rank %d", tag, from) }
	if from < 0 || from >= t.opts.World {
		return nil, fmt.Errorf("comm: %s: ranks are 0..%d", what(), t.opts.World-1)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("comm: %s: %w", what(), err)
	}
	t.mu.Lock()
	if err := t.usable(what); err != nil {
		t.mu.Unlock()
		return nil, err
	}
	k := msgKey{from: from, tag: tag, epoch: t.epoch}
	if payload, ok := t.takeLocked(k); ok {
		t.mu.Unlock()
		return payload, nil
	}
	if p := t.peers[from]; p.err != nil {
		t.mu.Unlock()
		return nil, &PeerError{Rank: from, Op: "recv", Err: fmt.Errorf("tag %v: %w", tag, p.err)}
	}
	w := &recvWaiter{ch: make(chan recvResult, 1)}
	t.waiters[k] = append(t.waiters[k], w)
	t.signalLocked() // a reader held back by a full buffer may hold this message
	t.mu.Unlock()

	timer := time.NewTimer(t.opts.Timeout)
	defer timer.Stop()
	t.blocked.Add(1)
	defer t.blocked.Add(-1)
	var err error
	select {
	case r := <-w.ch:
		return r.payload, r.err
	case <-ctx.Done():
		err = fmt.Errorf("comm: %s: %w", what(), ctx.Err())
	case <-timer.C:
		err = &PeerError{Rank: from, Op: "recv", Err: fmt.Errorf("tag %v: nothing after %v: %w", tag, t.opts.Timeout, ErrTimeout)}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.removeWaiterLocked(k, w) {
		// Resolved while we gave up: take what it got, a message included.
		r := <-w.ch
		return r.payload, r.err
	}
	return nil, err
}

// takeLocked pops the oldest buffered message for k.
func (t *GRPCTransport) takeLocked(k msgKey) ([]byte, bool) {
	q := t.inbox[k]
	if len(q) == 0 {
		return nil, false
	}
	payload := q[0]
	q[0] = nil
	if len(q) == 1 {
		delete(t.inbox, k)
	} else {
		t.inbox[k] = q[1:]
	}
	if k.from != t.opts.Rank {
		t.peers[k.from].buffered -= len(payload)
		t.signalLocked()
	}
	return payload, true
}

func (t *GRPCTransport) removeWaiterLocked(k msgKey, w *recvWaiter) bool {
	ws := t.waiters[k]
	for i, x := range ws {
		if x == w {
			ws = append(ws[:i], ws[i+1:]...)
			if len(ws) == 0 {
				delete(t.waiters, k)
			} else {
				t.waiters[k] = ws
			}
			return true
		}
	}
	return false
}

// signalLocked wakes every reader waiting for buffer space to look again.
func (t *GRPCTransport) signalLocked() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// deliverLocal hands a message to this rank itself; the caller holds mu.
// It skips the buffer bound: the sender is the receiver, so blocking could
// only deadlock.
func (t *GRPCTransport) deliverLocal(tag Tag, epoch uint64, payload []byte) {
	k := msgKey{from: t.opts.Rank, tag: tag, epoch: epoch}
	if ws := t.waiters[k]; len(ws) > 0 {
		t.popWaiterLocked(k, ws).ch <- recvResult{payload: payload}
		return
	}
	t.inbox[k] = append(t.inbox[k], payload)
}

func (t *GRPCTransport) popWaiterLocked(k msgKey, ws []*recvWaiter) *recvWaiter {
	w := ws[0]
	if len(ws) == 1 {
		delete(t.waiters, k)
	} else {
		t.waiters[k] = ws[1:]
	}
	return w
}

// deliver hands a complete message from peer from to a waiting Recv or the
// inbox, blocking while that peer's share of the inbox is full. It returns
// an error when the stream should stop being read.
func (t *GRPCTransport) deliver(from int, m *wireMsg) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peers[from]
	if t.closed {
		return ErrClosed
	}
	t.stats.CountRecv(m.tag.Kind, Counter{Payload: int64(len(m.payload)), Framing: m.framing})
	for {
		if t.closed {
			return ErrClosed
		}
		if p.err != nil {
			return p.err
		}
		if m.epoch < t.epoch {
			t.stats.Dropped++
			return nil
		}
		k := msgKey{from: from, tag: m.tag, epoch: m.epoch}
		if ws := t.waiters[k]; len(ws) > 0 {
			t.popWaiterLocked(k, ws).ch <- recvResult{payload: m.payload}
			return nil
		}
		if p.buffered == 0 || p.buffered+len(m.payload) <= t.opts.MaxBufferedBytes {
			t.inbox[k] = append(t.inbox[k], m.payload)
			p.buffered += len(m.payload)
			return nil
		}
		changed := t.changed
		t.mu.Unlock()
		select {
		case <-changed:
		case <-p.dead:
		case <-t.closing:
		}
		t.mu.Lock()
	}
}

// SetEpoch moves to epoch: blocked Send and Recv calls fail with an
// *EpochError, and buffered messages of older epochs are dropped.
func (t *GRPCTransport) SetEpoch(epoch uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if epoch <= t.epoch {
		return fmt.Errorf("comm: set epoch %d: must be greater than the current epoch %d", epoch, t.epoch)
	}
	t.epoch = epoch
	close(t.epochCh)
	t.epochCh = make(chan struct{})
	for k, ws := range t.waiters {
		for _, w := range ws {
			w.ch <- recvResult{err: fmt.Errorf("comm: recv %v from rank %d: %w", k.tag, k.from, &EpochError{Have: k.epoch, Now: epoch})}
		}
		delete(t.waiters, k)
	}
	for k, q := range t.inbox {
		if k.epoch >= epoch {
			continue
		}
		for _, payload := range q {
			t.stats.Dropped++
			if k.from != t.opts.Rank {
				t.peers[k.from].buffered -= len(payload)
			}
		}
		delete(t.inbox, k)
	}
	t.signalLocked()
	return nil
}

// failPeer marks rank failed with cause, fails every Recv waiting on it and
// tears down our stream to it. Only the first cause is kept.
func (t *GRPCTransport) failPeer(rank int, cause error) {
	t.mu.Lock()
	p := t.peers[rank]
	if t.closed || p.err != nil {
		t.mu.Unlock()
		return
	}
	p.err = cause
	close(p.dead)
	for k, ws := range t.waiters {
		if k.from != rank {
			continue
		}
		for _, w := range ws {
			w.ch <- recvResult{err: &PeerError{Rank: rank, Op: "recv", Err: fmt.Errorf("tag %v: %w", k.tag, cause)}}
		}
		delete(t.waiters, k)
	}
	out := p.out
	t.mu.Unlock()
	t.opts.Logger.Warn("comm: peer failed", "rank", t.opts.Rank, "peer", rank, "err", cause)
	if out != nil {
		out.cancel()
	}
}

// Close flushes what is queued to live peers (for at most a few seconds),
// ends every stream and stops serving. Blocked and later calls fail with
// ErrClosed; peers see this rank as closed. Closing twice is a no-op.
func (t *GRPCTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.closing)
	for _, ws := range t.waiters {
		for _, w := range ws {
			w.ch <- recvResult{err: ErrClosed}
		}
	}
	t.waiters, t.inbox = nil, nil
	var outs []*outLink
	for _, p := range t.peers {
		if p.out != nil && p.err == nil {
			outs = append(outs, p.out)
		}
	}
	conns := t.conns
	t.mu.Unlock()

	// No Send is past its checks now, so the queues hold all there is.
	// Taking and releasing sendMu waits for the Sends in flight.
	t.sendMu.Lock()
	//lint:ignore SA2001 the empty critical section is the point
	t.sendMu.Unlock()
	for _, l := range outs {
		close(l.drain)
	}
	flush, stop := context.WithTimeout(context.Background(), closeFlushTimeout)
	defer stop()
	for _, l := range outs {
		select {
		case <-l.ended:
		case <-flush.Done():
		}
	}
	t.cancel()
	t.srv.Stop()
	for _, c := range conns {
		c.Close()
	}
	t.wg.Wait()
	return nil
}

var _ Transport = (*GRPCTransport)(nil)
