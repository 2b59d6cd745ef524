package comm

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// MemHeaderBytes is the framing the in-memory transport counts for every
// message, sent and received: the header a network frame of this design
// carries, laid out as job id (8 bytes), epoch (8), sequence number (8),
// sender rank (4), part (4), payload length (4), kind (1) and 3 reserved
// bytes. Counting it keeps the in-memory figures comparable with a network
// transport's, where small messages cost more than their payload.
const MemHeaderBytes = 40

// MemOptions configures an in-memory network.
type MemOptions struct {
	// Timeout bounds how long a Recv waits for its message, and a Send for
	// buffer space, before failing with a *PeerError wrapping ErrTimeout.
	// Zero waits until the context, the epoch, or a Close ends the wait.
	Timeout time.Duration
	// LinkBufferBytes bounds the bytes one sender may have queued, unreceived,
	// at one receiver; a Send beyond it blocks until the receiver takes
	// messages, as a network transport under flow control does. A message is
	// always admitted to an empty queue, whatever its size. Zero means
	// unbounded.
	LinkBufferBytes int
}

// MemTransport is one rank's end of an in-memory network. It has the
// semantics a network transport must have, so collectives tested on it
// behave the same over the wire:
//
//   - messages are matched by (sender, Tag), first in first out;
//   - every message carries the sender's epoch; one older than the
//     receiver's epoch is dropped on arrival or when the receiver moves on,
//     and counted in Stats.Dropped; one from a newer epoch waits until the
//     receiver reaches that epoch; a call whose ctx is bound to another
//     epoch (WithEpoch) fails with an *EpochError;
//   - payloads are copied on Send, so sender and receiver never share memory;
//   - Close makes this rank look dead to the others at once: their Recv from
//     it (once its delivered messages are consumed) and their Send to it fail
//     with a *PeerError wrapping ErrPeerClosed, without waiting for a timeout.
//
// Byte counters: a message counts len(payload) as payload and MemHeaderBytes
// as framing, on the sender when it is delivered and on the receiver when it
// arrives (including messages then dropped for a stale epoch).
type MemTransport struct {
	net  []*MemTransport // every rank's end; read-only after NewMemNetwork
	rank int
	opts MemOptions
	done chan struct{} // closed by Close

	mu      sync.Mutex
	epoch   uint64
	closed  bool
	abort   chan struct{} // closed by SetEpoch (then replaced) and by Close
	boxes   map[memKey]*memBox
	links   []memLink // indexed by sender rank
	waiting int       // calls blocked now; observed by tests
	stats   Stats
}

type memKey struct {
	from int
	tag  Tag
}

type memMsg struct {
	epoch   uint64
	payload []byte
}

// memBox holds the messages of one (sender, tag) not yet received.
type memBox struct {
	msgs    []memMsg
	ready   chan struct{} // closed when a message arrives; nil if nobody waits
	waiters int
}

// memLink is the flow-control state of one sender at this receiver.
type memLink struct {
	queued int
	space  chan struct{} // closed when queued shrinks; nil if no sender waits
}

// NewMemNetwork returns the transports of world ranks connected in memory;
// element i is rank i. All start at epoch 0.
func NewMemNetwork(world int, opts MemOptions) ([]*MemTransport, error) {
	if world < 1 {
		return nil, fmt.Errorf("comm: in-memory network of %d ranks: need at least 1", world)
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("comm: in-memory network timeout %v: must be zero (none) or positive", opts.Timeout)
	}
	if opts.LinkBufferBytes < 0 {
		return nil, fmt.Errorf("comm: in-memory network link buffer %d bytes: must be zero (unbounded) or positive", opts.LinkBufferBytes)
	}
	net := make([]*MemTransport, world)
	for r := range net {
		net[r] = &MemTransport{
			net:   net,
			rank:  r,
			opts:  opts,
			done:  make(chan struct{}),
			abort: make(chan struct{}),
			boxes: make(map[memKey]*memBox),
			links: make([]memLink, world),
		}
	}
	return net, nil
}

// Rank is this end's rank.
func (t *MemTransport) Rank() int { return t.rank }

// World is the number of ranks in the network.
func (t *MemTransport) World() int { return len(t.net) }

// Epoch is the current epoch.
func (t *MemTransport) Epoch() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.epoch
}

// Stats returns a copy of the byte counters.
func (t *MemTransport) Stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// SetEpoch moves to epoch: blocked calls fail with an *EpochError, and
// buffered messages of older epochs are dropped.
func (t *MemTransport) SetEpoch(epoch uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	if epoch <= t.epoch {
		return fmt.Errorf("comm: set epoch %d: must be greater than the current epoch %d", epoch, t.epoch)
	}
	t.epoch = epoch
	close(t.abort)
	t.abort = make(chan struct{})
	for k, b := range t.boxes {
		kept := b.msgs[:0]
		for _, m := range b.msgs {
			if m.epoch < epoch {
				t.stats.Dropped++
				t.release(k.from, len(m.payload))
				continue
			}
			kept = append(kept, m)
		}
		clear(b.msgs[len(kept):])
		b.msgs = kept
		if len(b.msgs) == 0 && b.waiters == 0 {
			delete(t.boxes, k)
		}
	}
	return nil
}

// Close makes this rank dead to the network: blocked and later calls on it
// fail with ErrClosed, and peers see a closed peer. Closing twice is a no-op.
func (t *MemTransport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	close(t.abort)
	close(t.done)
	t.boxes = nil
	return nil
}

// Send copies payload into a message for rank to. It returns once the
// message is queued at the receiver; with LinkBufferBytes set it may block
// until the receiver has room.
func (t *MemTransport) Send(ctx context.Context, to int, tag Tag, payload []byte) error {
	if to < 0 || to >= len(t.net) {
		return fmt.Errorf("comm: send %v to rank %d: ranks are 0..%d", tag, to, len(t.net)-1)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	have, abort := t.epoch, t.abort
	t.mu.Unlock()
	if e, ok := BoundEpoch(ctx); ok && e != have {
		return fmt.Errorf("comm: send %v to rank %d: %w", tag, to, &EpochError{Have: e, Now: have})
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("comm: send %v to rank %d: %w", tag, to, err)
	}

	msg := memMsg{epoch: have, payload: append([]byte(nil), payload...)}
	dst := t.net[to]
	var timeout <-chan time.Time
	for {
		dst.mu.Lock()
		if dst.closed {
			dst.mu.Unlock()
			return &PeerError{Rank: to, Op: "send", Err: fmt.Errorf("tag %v: %w", tag, ErrPeerClosed)}
		}
		link := &dst.links[t.rank]
		if lim := t.opts.LinkBufferBytes; lim == 0 || link.queued == 0 || link.queued+len(msg.payload) <= lim {
			dst.deliver(t.rank, tag, msg)
			dst.mu.Unlock()
			break
		}
		if link.space == nil {
			link.space = make(chan struct{})
		}
		space := link.space
		dst.mu.Unlock()

		if timeout == nil && t.opts.Timeout > 0 {
			tm := time.NewTimer(t.opts.Timeout)
			defer tm.Stop()
			timeout = tm.C
		}
		t.block(+1)
		select {
		case <-space:
		case <-dst.done:
		case <-abort:
			t.block(-1)
			return t.abortErr(have, fmt.Sprintf("send %v to rank %d", tag, to))
		case <-ctx.Done():
			t.block(-1)
			return fmt.Errorf("comm: send %v to rank %d: %w", tag, to, ctx.Err())
		case <-timeout:
			t.block(-1)
			return &PeerError{Rank: to, Op: "send", Err: fmt.Errorf("tag %v: no buffer space after %v: %w", tag, t.opts.Timeout, ErrTimeout)}
		}
		t.block(-1)
	}

	t.mu.Lock()
	t.stats.CountSend(tag.Kind, Counter{Payload: int64(len(msg.payload)), Framing: MemHeaderBytes})
	t.mu.Unlock()
	return nil
}

// deliver queues msg from rank from; the caller holds t.mu.
func (t *MemTransport) deliver(from int, tag Tag, msg memMsg) {
	t.stats.CountRecv(tag.Kind, Counter{Payload: int64(len(msg.payload)), Framing: MemHeaderBytes})
	if msg.epoch < t.epoch {
		t.stats.Dropped++
		return
	}
	k := memKey{from, tag}
	b := t.boxes[k]
	if b == nil {
		b = &memBox{}
		t.boxes[k] = b
	}
	b.msgs = append(b.msgs, msg)
	t.links[from].queued += len(msg.payload)
	if b.ready != nil {
		close(b.ready)
		b.ready = nil
	}
}

// release returns n bytes of from's buffer space; the caller holds t.mu.
func (t *MemTransport) release(from, n int) {
	l := &t.links[from]
	l.queued -= n
	if n > 0 && l.space != nil {
		close(l.space)
		l.space = nil
	}
}

// Recv returns the payload of the next message from rank from with tag in
// the current epoch, waiting for it if needed.
func (t *MemTransport) Recv(ctx context.Context, from int, tag Tag) ([]byte, error) {
	if from < 0 || from >= len(t.net) {
		return nil, fmt.Errorf("comm: recv %v from rank %d: ranks are 0..%d", tag, from, len(t.net)-1)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("comm: recv %v from rank %d: %w", tag, from, err)
	}
	peer := t.net[from]
	k := memKey{from, tag}
	var timeout <-chan time.Time

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	have, abort := t.epoch, t.abort
	if e, ok := BoundEpoch(ctx); ok && e != have {
		t.mu.Unlock()
		return nil, fmt.Errorf("comm: recv %v from rank %d: %w", tag, from, &EpochError{Have: e, Now: have})
	}
	for {
		if t.closed {
			t.mu.Unlock()
			return nil, ErrClosed
		}
		b := t.boxes[k]
		// Older messages were dropped when the epoch advanced, and a sender
		// never goes back an epoch, so the head is the only candidate.
		if b != nil && len(b.msgs) > 0 && b.msgs[0].epoch == have {
			m := b.msgs[0]
			b.msgs[0] = memMsg{}
			b.msgs = b.msgs[1:]
			if len(b.msgs) == 0 && b.waiters == 0 {
				delete(t.boxes, k)
			}
			t.release(from, len(m.payload))
			t.mu.Unlock()
			return m.payload, nil
		}
		select {
		case <-peer.done:
			t.mu.Unlock()
			return nil, &PeerError{Rank: from, Op: "recv", Err: fmt.Errorf("tag %v: %w", tag, ErrPeerClosed)}
		default:
		}
		if b == nil {
			b = &memBox{}
			t.boxes[k] = b
		}
		if b.ready == nil {
			b.ready = make(chan struct{})
		}
		ready := b.ready
		b.waiters++
		t.waiting++
		t.mu.Unlock()

		if timeout == nil && t.opts.Timeout > 0 {
			tm := time.NewTimer(t.opts.Timeout)
			defer tm.Stop()
			timeout = tm.C
		}
		var err error
		select {
		case <-ready:
		case <-peer.done:
		case <-abort:
			err = t.abortErr(have, fmt.Sprintf("recv %v from rank %d", tag, from))
		case <-ctx.Done():
			err = fmt.Errorf("comm: recv %v from rank %d: %w", tag, from, ctx.Err())
		case <-timeout:
			err = &PeerError{Rank: from, Op: "recv", Err: fmt.Errorf("tag %v: nothing after %v: %w", tag, t.opts.Timeout, ErrTimeout)}
		}

		t.mu.Lock()
		t.waiting--
		b.waiters--
		if err != nil {
			if len(b.msgs) == 0 && b.waiters == 0 && t.boxes[k] == b {
				delete(t.boxes, k)
			}
			t.mu.Unlock()
			return nil, err
		}
	}
}

// abortErr explains why a call that started in epoch have was woken by the
// abort channel: a Close or an epoch change.
func (t *MemTransport) abortErr(have uint64, what string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	return fmt.Errorf("comm: %s: %w", what, &EpochError{Have: have, Now: t.epoch})
}

func (t *MemTransport) block(d int) {
	t.mu.Lock()
	t.waiting += d
	t.mu.Unlock()
}

// blocked reports how many calls are waiting on this end now.
func (t *MemTransport) blocked() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.waiting
}

var _ Transport = (*MemTransport)(nil)
