package comm

import (
	"context"
	"fmt"
)

// MaxP2PID is the largest point-to-point message id.
const MaxP2PID = maxSeq

// Send sends payload to group rank to as point-to-point message id. Ids are
// chosen by the caller (a pipeline schedule numbers its activation and
// gradient transfers) and are independent of the collectives' counter, so
// point-to-point traffic may interleave with collectives in any order; a
// given (sender, receiver, id) must be used once per epoch. payload is
// copied, so the caller may reuse it once Send returns. A payload longer
// than MaxPartBytes travels as several messages; T bytes take
// floor(T / MaxPartBytes) + 1.
func (g *Group) Send(ctx context.Context, to int, id uint64, payload []byte) error {
	if err := g.checkP2P("send to", to, id); err != nil {
		return err
	}
	var part uint32
	dst := g.members[to]
	if err := g.sendParts(ctx, dst, KindP2P, id, &part, g.splitParts(append([]byte(nil), payload...))); err != nil {
		return fmt.Errorf("comm: p2p send id %d to group rank %d (group %d): %w", id, to, g.id, err)
	}
	return nil
}

// Recv returns point-to-point message id from group rank from, in a buffer
// the caller owns.
func (g *Group) Recv(ctx context.Context, from int, id uint64) ([]byte, error) {
	if err := g.checkP2P("recv from", from, id); err != nil {
		return nil, err
	}
	var part uint32
	parts, err := g.recvParts(ctx, g.members[from], KindP2P, id, &part)
	if err != nil {
		return nil, fmt.Errorf("comm: p2p recv id %d from group rank %d (group %d): %w", id, from, g.id, err)
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	return join(parts), nil
}

func (g *Group) checkP2P(what string, r int, id uint64) error {
	if err := g.checkRank("p2p "+what, r); err != nil {
		return err
	}
	if id > MaxP2PID {
		return fmt.Errorf("comm: p2p %s group rank %d: id %d is above the maximum %d", what, r, id, uint64(MaxP2PID))
	}
	return nil
}
