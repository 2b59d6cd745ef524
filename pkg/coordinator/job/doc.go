// Package job is the lifecycle of one training job as a pure state
// machine: no I/O, no goroutines, no clock. The coordinator's I/O loop
// feeds it events and carries out the actions it returns, the shape of
// etcd raft's RawNode (research/ux-and-style.md B.2).
//
// # Phases
//
//	from                      event                           to
//	Pending                   placed                          Scheduling
//	Pending                   unplaceable                     Pending, with the reason
//	Scheduling                ranks started                   Running
//	Scheduling, Running       rank failed, worker lost        Recovering (placing), or Failed
//	Scheduling                start timer                     Pending (whole job), or Failed
//	Recovering (placing)      placed                          Recovering (restoring)
//	Recovering (placing)      rank failed, worker lost        Recovering (placing), same restart
//	Recovering (placing)      recovery timer                  Pending (whole job)
//	Recovering (placing)      shrink timer (shrink on)        Recovering (restoring), at a smaller DP
//	Recovering (restoring)    recovery done                   Running
//	Running, shrunk           capacity changed, then placed   Recovering (restoring), at the spec's DP
//	Recovering (restoring)    rank failed, worker lost        Recovering (placing), or Failed
//	Recovering (restoring)    recovery timer                  Pending (whole job), or Failed
//	Running                   finished                        Succeeded
//	any but Paused            pause                           Paused
//	Paused                    resume                          Pending
//	any                       cancel                          Cancelled
//
// ("any" excludes the terminal phases Succeeded, Failed and Cancelled,
// which accept no events.)
//
// Pending waits for slots, with the scheduler's reason ("needs 8 slots (DP 4
// × PP 2), 5 free on 2 workers; ..."). Scheduling launches an attempt.
// Recovering replaces failed ranks while the survivors keep their state,
// then every rank restores the last committed step under a new attempt
// number. If replacements cannot be placed, or ranks do not start or
// restore before their deadline, every rank is stopped and the whole job
// goes back to Pending to be placed afresh. Paused stops the ranks and
// frees the slots; resume places the job again and continues from the
// committed step. Every transition sets Reason, a sentence `ternctl
// describe` shows, and emits an Emit action for the job's event log.
//
// With restartPolicy.shrink (Spec.Shrink), a recovery whose replacements
// are not placed before the shrink timer drops every replica that lost a
// rank and continues with the others from the committed step; the job
// grows back to its spec's DP once the scheduler places the missing
// replicas (shrink.go).
//
// Attempts are numbered from 1 and every launch (first start, recovery,
// relaunch after a pause or a timeout) takes the next number; reports name
// their attempt, so one from an attempt already replaced is rejected as
// stale. Each failure that needs a new attempt counts one restart against
// restartPolicy.maxRestarts; when none is left the job fails with a reason
// that says so ("no restarts left (2 of 2 used, ...)"). Ranks that fail
// while replacements are still being placed join that recovery at no
// further cost. Nothing resets the count.
//
// # Driving it
//
// The coordinator's I/O loop (one goroutine per coordinator, owning every
// job's state) does roughly this:
//
//	j, acts, err := job.New(spec)          // on apply; or job.Restore(record) on start-up,
//	                                       // followed by j.Reconcile()
//	for ev := range events {               // worker reports, etcd watches, user RPCs,
//		acts, err := j.Step(ev)        // scheduler answers, expired timers
//		switch {
//		case errors.Is(err, job.ErrStale), errors.Is(err, job.ErrFinished):
//			continue               // expected races; log at debug level
//		case err != nil:
//			log(err); continue     // a confused caller; the job is unchanged
//		}
//		for _, a := range acts {
//			switch a := a.(type) {
//			case job.Persist:            // put the JSON record in etcd, fenced by
//			                             // the leader's revision; stop if it fails
//			case job.RequestPlacement:   // sched.Place → feed Placed or Unplaceable
//			case job.RequestReplacement: // sched.Replace → likewise
//			case job.RequestGrowth:      // sched.Grow → likewise
//			case job.Launch, job.StartRecovery, job.AbortAttempt, job.StopRanks:
//			                             // push to the workers' heartbeat streams
//			case job.StartTimer:         // time.AfterFunc → feed TimerFired
//			case job.Emit:               // append to the job's event log
//			}
//		}
//	}
//
// Persist comes first in every list that changes the record, so etcd is
// never behind what workers were told. A coordinator that dies after the
// write but before the rest restores the record, and Reconcile returns
// what its phase needs re-sent; every action is idempotent for that reason.
// The loop also tells waiting jobs CapacityChanged when workers join or
// leave or slots free up, turns a worker's lost lease into WorkerLost, and
// commits steps in etcd before feeding StepCommitted.
//
// # Tests
//
// Scenarios live in testdata/*.txt as scripts of commands and their
// expected output (state and actions), replayed deterministically; every
// script is also replayed with the record encoded and restored after each
// command, as a coordinator restart would. Regenerate the expected output
// with `go test ./pkg/coordinator/job -rewrite` and read the diff.
package job
