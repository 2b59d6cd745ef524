// Package coordinator is tern's control-plane server: it keeps jobs and
// the worker registry in etcd, places each job's ranks on registered
// workers, and drives every job's lifecycle (pkg/coordinator/job) from the
// workers' reports until the job ends.
//
// # Running one
//
//	c, err := coordinator.New(coordinator.Options{DataDir: dir})  // binds 127.0.0.1:7070
//	err = c.Run(ctx)                                               // until ctx ends
//
// Run starts an embedded etcd member in DataDir/etcd (or connects to
// Options.EtcdEndpoints), serves the CoordinatorService of
// proto/tern/v1/coordinator.proto at once, campaigns for leadership
// (store.Campaign) and, once it leads, restores every job from etcd and
// runs the loop. A coordinator standing by answers UNAVAILABLE, naming the
// leader. Serving other machines needs Options.Auth with TLS and the
// cluster's join token (pkg/auth), checked on every call; without it only
// loopback listen addresses are accepted.
//
// # Shape
//
// Pure cores, I/O at the edges: the job state machine and the scheduler
// (pkg/coordinator/sched) decide; this package carries out. One goroutine,
// the loop (loop.go), owns every job's state, the worker registry and the
// workers' sessions. Everything reaches it as an input on one channel:
// RPCs (apply, cancel, delete, register, a session attaching), worker
// reports, registry changes from an etcd watch, expired timers. For each
// input it steps the job machines and carries out their actions:
//
//	Persist             one fenced etcd transaction: the job record, and a
//	                    new attempt's record (token, placement) with it
//	RequestPlacement    sched.Place over the registry → Placed/Unplaceable
//	Launch              StartRank to every rank's worker session
//	StopRanks           StopRanks to the attempt's workers
//	StartTimer, Emit    a timer that posts TimerFired; the job's event log
//
// and derives the events the reports add up to (rank.go): every rank
// started → RanksStarted; a step every rank completed → committed in etcd,
// then StepCommitted; every rank finished → Finished; a rank failed or
// stopped early → RankFailed. A worker lost (below) → WorkerLost. Reads (GetJob, ListJobs, WatchJob, ListWorkers)
// never wait for the loop: it publishes immutable status messages after
// every change (views.go). Errors become gRPC codes in one place,
// statusOf.
//
// # Workers and peers
//
// A worker registers (name, host, slots, labels) and gets a session id;
// its registration is an etcd key on a lease the coordinator renews on
// each heartbeat of the worker's Session stream. The leader does not wait
// for etcd to notice a worker gone: it notes when each attached worker
// last sent anything, and one silent for Options.MissWindow (3 heartbeat
// intervals, 3 s by default) is lost, its registration deleted and lease
// revoked in one fenced step so that etcd agrees (loop.go checks six
// times per window; a loop that fell behind counts silence only from when
// it caught up). A Session stream that breaks under it (the worker's
// connection reset, as when its process dies) loses the worker at once;
// one the worker closes (io.EOF) does not. Workers not attached to this
// leader, as after a restart or a failover until they reattach, are left
// to their lease (Options.LeaseTTL, 5 s), which is also the backstop when
// the leader itself is gone. Each renewal is acknowledged on the stream
// (SessionAccepted): that is how the worker knows it is still in contact,
// and it stops its ranks after a lease without. A standby takes over
// within the leader's session TTL (2 s with external etcd), well inside
// the workers' lease, and a coordinator restarted on its embedded etcd
// ends its dead predecessor's session at once. Ranks choose their ports when they start:
// StartRank names the host to bind (port 0), each rank reports the
// address it bound, and when every rank of an attempt has reported, the
// full peer list goes to each of the attempt's workers. Orders and reports
// are idempotent and carry their job and attempt: after a reconnect, or
// after a new leader restored the jobs, the coordinator re-sends the
// orders for the ranks placed on the worker, the worker replays its
// ranks' latest reports, and a report about an attempt the job no longer
// runs is answered with StopRanks (which is also how a worker learns it
// may forget a finished rank).
//
// # Restarts, pause and resume
//
// A job's restart budget is spec.restartPolicy.maxRestarts (default 3).
// A rank that fails (an error, a worker shut down mid-job, a worker lost
// because its lease lapsed, e.g. after SIGKILL) makes the job Recovering:
// the failed ranks are placed again, away from the workers they failed
// on (unless such a worker is back as a new process: restarted by its
// node's supervisor, it may take its rank back, as a spare would), and
// every rank is launched as the next attempt (same job, attempt number
// + 1), which restores the committed in-memory snapshot (below)
// or, when that is lost, resumes from the latest complete checkpoint in
// spec.checkpoint.dir, or from step 0 when the job has no checkpoint
// directory or none was written; the worker logs which. A rank that
// fails only because its transport lost a peer (a worker killed, paused)
// is not blamed at once: its failure waits up to three lease TTLs for
// the cause to show (the lost worker), so that it stays on its worker,
// next to its local snapshot. The restart count is in the job record in
// etcd; with none left the job fails, its reason naming the last
// failure.
//
// With restartPolicy.shrink (it needs spec.checkpoint.dir), a recovery
// whose replacements are not placed within shrinkTimeoutSeconds drops
// every replica that lost a rank and continues at the largest smaller
// data-parallel size (at least minData) that divides the global batch
// (Shrunk event: "shrunk from DP a to b (reason)"); each capacity change
// then asks the scheduler for the missing replicas (sched.Grow), and once
// they are placed every rank moves to the spec's size (Grown event:
// "grew back to DP a"). An attempt on another size runs the spec with
// parallel.data set to it and batch.microBatches scaled so the global
// batch stays, and resumes from the durable checkpoint, which the ranks
// reshard (shrink.go): in-memory snapshots restore only on the layout
// that took them. A shrunk run is reproducible given the same sequence
// of layouts; across layouts a step agrees up to float32 summation order.
//
// # In-memory snapshots
//
// With spec.snapshot (on by default: a local copy every step, peers every
// 10 steps, tolerate 1) every launch places each rank's Reed-Solomon
// fragments on the attempt's other workers (snapshot.Place, distinct
// racks and nodes where the workers' labels say so) and sends each rank
// its plan in StartRank. Ranks report each staged peer snapshot with its
// fragment CRCs (RankSnapshot); a snapshot.Tracker commits step s once
// every rank reported it, writing s and the compact manifest (plus the
// worker each local copy lives on) in one leader-fenced etcd transaction
// (store.Leader.CommitSnapshot, key snapshots/JOB), and then tells the
// workers to free older generations (SnapshotCommitted). On a recovery
// (snapshots.go) the coordinator checks, before launching, that every
// rank can find the committed step: its local copy on its worker, still
// registered as when the step committed, or k fragments on live workers
// of the new attempt; then each rank restores it (RestoreFromMemory
// event) and all continue from committed step + 1. If any rank cannot,
// every rank falls back to the durable checkpoint (SnapshotUnrecoverable
// event). Only committed steps are ever restored. TrainingResumed says
// how long the recovery took and how many steps were redone; the job
// status carries snapshot_step and each rank's restore source. PauseJob stops the ranks
// (each after its current step, writing a checkpoint when the job has a
// directory) and frees the slots without counting a restart; ResumeJob
// places the job again, and its next attempt resumes the same way. A
// placement after a pause waits (up to 30 s, hold.go) until the paused
// attempt's ranks on workers that are still up have reported their end,
// so that a rank placed on another worker finds the checkpoint they
// wrote; ranks placed on the same worker wait for them there.
//
// # Logs and metrics
//
// Workers ship each rank's lines (its messages and one line per step),
// numbered per rank, over the Session stream; the receiving handler
// appends them to DataDir/logs/JOB/ATTEMPT/RANK.log (Options.LogDir)
// without going through the loop, dropping numbers already stored, so a
// worker's replay after a reconnect stores nothing twice. GetLogs serves
// them by attempt and rank, with tail and since, merged in time order;
// with follow it sends new lines until the attempt ends. The loop appends
// rank 0's step reports to DataDir/logs/JOB/metrics.jsonl, which
// GetJobMetrics serves (ternctl top plots it). Both survive a coordinator
// restart; deleting the job deletes them. They stay on the coordinator
// that received them: after a failover the new leader serves what reaches
// it from then on.
//
// # What describe shows
//
// Next to the state machine's record, each job's etcd value carries the
// coordinator's metadata (meta.go): when the job was applied, first ran
// and ended, every attempt's span, start step and outcome, when the last
// failure happened, and the last 64 events. It is written with the record
// (events included: they are noted before the Persist action is carried
// out), so describe shows the same after a coordinator restart.
//
// # Limits of this release
//
// A pause and resume relaunch from the durable checkpoint, not from the
// in-memory snapshots (the ranks write a checkpoint as they stop). Only
// peer-committed snapshots are restore points: a local copy staged
// between two peer snapshots does not help a recovery yet. The state
// machine's messages name the last step every rank completed;
// describe's attempts show the step each attempt actually started from.
// Log and metrics files grow with the job and are removed only with it.
package coordinator
