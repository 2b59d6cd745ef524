// Package localcluster runs a whole tern cluster on one machine as real
// processes: a coordinator (with its embedded etcd) and N worker agents,
// watched over by a supervisor that restarts any of them that dies, the
// way a node manager (systemd, a kubelet) would on real machines. It is
// what `ternctl up` and `ternctl down` are made of.
//
// # Processes
//
//	ternctl up ──starts──▶ supervisor (own session, detached)
//	                         ├── coordinator --listen ADDR --data-dir DIR/coordinator
//	                         ├── worker --coordinator ADDR --name worker-1 --slots S
//	                         ├── ...
//	                         └── worker --coordinator ADDR --name spare-1 ... (--spares)
//
// Up writes what it was asked for to DIR/spec.json and starts the
// supervisor, which locks DIR/lock for as long as it lives (the lock, not
// a pid, is what says a cluster is up: it cannot outlive its holder),
// starts the coordinator and the workers as its children, each in its own
// process group with stdout and stderr appended to DIR/logs/NAME.log, and
// keeps DIR/state.json current: every process's pid, start time, restarts
// and last exit. Up returns once every worker has registered with the
// coordinator; the cluster keeps running after it.
//
// A child that exits while the cluster is up is started again (unless
// Spec.NoRestart) after a backoff that doubles from RestartBackoffMin to
// RestartBackoffMax while it keeps dying soon after starting, and resets
// once it has stayed up for RestartResetAfter. A worker comes back under
// its old name, so the coordinator sees the same worker re-register.
//
// Down sends SIGTERM to the supervisor, which stops the workers (each
// drains its ranks: they stop after their current step and report), then
// the coordinator, each with SIGKILL after Spec.Grace, removes state.json
// and exits. Whatever a supervisor killed with SIGKILL left behind, Down
// stops itself from state.json, checking each pid's start time so that a
// reused pid is never signalled. Down removes the coordinator's data and
// keeps the logs unless asked to purge them.
//
// Everything here is Linux- and macOS-style POSIX: setsid, process
// groups, flock. Process start times come from /proc where it exists.
package localcluster
