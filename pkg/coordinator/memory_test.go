package coordinator_test

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ternml/tern/pkg/coordinator"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// memorySpec is a DP=2 × PP=2 tiny job with in-memory snapshots staged
// every step and sent to peers every other step.
func memorySpec(t *testing.T, name string, steps int, sets ...string) *ternv1.ApplyJobRequest {
	return tinySpec(t, name, append([]string{"parallel.data=2", "parallel.pipeline=2", fmt.Sprintf("steps=%d", steps), "eval.everySteps=0",
		"batch.microBatchSize=2", "snapshot.everySteps=1", "snapshot.peerEverySteps=2", "restartPolicy.maxRestarts=6"}, sets...)...)
}

// losses reads a job's per-step losses (rank 0's reports, every attempt,
// a redone step once per attempt that ran it).
func (c *cluster) losses(name string) map[int64][]float64 {
	c.t.Helper()
	resp, err := c.client.GetJobMetrics(context.Background(), &ternv1.GetJobMetricsRequest{Name: name})
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[int64][]float64{}
	for _, p := range resp.Points {
		out[p.Step] = append(out[p.Step], p.Loss)
	}
	return out
}

// history collects what a watch sees of a job, for the invariants of
// research fault-tolerance.md §9.1.
type history struct {
	snapSteps []int64 // committed snapshot step, as published
}

func (h *history) see(j *ternv1.Job) {
	if n := len(h.snapSteps); n == 0 || h.snapSteps[n-1] != j.SnapshotStep {
		h.snapSteps = append(h.snapSteps, j.SnapshotStep)
	}
}

// A DP=2 × PP=2 job on worker processes loses a worker three times to
// SIGKILL, and a fourth time to SIGSTOP (continued once the job moved on).
// Each time the coordinator relaunches it from the committed in-memory
// snapshot: ranks whose workers survived restore their local
// copies, the killed worker's rank is rebuilt on a fresh worker from its
// peers' fragments, and nothing is read from disk (the job has no
// checkpoint directory). The run ends with the same loss at every step,
// bit for bit, and the same final weights as an uninterrupted run; the
// invariants of research fault-tolerance.md §9.1 hold over the run.
func TestKilledWorkersRestoreFromMemory(t *testing.T) {
	c := startClusterWith(t, coordinator.Options{HeartbeatInterval: 200 * time.Millisecond, LeaseTTL: time.Second})
	ctx := context.Background()
	procs := map[string]*exec.Cmd{}
	next := 0
	spawn := func() {
		next++
		name := fmt.Sprintf("p%d", next)
		procs[name] = c.startWorkerProcess(name)
	}
	for range 4 {
		spawn()
	}
	c.waitWorkers(4)
	const steps = 44

	// The reference: the same spec, uninterrupted, on the same workers.
	if _, err := c.client.ApplyJob(ctx, memorySpec(t, "steady", steps)); err != nil {
		t.Fatal(err)
	}
	ref := c.watch("steady", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if ref.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED || ref.SnapshotStep < 2 {
		t.Fatalf("uninterrupted run: %s (%s), snapshot step %d", ref.Phase, ref.Reason, ref.SnapshotStep)
	}

	if _, err := c.client.ApplyJob(ctx, memorySpec(t, "chaos", steps)); err != nil {
		t.Fatal(err)
	}
	h := &history{}
	const faults = 4 // three SIGKILLs, then a SIGSTOP past the lease
	for kill := 1; kill <= faults; kill++ {
		// Strike once a snapshot of this attempt has committed and the
		// ranks trained past it, so that steps are lost and redone.
		var victim string
		c.watch("chaos", fmt.Sprintf("attempt %d past a committed snapshot", kill), func(j *ternv1.Job) bool {
			h.see(j)
			if int(j.Attempt) != kill || j.Phase != ternv1.JobPhase_JOB_PHASE_RUNNING || len(j.Ranks) != 4 {
				return false
			}
			start := int64(0)
			if a := j.Attempts; len(a) > 0 {
				start = a[len(a)-1].StartStep
			}
			if j.SnapshotStep < start+2 || j.CommittedStep <= j.SnapshotStep {
				return false
			}
			victim = j.Ranks[kill%4].Worker
			return true
		})
		spawn()
		c.waitWorkers(5)
		sig := syscall.SIGKILL
		if kill == faults {
			sig = syscall.SIGSTOP
		}
		if err := procs[victim].Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		c.watch("chaos", fmt.Sprintf("recovery %d", kill), func(j *ternv1.Job) bool {
			h.see(j)
			return int(j.Attempt) > kill
		})
		if sig == syscall.SIGSTOP {
			// Woken up after the job moved on without it, the worker
			// finds its registration gone and its rank's peers on a
			// newer attempt: it registers again, and nothing it does
			// reaches the job (the losses below show it).
			if err := procs[victim].Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			c.waitWorkers(5)
		} else {
			c.waitWorkers(4)
		}
	}
	done := c.watch("chaos", "its end", func(j *ternv1.Job) bool { h.see(j); return coordinator.Terminal(j.Phase) })
	if done.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED || done.Attempt != faults+1 || done.Restarts != faults {
		t.Fatalf("job ended %s in attempt %d after %d restarts: %s\nevents: %v", done.Phase, done.Attempt, done.Restarts, done.Reason, done.Events)
	}

	// Restored from memory, never from disk; at least one rank from its
	// peers' fragments.
	peers := 0
	byAttempt := map[int32][]*ternv1.RankRestore{}
	for _, r := range done.Restores {
		switch r.Source {
		case "peers":
			peers++
		case "local":
		default:
			t.Errorf("rank %d of attempt %d restored from %q, want local or peers", r.Rank, r.Attempt, r.Source)
		}
		byAttempt[r.Attempt] = append(byAttempt[r.Attempt], r)
	}
	if peers == 0 {
		t.Errorf("no rank restored from peers: %v", done.Restores)
	}
	for _, ev := range done.Events {
		if ev.Reason == "SnapshotUnrecoverable" || ev.Reason == "RestoreFromCheckpoint" {
			t.Errorf("event %s: %s", ev.Reason, ev.Message)
		}
	}
	if n := countEvents(done, "TrainingResumed"); n != faults {
		t.Errorf("%d TrainingResumed events, want %d: %v", n, faults, done.Events)
	}

	// The determinism contract: every step's loss, redone steps
	// included, and the final weights equal the uninterrupted run's.
	want, got := c.losses("steady"), c.losses("chaos")
	for s := int64(1); s <= steps; s++ {
		if len(want[s]) != 1 || len(got[s]) == 0 {
			t.Fatalf("step %d: %d reference losses, %d losses of the interrupted run", s, len(want[s]), len(got[s]))
		}
		for _, l := range got[s] {
			if math.Float64bits(l) != math.Float64bits(want[s][0]) {
				t.Errorf("step %d: loss %v, uninterrupted %v", s, l, want[s][0])
			}
		}
	}
	if a, b := done.Summary.GetWeightsCrc32C(), ref.Summary.GetWeightsCrc32C(); a != b || a == 0 {
		t.Errorf("final weights CRC32C %08x, uninterrupted %08x", a, b)
	}

	// Invariants (research §9.1). 1: the committed snapshot step never
	// goes back.
	if !slices.IsSorted(h.snapSteps) {
		t.Errorf("committed snapshot step went back: %v", h.snapSteps)
	}
	// 2-4: every recovery restores, on every rank, one step that had been
	// committed; its ranks start from it, and the job went on from there.
	for _, a := range done.Attempts[1:] {
		rs := byAttempt[a.Attempt]
		if len(rs) != 4 {
			t.Fatalf("attempt %d: %d ranks restored, want 4: %v", a.Attempt, len(rs), rs)
		}
		for _, r := range rs {
			if r.Step != rs[0].Step || r.Step != a.StartStep {
				t.Errorf("attempt %d: rank %d restored step %d, rank 0 step %d, the attempt started at %d", a.Attempt, r.Rank, r.Step, rs[0].Step, a.StartStep)
			}
		}
		if !slices.Contains(h.snapSteps, rs[0].Step) {
			t.Errorf("attempt %d restored step %d, which was never seen committed (%v)", a.Attempt, rs[0].Step, h.snapSteps)
		}
	}
	// 5 (no sample skipped or repeated) follows from the equal losses;
	// 6 (liveness): the job succeeded.
}

// Losing more workers at once than spec.snapshot.tolerate covers leaves a
// rank without its local copy or enough fragments: the recovery says so
// and every rank resumes from the durable checkpoint instead.
func TestTooManyLostWorkersFallBackToCheckpoint(t *testing.T) {
	c := startClusterWith(t, coordinator.Options{HeartbeatInterval: 200 * time.Millisecond, LeaseTTL: time.Second})
	ctx := context.Background()
	a, b := c.startWorkerProcess("a"), c.startWorkerProcess("b")
	c.waitWorkers(2)
	ckpt := t.TempDir()
	req := tinySpec(t, "fallback", "parallel.data=2", "batch.microBatchSize=2", "steps=30", "eval.everySteps=0", "snapshot.everySteps=1", "snapshot.peerEverySteps=2",
		"snapshot.tolerate=1", "checkpoint.dir="+ckpt, "checkpoint.everySteps=4", "restartPolicy.maxRestarts=4")
	if _, err := c.client.ApplyJob(ctx, req); err != nil {
		t.Fatal(err)
	}
	c.watch("fallback", "a committed snapshot and checkpoint", func(j *ternv1.Job) bool { return j.SnapshotStep >= 4 && j.CommittedStep >= 9 })
	c.startWorkerProcess("c")
	c.startWorkerProcess("d")
	c.waitWorkers(4)
	for _, p := range []*exec.Cmd{a, b} {
		if err := p.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	done := c.watch("fallback", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if done.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED {
		t.Fatalf("job ended %s: %s", done.Phase, done.Reason)
	}
	if countEvents(done, "SnapshotUnrecoverable") == 0 {
		t.Fatalf("no SnapshotUnrecoverable event: %v", done.Events)
	}
	// The two workers' losses may be seen one lease apart, and the first
	// recovery then restores from memory what the second worker still
	// held; the attempt that finished resumed from the checkpoint.
	last := done.Attempts[len(done.Attempts)-1]
	n := 0
	for _, r := range done.Restores {
		if r.Attempt == last.Attempt {
			n++
			if r.Source != "checkpoint" {
				t.Errorf("rank %d of attempt %d restored from %q, want checkpoint", r.Rank, r.Attempt, r.Source)
			}
		}
	}
	if n != 2 {
		t.Errorf("%d ranks of attempt %d restored, want 2: %v", n, last.Attempt, done.Restores)
	}
	if got := texts(c.logs(&ternv1.GetLogsRequest{Name: "fallback", Attempt: last.Attempt})); !strings.Contains(got, "resumes from checkpoint "+ckpt) {
		t.Fatalf("log of attempt %d:\n%s", last.Attempt, got)
	}
}

func countEvents(j *ternv1.Job, reason string) int {
	n := 0
	for _, ev := range j.Events {
		if ev.Reason == reason {
			n++
		}
	}
	return n
}
