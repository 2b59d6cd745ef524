package store

import "errors"

// Errors callers branch on with errors.Is. Every error returned by this
// package wraps one of them or an etcd client error, with the key or value in
// question named in the message.
var (
	// ErrNotLeader is returned by a write whose fence no longer matches the
	// leader key: this coordinator resigned, lost its session, or was
	// replaced. Nothing of the write was applied. The coordinator must stop
	// acting as leader; campaigning again yields a new fence.
	ErrNotLeader = errors.New("not the leader: leadership was lost, so the write was refused")
	// ErrNoLeader is returned when no coordinator holds leadership.
	ErrNoLeader = errors.New("no leader elected")
	// ErrNotFound is returned for a key that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned when creating something that already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict is returned by a conditional write when the record changed
	// after the revision the caller read: read it again and redo the change.
	ErrConflict = errors.New("changed since it was read")
	// ErrTooLarge is returned for a value or a transaction over the size
	// limits (see Options.MaxValueBytes).
	ErrTooLarge = errors.New("too large for etcd")
	// ErrInvalid is returned for a malformed name, number or option.
	ErrInvalid = errors.New("invalid argument")
	// ErrLeaseExpired is returned when a worker's lease is gone: it expired
	// or was revoked, and the worker's key with it.
	ErrLeaseExpired = errors.New("lease expired")
	// ErrCompacted ends a watch whose start revision etcd has compacted away:
	// list again and watch from the new revision.
	ErrCompacted = errors.New("watch revision compacted")
	// ErrStaleStep is returned when committing a step that is not newer than
	// the committed one.
	ErrStaleStep = errors.New("step is not newer than the committed step")
)
