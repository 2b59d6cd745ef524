// Package launch runs a data-parallel job as several worker processes on
// this machine, the way `torchrun --standalone --nproc-per-node N` does.
//
// The parent (Run, called by `ternctl train` when spec.parallel.data > 1)
// re-executes its own binary once per rank. Parent and children speak JSON
// lines over the children's stdin and stdout:
//
//	parent -> child  {"config": {...}}             job, rank, world, job token
//	child  -> parent {"listening": "127.0.0.1:N"}  its peer address
//	parent -> child  {"peers": ["...", ...]}       every rank's address
//	child  -> parent {"started"|"step"|"log"|"summary"|"error": ...}
//	parent -> child  {"stop": true}                finish the step, checkpoint, exit
//
// The children connect to each other directly (pkg/comm over gRPC); the
// parent only relays their reports into one progress line, --metrics-out
// and summary. A child's stdin reaching EOF (the parent died) stops it like
// a stop message, so no rank outlives its launcher for more than a step.
// When a child dies, the parent stops the others and reports the rank and
// its exit status.
//
// Child is the child side; RunRank runs one rank with an explicit peer list
// (the worker command, for runs across machines without a coordinator).
// ListenRank and Rank.Run are RunRank's two phases, for a control plane
// whose ranks choose their ports when they start: bind, report Addr, and
// run once every rank's address is known (pkg/worker does this).
package launch
