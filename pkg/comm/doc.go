// Package comm moves bytes between the ranks of a job and builds collectives
// on top of them.
//
// # Transports
//
// A Transport delivers tagged byte messages from one rank to another. Two
// implementations exist: the gRPC one (one long-lived bidirectional stream per
// peer, messages cut into chunks well below gRPC's 4 MiB limit) used between
// processes and machines, and MemTransport (NewMemNetwork), which runs any
// number of ranks in one process with the same semantics, for unit tests.
// Messages are matched by (sender, Tag); every message also carries the job
// id and the sender's epoch, and a message from an older epoch is dropped and
// counted. SetEpoch aborts every blocked Send and Recv at once with an
// *EpochError, which is how a membership change stops the collectives in
// flight; a dead peer shows up as a *PeerError naming its rank.
//
// # Collectives
//
// A Group is an ordered set of ranks (the world, or a sub-group such as one
// data-parallel or pipeline group) that runs collectives over a Transport:
// ring all-reduce (reduce-scatter + all-gather) of float32 vectors sent as
// float32 or bf16, ring all-gather of byte payloads of any sizes, pipelined
// chain broadcast and reduce, a dissemination barrier, and point-to-point
// messages with caller-chosen ids. Members call the collectives in the same
// order; each takes the group's next sequence number, which with the group's
// id forms the message tags, so collectives of one group, of different
// groups, and point-to-point traffic never take each other's messages.
// Reductions add in a fixed order that depends only on the group size, so
// results are bitwise identical on every rank and from run to run. Large
// messages are cut into parts of at most MaxPartBytes (1 MiB by default).
//
// # Bytes
//
// Every byte is counted at the transport, per direction and per collective
// kind, with payload and framing kept apart; Stats returns the counters.
// Each collective's doc comment gives the exact bytes and messages it moves
// per rank, and AllReduceCost and AllGatherCost compute them, so benchmarks
// can compare counters with formulas. In short, for W ranks: all-reduce of n
// values of b bytes sends and receives about 2(W-1)/W·n·b per rank;
// all-gather sends and receives (W-1)·T per rank for payloads of T bytes.
//
// Usage:
//
//	g := comm.NewGroup(tr)            // tr: a Transport for this rank
//	err := g.AllReduce(ctx, grads, comm.Mean, comm.WireFloat32)
//	dp, err := comm.NewSubGroup(tr, []int{0, 2}, comm.GroupOptions{})
//	blocks, err := dp.AllGather(ctx, payload)
package comm
