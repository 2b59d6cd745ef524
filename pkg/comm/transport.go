package comm

import (
	"context"
	"fmt"
)

// Kind says which collective a message belongs to. It is part of every Tag,
// and the byte counters are kept per Kind.
type Kind uint8

// Message kinds.
const (
	KindP2P Kind = iota
	KindAllReduce
	KindAllGather
	KindBroadcast
	KindReduce
	KindBarrier
	KindSnapshot
	numKinds
)

var kindNames = [numKinds]string{"p2p", "all_reduce", "all_gather", "broadcast", "reduce", "barrier", "snapshot"}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Tag identifies a message between a sender and a receiver. Collectives derive
// Seq from a per-group counter that every member advances in the same order,
// so two collectives never share a tag; Part tells apart the messages of one
// collective (ring step, chunk).
type Tag struct {
	Kind Kind
	Seq  uint64
	Part uint32
}

func (t Tag) String() string { return fmt.Sprintf("%s/%d/%d", t.Kind, t.Seq, t.Part) }

// Transport delivers byte messages between the ranks of one job.
//
// Send returns once the message is handed to the network (it may block under
// flow control); the receiver may take ownership of the payload, so the
// caller must not modify it afterwards. Recv returns the payload of the
// message from rank from with tag, waiting for it if needed. Both respect ctx,
// the transport's timeout, the peer's liveness and the epoch (including an
// epoch bound to ctx with WithEpoch): whatever stops them is reported as an
// error, never a hang.
type Transport interface {
	// Rank is this process's rank, World the number of ranks.
	Rank() int
	World() int
	Send(ctx context.Context, to int, tag Tag, payload []byte) error
	Recv(ctx context.Context, from int, tag Tag) ([]byte, error)
	// Epoch is the current membership epoch; messages are stamped with it.
	Epoch() uint64
	// SetEpoch moves to a newer epoch: every Send and Recv blocked now fails
	// at once with an *EpochError, and messages stamped with an older epoch
	// are dropped from then on. Setting an epoch not greater than the
	// current one is an error.
	SetEpoch(epoch uint64) error
	// Stats returns a copy of the byte counters.
	Stats() Stats
	// Close releases the transport; blocked calls fail with ErrClosed.
	Close() error
}

type epochKey struct{}

// WithEpoch binds the Send and Recv calls made with ctx to epoch: a
// transport refuses such a call with an *EpochError{Have: epoch, Now:
// current} when its epoch is no longer epoch, checked atomically with the
// call's start. A collective binds its calls to the epoch it started in, so
// that a call issued just as SetEpoch runs fails like the calls that were
// already blocked, instead of slipping into the next epoch, where it would
// wait for a message nobody sends or take one meant for the next epoch's
// collectives.
func WithEpoch(ctx context.Context, epoch uint64) context.Context {
	return context.WithValue(ctx, epochKey{}, epoch)
}

// BoundEpoch returns the epoch ctx binds calls to, if WithEpoch set one.
// Transports check it when a Send or Recv starts.
func BoundEpoch(ctx context.Context) (uint64, bool) {
	e, ok := ctx.Value(epochKey{}).(uint64)
	return e, ok
}
