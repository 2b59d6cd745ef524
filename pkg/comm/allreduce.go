package comm

import (
	"context"
	"fmt"
)

// AllReduce replaces x, on every member, with the reduction (op) of the
// members' x, which must all have the same length.
//
// Algorithm: the ring of Patarasuk & Yuan ("Bandwidth optimal all-reduce
// algorithms for clusters of workstations", JPDC 69(2), 2009). x is cut
// into W = Size() segments, segment j holding n/W values plus one more for
// j < n mod W. In reduce-scatter step s = 0..W-2, group rank r sends its
// partial sum of segment (r-s) mod W to rank r+1 and adds what rank r-1
// sends of segment (r-s-1) mod W; afterwards rank r holds the complete sum
// of segment (r+1) mod W, accumulated in the fixed order
// x[j] + x[j+1] + ... + x[j-1] (ranks mod W, starting at the segment's
// index). That rank applies Mean's division and, for WireBF16, rounds the
// segment to bf16; the all-gather steps s = 0..W-2 then pass the finished
// segments around the ring (rank r sends segment (r+1-s) mod W), and every
// rank copies them, so all ranks end with the same bits, run after run.
// With WireBF16 every hop carries the partial sum rounded to bf16 and the
// receiver adds it in float32; the result is bf16-valued on every rank.
// With one member nothing is sent and x is left as it is (Sum and Mean of
// one value are the value, and no rounding to the wire happens).
//
// Bytes at group rank r, with |j| the length of segment j and b =
// wire.Bytes(): sent = (2n - |r+1| - |r+2|)·b and received =
// (2n - |r| - |r+1|)·b (segments mod W), each about 2(W-1)/W·n·b.
// Every segment travels as ceil(|j|·b / MaxPartBytes) messages (none when
// empty). AllReduceCost computes these figures.
func (g *Group) AllReduce(ctx context.Context, x []float32, op Op, wire Wire) error {
	n, err := g.next()
	if err != nil {
		return err
	}
	if err := op.check(); err != nil {
		return err
	}
	if err := wire.check(); err != nil {
		return err
	}
	w, r := g.Size(), g.me
	if w == 1 {
		return nil
	}
	off := segments(len(x), w)
	seg := func(j int) []float32 {
		j = ((j % w) + w) % w
		return x[off[j]:off[j+1]]
	}
	right, left := g.peer(1), g.peer(-1)
	var sendPart, recvPart uint32
	for s := 0; s < w-1; s++ {
		out, in := seg(r-s), seg(r-s-1)
		err := exchange(ctx,
			func(ctx context.Context) error {
				return g.sendValues(ctx, right, KindAllReduce, n, &sendPart, out, wire)
			},
			func(ctx context.Context) error {
				return g.recvValues(ctx, left, KindAllReduce, n, &recvPart, in, wire, decodeAdd)
			})
		if err != nil {
			return fmt.Errorf("comm: all-reduce #%d (group %d, rank %d of %d): reduce-scatter step %d: %w", n, g.id, r, w, s, err)
		}
	}
	own := seg(r + 1)
	finish(own, op, w)
	if wire == WireBF16 {
		roundBF16(own)
	}
	for s := 0; s < w-1; s++ {
		out, in := seg(r+1-s), seg(r-s)
		err := exchange(ctx,
			func(ctx context.Context) error {
				return g.sendValues(ctx, right, KindAllReduce, n, &sendPart, out, wire)
			},
			func(ctx context.Context) error {
				return g.recvValues(ctx, left, KindAllReduce, n, &recvPart, in, wire, decodeCopy)
			})
		if err != nil {
			return fmt.Errorf("comm: all-reduce #%d (group %d, rank %d of %d): all-gather step %d: %w", n, g.id, r, w, s, err)
		}
	}
	return nil
}

// segments returns the w+1 offsets that cut n values into w segments whose
// lengths differ by at most one, the longer ones first.
func segments(n, w int) []int {
	off := make([]int, w+1)
	q, rem := n/w, n%w
	for j := 0; j < w; j++ {
		off[j+1] = off[j] + q
		if j < rem {
			off[j+1]++
		}
	}
	return off
}

// valuesPerPart is how many values of wire format w fit one message.
func (g *Group) valuesPerPart(w Wire) int { return g.partBytes / w.Bytes() }

// sendValues sends v in wire format w to world rank to, as parts of at most
// valuesPerPart values numbered from *part. The receiver knows len(v), so an
// empty v sends nothing.
func (g *Group) sendValues(ctx context.Context, to int, kind Kind, n uint64, part *uint32, v []float32, w Wire) error {
	per := g.valuesPerPart(w)
	for len(v) > 0 {
		c := min(per, len(v))
		if err := g.send(ctx, to, g.tag(kind, n, *part), encode(v[:c], w)); err != nil {
			return fmt.Errorf("send to rank %d: %w", to, err)
		}
		*part++
		v = v[c:]
	}
	return nil
}

// recvValues receives len(v) values from world rank from, as sendValues
// sent them, and hands each part to apply (decodeAdd or decodeCopy).
func (g *Group) recvValues(ctx context.Context, from int, kind Kind, n uint64, part *uint32, v []float32, w Wire, apply func([]float32, []byte, Wire)) error {
	per := g.valuesPerPart(w)
	for len(v) > 0 {
		c := min(per, len(v))
		p, err := g.recv(ctx, from, g.tag(kind, n, *part))
		if err != nil {
			return fmt.Errorf("recv from rank %d: %w", from, err)
		}
		if len(p) != c*w.Bytes() {
			return &PeerError{Rank: from, Op: "recv", Err: fmt.Errorf("part %d has %d bytes, want %d (%d %s values): do all members pass the same length?", *part, len(p), c*w.Bytes(), c, w)}
		}
		apply(v[:c], p, w)
		*part++
		v = v[c:]
	}
	return nil
}

// Cost is what one collective moves at one rank: payload bytes and
// messages in each direction. A transport adds its per-message framing
// (MemHeaderBytes for the in-memory one) to each message.
type Cost struct {
	SentBytes, RecvBytes int64
	SentMsgs, RecvMsgs   int64
}

// AllReduceCost is what AllReduce of n values moves at group rank rank of a
// group of size members, for the given wire format and part size (0 means
// DefaultMaxPartBytes).
func AllReduceCost(n, size, rank int, wire Wire, maxPartBytes int) Cost {
	var c Cost
	if size <= 1 || n == 0 {
		return c
	}
	if maxPartBytes == 0 {
		maxPartBytes = DefaultMaxPartBytes
	}
	b := int64(wire.Bytes())
	per := maxPartBytes / wire.Bytes()
	off := segments(n, size)
	seg := func(j int) int {
		j = ((j % size) + size) % size
		return off[j+1] - off[j]
	}
	msgs := func(k int) int64 { return int64((k + per - 1) / per) }
	for s := 0; s < size-1; s++ {
		for _, j := range []int{rank - s, rank + 1 - s} { // reduce-scatter, all-gather
			c.SentBytes += int64(seg(j)) * b
			c.SentMsgs += msgs(seg(j))
		}
		for _, j := range []int{rank - s - 1, rank - s} {
			c.RecvBytes += int64(seg(j)) * b
			c.RecvMsgs += msgs(seg(j))
		}
	}
	return c
}
