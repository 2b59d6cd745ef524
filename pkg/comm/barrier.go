package comm

import (
	"context"
	"fmt"
)

// Barrier returns once every member has called it.
//
// Algorithm: the dissemination barrier (Hensgen, Finkel & Manber, "Two
// algorithms for barrier synchronization", IJPP 17(1), 1988). In round
// k = 0..ceil(log2 W)-1, group rank r sends an empty message to rank
// r+2^k and waits for one from rank r-2^k. After the last round every rank
// has heard, directly or through others, from every other rank, so none
// can leave before all have arrived. Each rank sends and receives
// ceil(log2 W) empty messages: framing only.
func (g *Group) Barrier(ctx context.Context) error {
	n, err := g.next()
	if err != nil {
		return err
	}
	w, r := g.Size(), g.me
	for k, d := 0, 1; d < w; k, d = k+1, 2*d {
		to, from, part := g.peer(d), g.peer(-d), uint32(k)
		err := exchange(ctx,
			func(ctx context.Context) error {
				if err := g.send(ctx, to, g.tag(KindBarrier, n, part), nil); err != nil {
					return fmt.Errorf("send to rank %d: %w", to, err)
				}
				return nil
			},
			func(ctx context.Context) error {
				p, err := g.recv(ctx, from, g.tag(KindBarrier, n, part))
				if err != nil {
					return fmt.Errorf("recv from rank %d: %w", from, err)
				}
				if len(p) != 0 {
					return &PeerError{Rank: from, Op: "recv", Err: fmt.Errorf("barrier message has %d bytes, want none", len(p))}
				}
				return nil
			})
		if err != nil {
			return fmt.Errorf("comm: barrier #%d (group %d, rank %d of %d): round %d: %w", n, g.id, r, w, k, err)
		}
	}
	return nil
}
