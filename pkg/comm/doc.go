// Package comm moves bytes between the ranks of a job and builds collectives
// on top of them.
//
// A Transport delivers tagged byte messages from one rank to another. Two
// implementations exist: the gRPC one (one long-lived bidirectional stream per
// peer, messages cut into chunks well below gRPC's 4 MiB limit) used between
// processes and machines, and an in-memory one for unit tests. Messages are
// matched by (sender, Tag); every message also carries the job id and the
// sender's epoch, and a message from an older epoch is dropped and counted.
// SetEpoch aborts every blocked Send and Recv at once with an *EpochError, which
// is how a membership change stops the collectives in flight.
//
// Collectives (ring all-reduce as reduce-scatter + all-gather, all-gather with
// variable sizes, broadcast, reduce, barrier, point-to-point) are written
// against Transport alone. Their reduction order is fixed, so results are
// bitwise identical from run to run. Every byte is counted at the transport,
// per peer direction and per collective kind, with payload and framing kept
// apart; Stats returns the counters.
//
// Usage:
//
//	g := comm.NewGroup(tr)            // tr: a Transport for this rank
//	err := g.AllReduce(ctx, grads, comm.Mean, comm.WireFloat32)
package comm
