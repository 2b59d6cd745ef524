// Package store keeps the coordinator's durable state in etcd: jobs, their
// attempts, rank assignments and committed steps, the worker registry, and
// which coordinator leads.
//
// # Servers
//
// StartEmbedded runs a single etcd member inside the coordinator with its
// data in the coordinator's data directory, on free loopback ports (etcd
// cannot listen on port 0, so ports are chosen by binding port 0 and
// releasing it, and chosen again if another process takes one first; a
// reopened directory first tries the URLs it used last time). It logs to
// DIR/etcd.log unless told otherwise. Open connects a Store to those
// endpoints or to an external cluster (three or five members for a
// coordinator that must survive losing a machine: an embedded member dies
// with its process).
//
// # Key layout
//
// Every key sits under a prefix (default "/tern/"):
//
//	jobs/NAME                  job record: {"v":1,"spec":…,"state":…}
//	attempts/NAME/0000000003   attempt 3 of job NAME (ten digits, so key
//	                           order is numeric order)
//	assignments/NAME           current placement of NAME's ranks
//	committed/NAME             {"v":1,"step":N,"manifest":…}
//	workers/WORKER             worker info, attached to the worker's lease
//	leader/LEASE-ID            one key per candidate coordinator; the
//	                           earliest created is the leader
//
// Spec, state, attempts, assignments, manifests and worker info are the
// caller's bytes, stored unchanged (inside a small versioned JSON envelope
// for jobs and commits). A job's sub-records live in their own subtrees
// rather than under jobs/NAME/ so that listing or watching jobs/ returns
// job records only, not every attempt and every committed step. Deleting a
// job deletes its sub-records in the same transaction.
//
// Names are letters, digits, '.', '_' and '-', start and end with a letter
// or digit, and are at most 253 characters: no '/', so no name can reach
// into another's keys. (The job spec restricts job names further.)
//
// # Versions
//
// Each record carries its etcd Revision, the revision that last wrote it.
// Updates name the revision they were computed from and fail with
// ErrConflict if the record moved on, so two decisions made from the same
// old state cannot both land. The committed step only moves forward
// (ErrStaleStep); committing the same step and manifest again is a no-op,
// so a commit whose reply was lost can be retried.
//
// # Fencing
//
// Reads are methods of Store. Writes are methods of Leader, which only
// Campaign returns: the coordinator that wins the etcd election
// (go.etcd.io/etcd/client/v3/concurrency) gets the create revision of its
// election key as its fence, and every write it makes is one transaction
// guarded by
//
//	If(Compare(CreateRevision(leaderKey), "=", fence))
//
// The key disappears when the leader resigns or its session lease expires,
// and a successor's key has a different name and a later create revision,
// so a deposed leader's writes (say, one that was paused past its TTL)
// fail with ErrNotLeader and change nothing. Leadership alone is advisory;
// this compare is what makes it safe. Fences grow with every leadership,
// so workers can also refuse orders carrying a fence older than one they
// have seen. A standby blocks in Campaign and takes over when the leader
// resigns (at once) or dies (after Options.LeaderTTL, default 5 s).
//
// Batch groups writes into one transaction with their preconditions: all
// apply or none. When it fails the same transaction reads back the leader
// key and every guarded key, so the error names the failed condition
// (ErrNotLeader first, then ErrNotFound, ErrExists or ErrConflict).
//
// # Workers
//
// A worker's key is attached to an etcd lease: it exists while the lease is
// renewed, by Refresh on each heartbeat or by KeepAlive, and etcd deletes
// it one TTL after renewals stop, which WatchWorkers reports as a delete.
// A new leader takes over renewing its predecessor's leases with
// Store.WorkerLease; a lease that ran out meanwhile means the worker
// registers again.
//
// # Watches
//
// ListJobs and ListWorkers return the revision they read at; WatchJobs and
// WatchWorkers from that revision deliver every later change in order, so
// nothing falls between the list and the watch. A watch ends with
// ErrCompacted if etcd has compacted that revision away (list again), and
// fails rather than going silent if its member loses the raft leader.
// Every goroutine started here is owned by the ctx passed in.
//
// # Limits
//
//   - One value (spec, state, attempt, assignment, manifest, worker info):
//     Options.MaxValueBytes, default 256 KiB, at most 1 MiB; larger values
//     fail with ErrTooLarge before anything is sent. etcd holds metadata,
//     never tensors.
//   - One transaction: at most 1.5 MiB minus 64 KiB of keys and values
//     (etcd's default request limit is 1.5 MiB) and 128 writes and 128
//     conditions (etcd's default MaxTxnOps): ErrTooLarge otherwise.
//   - Lease TTLs are whole seconds; etcd raises anything under its minimum
//     of 1.5 election timeouts (2 s with default timings).
//   - The embedded member auto-compacts history older than an hour by
//     default, so a watcher may resume from any revision of the last hour.
//   - Lists read a whole prefix in one response: fine for thousands of jobs
//     and workers, not for millions.
package store
