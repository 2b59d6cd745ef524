package comm

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
)

// DefaultMaxPartBytes bounds the payload of one message a collective hands
// to the transport. Ring steps and large payloads are cut into parts of at
// most this size, so no transport ever sees a giant message and a network
// transport can keep several in flight.
const DefaultMaxPartBytes = 1 << 20

// Tag.Seq of every message a Group sends is groupID<<40 | n: the group id
// in the high 24 bits, and in the low 40 bits n, the collective's number
// (or the caller's id for point-to-point, which Tag.Kind keeps apart from
// the collectives). Groups with different ids therefore never share a tag,
// even when their members overlap; 2^40 collectives are about 35 years at
// 1000 a second.
const (
	seqBits   = 40
	maxSeq    = 1<<seqBits - 1
	groupBits = 64 - seqBits
	// MaxGroupID is the largest group id, 2^24-1.
	MaxGroupID = 1<<groupBits - 1
)

// minPartBytes keeps a part large enough for one float32 value.
const minPartBytes = 8

// GroupOptions configures NewSubGroup. Every member must pass the same
// options.
type GroupOptions struct {
	// ID is mixed into every tag so that groups sharing members never mix
	// their messages; at most MaxGroupID. Zero picks one from the member
	// list: 0 for the whole world in rank order (what NewGroup uses), else a
	// non-zero hash of the list. Set it explicitly when two groups of the
	// same members exist at once, or to rule out hash collisions between
	// groups that share two or more members.
	ID uint32
	// MaxPartBytes bounds one message's payload (default
	// DefaultMaxPartBytes, at least 8).
	MaxPartBytes int
}

// Group runs collectives among a fixed, ordered set of ranks over one
// Transport. Group rank i is world rank Members()[i]; every rank argument
// and result index of its methods is a group rank.
//
// All members must call the same collectives with matching arguments in
// the same order: each call takes the next number from the group's counter
// and puts it in the tags of its messages, so two collectives never match
// each other's messages. Collectives of one Group are therefore not to be
// called concurrently; different Groups on one Transport may run at the
// same time. A collective that fails (any transport error, wrapped with the
// collective, the step and the peer's world rank) leaves its buffers in an
// unspecified state, and the members' counters may disagree afterwards.
//
// A Group belongs to the epoch its transport was in when it was built:
// every transport call is bound to that epoch (WithEpoch), so once the
// epoch moves on, every collective of the group, blocked or about to call
// the transport, fails with an *EpochError. Build a new Group in the new
// epoch; messages of the old one cannot reach it.
type Group struct {
	t         Transport
	members   []int // world ranks in group order
	me        int   // this rank's group rank
	id        uint32
	partBytes int
	epoch     uint64 // the transport's epoch when the group was built
	seq       atomic.Uint64
}

// NewGroup returns the group of all ranks of t, in rank order, with group
// id 0 and default options.
func NewGroup(t Transport) *Group {
	members := make([]int, t.World())
	for i := range members {
		members[i] = i
	}
	return &Group{t: t, members: members, me: t.Rank(), partBytes: DefaultMaxPartBytes, epoch: t.Epoch()}
}

// NewSubGroup returns the group of the world ranks listed in ranks (in that
// order, which is the ring order); t's rank must be one of them.
func NewSubGroup(t Transport, ranks []int, opts GroupOptions) (*Group, error) {
	world := t.World()
	if len(ranks) == 0 {
		return nil, fmt.Errorf("comm: sub-group: no ranks given")
	}
	me := -1
	seen := make(map[int]bool, len(ranks))
	for i, r := range ranks {
		if r < 0 || r >= world {
			return nil, fmt.Errorf("comm: sub-group %v: rank %d is outside the world 0..%d", ranks, r, world-1)
		}
		if seen[r] {
			return nil, fmt.Errorf("comm: sub-group %v: rank %d listed twice", ranks, r)
		}
		seen[r] = true
		if r == t.Rank() {
			me = i
		}
	}
	if me < 0 {
		return nil, fmt.Errorf("comm: sub-group %v: this rank (%d) is not a member", ranks, t.Rank())
	}
	if opts.ID > MaxGroupID {
		return nil, fmt.Errorf("comm: sub-group %v: id %d is above the maximum %d", ranks, opts.ID, MaxGroupID)
	}
	part := opts.MaxPartBytes
	if part == 0 {
		part = DefaultMaxPartBytes
	}
	if part < minPartBytes {
		return nil, fmt.Errorf("comm: sub-group %v: max part bytes %d: need at least %d", ranks, part, minPartBytes)
	}
	id := opts.ID
	if id == 0 {
		id = groupID(ranks, world)
	}
	return &Group{t: t, members: append([]int(nil), ranks...), me: me, id: id, partBytes: part, epoch: t.Epoch()}, nil
}

// groupID is 0 for the world in rank order, else a non-zero FNV-1a hash of
// the member list folded into groupBits.
func groupID(ranks []int, world int) uint32 {
	identity := len(ranks) == world
	h := fnv.New64a()
	var b [4]byte
	for i, r := range ranks {
		identity = identity && r == i
		b[0], b[1], b[2], b[3] = byte(r), byte(r>>8), byte(r>>16), byte(r>>24)
		h.Write(b[:])
	}
	if identity {
		return 0
	}
	return uint32(h.Sum64()%MaxGroupID) + 1
}

// Rank is this rank's index in the group.
func (g *Group) Rank() int { return g.me }

// Size is the number of members.
func (g *Group) Size() int { return len(g.members) }

// Members returns the world ranks of the members in group order.
func (g *Group) Members() []int { return append([]int(nil), g.members...) }

// ID is the group id mixed into the tags.
func (g *Group) ID() uint32 { return g.id }

// Transport is the transport the group sends over.
func (g *Group) Transport() Transport { return g.t }

// Epoch is the epoch the group belongs to.
func (g *Group) Epoch() uint64 { return g.epoch }

// send and recv are the group's only ways to the transport. They bind the
// call to the group's epoch, and check it here too for transports that do
// not honour the binding.
func (g *Group) send(ctx context.Context, to int, tag Tag, p []byte) error {
	if now := g.t.Epoch(); now != g.epoch {
		return &EpochError{Have: g.epoch, Now: now}
	}
	return g.t.Send(WithEpoch(ctx, g.epoch), to, tag, p)
}

func (g *Group) recv(ctx context.Context, from int, tag Tag) ([]byte, error) {
	if now := g.t.Epoch(); now != g.epoch {
		return nil, &EpochError{Have: g.epoch, Now: now}
	}
	return g.t.Recv(WithEpoch(ctx, g.epoch), from, tag)
}

// next takes the next collective number.
func (g *Group) next() (uint64, error) {
	n := g.seq.Add(1) - 1
	if n > maxSeq {
		return 0, fmt.Errorf("comm: group %d: more than %d collectives", g.id, uint64(maxSeq))
	}
	return n, nil
}

func (g *Group) tag(kind Kind, n uint64, part uint32) Tag {
	return Tag{Kind: kind, Seq: uint64(g.id)<<seqBits | n, Part: part}
}

// peer returns the world rank of the member d places after this one in
// ring order (d may be negative).
func (g *Group) peer(d int) int {
	w := len(g.members)
	return g.members[((g.me+d)%w+w)%w]
}

func (g *Group) checkRank(what string, r int) error {
	if r < 0 || r >= len(g.members) {
		return fmt.Errorf("comm: %s: group rank %d is outside 0..%d", what, r, len(g.members)-1)
	}
	return nil
}

// exchange runs send in a goroutine and recv in the caller's, so that a
// ring step works even when Send blocks until the peer receives. The first
// failure cancels the other side; its error (the cause, not the
// cancellation it triggered) is returned after both have finished.
func exchange(ctx context.Context, send, recv func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	var first error
	fail := func(err error) {
		once.Do(func() { first = err; cancel() })
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := send(ctx); err != nil {
			fail(err)
		}
	}()
	if err := recv(ctx); err != nil {
		fail(err)
	}
	<-done
	return first
}

// Streams of unknown length (all-gather blocks, broadcast payloads,
// point-to-point messages) are sent as parts of exactly partBytes bytes
// followed by one shorter part, possibly empty. The receiver stops at the
// first short part, so no length prefix is needed and the payload bytes
// counted are exactly the stream's bytes; the cost is one empty message
// when the length is a multiple of partBytes (including zero).

// splitParts cuts b into the parts of a stream.
func (g *Group) splitParts(b []byte) [][]byte {
	parts := make([][]byte, 0, len(b)/g.partBytes+1)
	for len(b) >= g.partBytes {
		parts = append(parts, b[:g.partBytes])
		b = b[g.partBytes:]
	}
	return append(parts, b)
}

// streamParts is how many messages a stream of n bytes takes.
func streamParts(n, partBytes int) int64 { return int64(n/partBytes) + 1 }

// sendParts sends parts to world rank to, numbering them from *part.
func (g *Group) sendParts(ctx context.Context, to int, kind Kind, n uint64, part *uint32, parts [][]byte) error {
	for _, p := range parts {
		if err := g.send(ctx, to, g.tag(kind, n, *part), p); err != nil {
			return fmt.Errorf("send to rank %d: %w", to, err)
		}
		*part++
	}
	return nil
}

// recvPart receives one part of a stream from world rank from.
func (g *Group) recvPart(ctx context.Context, from int, kind Kind, n uint64, part *uint32) ([]byte, error) {
	p, err := g.recv(ctx, from, g.tag(kind, n, *part))
	if err != nil {
		return nil, fmt.Errorf("recv from rank %d: %w", from, err)
	}
	if len(p) > g.partBytes {
		return nil, &PeerError{Rank: from, Op: "recv", Err: fmt.Errorf("part %d has %d bytes, more than the %d-byte part size", *part, len(p), g.partBytes)}
	}
	*part++
	return p, nil
}

// recvParts receives a whole stream from world rank from, part by part.
func (g *Group) recvParts(ctx context.Context, from int, kind Kind, n uint64, part *uint32) ([][]byte, error) {
	var parts [][]byte
	for {
		p, err := g.recvPart(ctx, from, kind, n, part)
		if err != nil {
			return nil, err
		}
		parts = append(parts, p)
		if len(p) < g.partBytes {
			return parts, nil
		}
	}
}

// join concatenates parts into a new buffer.
func join(parts [][]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
