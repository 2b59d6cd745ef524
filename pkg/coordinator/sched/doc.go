// Package sched decides where the ranks of a training job run: a pure
// function of the registered workers and the job's layout, with no I/O, no
// clock and no state of its own.
//
// A job of DP replicas × PP pipeline stages has DP×PP ranks, rank =
// dp*PP + pp. Place assigns each rank a slot on a worker; Replace finds new
// slots for the failed ranks of a running job and leaves the others alone.
// Both return a *CapacityError, whose message is the reason a user sees
// ("needs 8 slots (DP 4 × PP 2), 5 free on 2 workers; 2 more slots are
// reserved as spares"), when the cluster is short, and an error wrapping
// ErrInvalid when the input itself is wrong.
//
// The policy, in the order it weighs things (details on Place and Replace):
// a replica's pipeline stages stay on one worker, else one node (label
// "node"), since every cross-node pipeline edge costs a hop per
// micro-batch; replicas spread over racks, nodes and workers so one lost
// failure domain takes as few replicas as possible; workers marked Spare
// and Cluster.SpareSlots free slots are kept for recovery, which Replace
// uses first. Output depends only on the input's values: workers are
// sorted by name, ties go to the smaller name, and no map order leaks.
//
// How the coordinator drives it: its I/O loop keeps the worker registry
// (from etcd) and the slots held by every live job's assignment. When the
// job state machine (pkg/coordinator/job) returns RequestPlacement or
// RequestReplacement, the loop builds a Cluster from that registry, with
// each worker's Used slots, calls Place or Replace, and feeds the answer
// back as job.Placed or, for a *CapacityError, job.Unplaceable with
// err.Error() as the reason. Whenever a worker joins or leaves or a job
// releases slots, the loop sends waiting jobs job.CapacityChanged and they
// ask again. Nothing here reserves anything: the loop records the
// assignment in etcd with the job, which is what makes the slots Used for
// the next call.
package sched
