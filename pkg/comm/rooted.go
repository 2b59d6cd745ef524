package comm

import (
	"context"
	"fmt"
)

// Broadcast sends root's payload to every member and returns it; the
// payload argument is ignored on the other members (pass nil). On root the
// result is payload itself, elsewhere a new buffer.
//
// Algorithm: a pipelined chain root → root+1 → ... → root-1 (group ranks
// mod W). The payload travels as a stream of parts, and each member passes
// a part on as soon as it has it, so a long payload costs about one
// transfer time plus W-1 part times. Every member but the last in the chain
// sends the payload once and every member but root receives it once:
// T bytes in floor(T / MaxPartBytes) + 1 messages.
func (g *Group) Broadcast(ctx context.Context, root int, payload []byte) ([]byte, error) {
	n, err := g.next()
	if err != nil {
		return nil, err
	}
	if err := g.checkRank("broadcast root", root); err != nil {
		return nil, err
	}
	w, r := g.Size(), g.me
	pos := ((r-root)%w + w) % w // place in the chain; root is 0
	fail := func(err error) error {
		return fmt.Errorf("comm: broadcast #%d from group rank %d (group %d, rank %d of %d): %w", n, root, g.id, r, w, err)
	}
	var sendPart, recvPart uint32
	if pos == 0 {
		if w > 1 {
			if err := g.sendParts(ctx, g.peer(1), KindBroadcast, n, &sendPart, g.splitParts(append([]byte(nil), payload...))); err != nil {
				return nil, fail(err)
			}
		}
		return payload, nil
	}
	var parts [][]byte
	for {
		p, err := g.recvPart(ctx, g.peer(-1), KindBroadcast, n, &recvPart)
		if err != nil {
			return nil, fail(err)
		}
		parts = append(parts, p)
		if pos < w-1 {
			// Send is synchronous here: the chain has no cycle, so even a
			// Send that waits for the receiver cannot deadlock.
			if err := g.sendParts(ctx, g.peer(1), KindBroadcast, n, &sendPart, [][]byte{p}); err != nil {
				return nil, fail(err)
			}
		}
		if len(p) < g.partBytes {
			break
		}
	}
	if pos == w-1 && len(parts) == 1 {
		return parts[0], nil
	}
	return join(parts), nil
}

// BroadcastFloat32 copies root's x into x on every member; all members pass
// the same length. Values travel exactly (float32), as Broadcast's stream.
func (g *Group) BroadcastFloat32(ctx context.Context, root int, x []float32) error {
	var payload []byte
	if g.me == root {
		payload = encode(x, WireFloat32)
	}
	got, err := g.Broadcast(ctx, root, payload)
	if err != nil {
		return err
	}
	if g.me == root {
		return nil
	}
	if len(got) != 4*len(x) {
		return fmt.Errorf("comm: broadcast from group rank %d: got %d bytes, want %d (%d float32 values): do all members pass the same length?", root, len(got), 4*len(x), len(x))
	}
	decodeCopy(x, got, WireFloat32)
	return nil
}

// Reduce leaves in root's x the reduction (op) of the members' x, which
// must all have the same length; the other members' x are not changed.
//
// Algorithm: a pipelined chain root+1 → root+2 → ... → root-1 → root. Each
// member adds its own values to the partial sum it receives (in float32)
// and passes it on, part by part, so the sum of value i is always
// x[root+1] + x[root+2] + ... + x[root-1] + x[root] in that order, on any
// run. With WireBF16 each hop carries the partial sum rounded to bf16;
// root's final addition and Mean's division stay in float32. Every member
// but root sends n·b bytes and every member but the first in the chain
// receives n·b (b = wire.Bytes()), in ceil(n·b / MaxPartBytes) messages.
func (g *Group) Reduce(ctx context.Context, root int, x []float32, op Op, wire Wire) error {
	n, err := g.next()
	if err != nil {
		return err
	}
	if err := g.checkRank("reduce root", root); err != nil {
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
	pos := ((r-root-1)%w + w) % w // place in the chain; root is last
	per := g.valuesPerPart(wire)
	var sendPart, recvPart uint32
	for lo := 0; lo < len(x); lo += per {
		hi := min(lo+per, len(x))
		acc := x[lo:hi]
		if pos > 0 {
			if pos < w-1 {
				acc = append([]float32(nil), acc...) // keep this member's x as it is
			}
			err := g.recvValues(ctx, g.peer(-1), KindReduce, n, &recvPart, acc, wire, decodeAdd)
			if err != nil {
				return fmt.Errorf("comm: reduce #%d to group rank %d (group %d, rank %d of %d): %w", n, root, g.id, r, w, err)
			}
		}
		if pos < w-1 {
			if err := g.sendValues(ctx, g.peer(1), KindReduce, n, &sendPart, acc, wire); err != nil {
				return fmt.Errorf("comm: reduce #%d to group rank %d (group %d, rank %d of %d): %w", n, root, g.id, r, w, err)
			}
		}
	}
	if pos == w-1 {
		finish(x, op, w)
	}
	return nil
}
