// Package worker is the worker agent: it registers a machine's slots with
// the coordinator, keeps a Session stream open to it, and runs the ranks
// the coordinator assigns.
//
//	a, err := worker.New(worker.Config{Coordinator: "127.0.0.1:7070", Name: "w1", Slots: 2})
//	err = a.Run(ctx) // until ctx ends; then drains
//
// # A rank's life
//
// StartRank arrives with the job's resolved spec, the rank, the world
// size, the attempt's token and the address to bind (host:0). The agent
// binds through pkg/launch (ListenRank), reports the bound address, waits
// for the peer list the coordinator sends once every rank of the attempt
// has reported, connects and trains (Rank.Run, that is train.Run with the
// peers as its group), forwarding each step's report, then the summary or
// the error. StopRanks stops a rank after its current step (train.Run's
// cancellation: the replicas agree on where to stop).
//
// A rank of a relaunched attempt (attempt > 1: a restart after a failure,
// or a resume after a pause) first waits for the ranks of earlier
// attempts of the job on this worker to end (closing their endpoints, so
// one blocked on a paused peer ends at once), so that a checkpoint they
// write as they stop is complete. Once connected to its peers it restores
// what StartRank's snapshot plan says (below), or resumes from the latest
// complete checkpoint in spec.checkpoint.dir, or starts from step 0 when
// there is none. A first attempt always starts afresh.
//
// # In-memory snapshots
//
// The agent outlives attempts, and so do its jobs' snapshots
// (snapshots.go): per job, each rank's snapshot.Stager (its local copies,
// staged every spec.snapshot.everySteps by train's Snapshotter hook) and
// one snapshot.Holder with the fragments this worker holds for other
// ranks. Every peerEverySteps a rank's stager encodes its copy and sends
// the fragments, over the attempt's own transport (comm.KindSnapshot,
// served by a snapshot.PeerService around the holder), to the ranks the
// plan names, and reports the outcome (RankSnapshot). SnapshotCommitted
// frees older generations, or drops an abandoned one. A relaunched rank
// told to restore step s takes its worker's local copy of s when it has
// it, else fetches k fragments from the holders at once (hash-checked,
// decoded) and keeps the result as its local copy; it reports where the
// state came from and how long that took in RankStarted. The snapshots
// go when the coordinator says the job is over (StopRanks.forget).
//
// # Logs
//
// Each rank's messages (the training loop's, its start, resume decision
// and end) and one line per step go to the coordinator as RankLogs,
// numbered per rank; the agent keeps each rank's last 2000 lines and
// sends them again at the start of every session, and the coordinator
// stores each number once.
//
// # Sessions
//
// Everything a rank reports is also kept as its latest state (address,
// started, last step, end), and a new session starts by replaying it, so
// nothing is lost while the coordinator restarts: the agent reconnects
// with backoff under the same registration and carries on. A coordinator
// that no longer knows the session (the registration expired, or a new
// one replaced it) answers FAILED_PRECONDITION; the agent then registers
// again, first stopping its ranks, which the coordinator has counted as
// lost. Likewise the agent stops its ranks itself once it has had no
// contact for longer than the registration's lease: past that, the
// coordinator has given them up, and they must not go on acting alone.
//
// # Shutdown
//
// When Run's ctx ends (SIGTERM), the agent refuses new ranks (the
// coordinator may place some before the registration lapses), stops every
// rank after its current step, waits up to Config.DrainTimeout for them, sends their last
// reports and closes the session, so the coordinator learns why they
// ended rather than waiting for the lease to lapse.
package worker
