package comm

import (
	"context"
	"fmt"
)

// AllGather returns every member's payload, indexed by group rank; sizes
// may differ between members, and empty payloads are allowed. out[Rank()]
// is payload itself; the others are new buffers owned by the caller.
// payload is copied before it is sent, so the caller may reuse it as soon
// as AllGather returns.
//
// Algorithm: a ring. In step s = 0..W-2, group rank r sends the block of
// rank (r-s) mod W (its own at s = 0, then the one it received in the step
// before) to rank r+1 and receives the block of rank (r-s-1) mod W from
// rank r-1. Blocks travel as streams of parts (at most MaxPartBytes each,
// ended by a shorter, possibly empty, part), so no sizes need to be known
// in advance and nothing but the payloads is sent.
//
// Bytes at group rank r, with T_j the payload size of rank j and
// T = Σ T_j: sent = T - T_{(r+1) mod W} (every block but the right
// neighbour's), received = T - T_r (every block but its own). With equal
// sizes both are (W-1)·T_r: the upload of sending one's own payload to
// every peer directly, spread over the ring so every link carries the same
// load. Each block takes floor(T_j / MaxPartBytes) + 1 messages.
// AllGatherCost computes these figures.
func (g *Group) AllGather(ctx context.Context, payload []byte) ([][]byte, error) {
	n, err := g.next()
	if err != nil {
		return nil, err
	}
	w, r := g.Size(), g.me
	out := make([][]byte, w)
	out[r] = payload
	if w == 1 {
		return out, nil
	}
	right, left := g.peer(1), g.peer(-1)
	fwd := g.splitParts(append([]byte(nil), payload...))
	var sendPart, recvPart uint32
	for s := 0; s < w-1; s++ {
		var got [][]byte
		err := exchange(ctx,
			func(ctx context.Context) error {
				return g.sendParts(ctx, right, KindAllGather, n, &sendPart, fwd)
			},
			func(ctx context.Context) (err error) {
				got, err = g.recvParts(ctx, left, KindAllGather, n, &recvPart)
				return err
			})
		if err != nil {
			return nil, fmt.Errorf("comm: all-gather #%d (group %d, rank %d of %d): step %d: %w", n, g.id, r, w, s, err)
		}
		j := ((r-s-1)%w + w) % w
		if s == w-2 && len(got) == 1 {
			out[j] = got[0] // not forwarded, so the caller may own it
		} else {
			out[j] = join(got) // got goes on to the transport next step
		}
		fwd = got
	}
	return out, nil
}

// AllGatherCost is what AllGather moves at group rank rank when member j
// contributes sizes[j] bytes, for the given part size (0 means
// DefaultMaxPartBytes).
func AllGatherCost(sizes []int, rank int, maxPartBytes int) Cost {
	var c Cost
	w := len(sizes)
	if w <= 1 {
		return c
	}
	if maxPartBytes == 0 {
		maxPartBytes = DefaultMaxPartBytes
	}
	for j, t := range sizes {
		if j != (rank+1)%w {
			c.SentBytes += int64(t)
			c.SentMsgs += streamParts(t, maxPartBytes)
		}
		if j != rank {
			c.RecvBytes += int64(t)
			c.RecvMsgs += streamParts(t, maxPartBytes)
		}
	}
	return c
}
