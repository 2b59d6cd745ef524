package coordinator_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ternml/tern/pkg/coordinator"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/worker"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// workerProcessEnv makes the test binary a worker agent ("ADDR NAME"), so
// tests can kill a real worker process.
const workerProcessEnv = "TERN_TEST_WORKER_PROCESS"

func workerProcess(v string) int {
	addr, name, _ := strings.Cut(v, " ")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	a, err := worker.New(worker.Config{Coordinator: addr, Name: name, Slots: 1})
	if err == nil {
		err = a.Run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startWorkerProcess runs a worker agent in a process of its own.
func (c *cluster) startWorkerProcess(name string) *exec.Cmd {
	c.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), workerProcessEnv+"="+c.addr+" "+name)
	cmd.Stderr = &testWriter{t: c.t}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	c.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		waitStopped(c.t, done)
	})
	return cmd
}

// A worker process killed with SIGKILL mid-job is declared lost when its
// lease lapses; the job becomes Recovering, relaunches as attempt 2 on the
// spare worker from the latest durable checkpoint, and finishes with the
// same final loss as the same job run without interruption.
func TestKilledWorkerProcessRestartsFromCheckpoint(t *testing.T) {
	c := startClusterWith(t, coordinator.Options{HeartbeatInterval: 500 * time.Millisecond, LeaseTTL: 2 * time.Second})
	ctx := context.Background()
	victim := c.startWorkerProcess("victim")
	c.waitWorkers(1)
	const steps = 24
	ckpt := t.TempDir()
	spec := func(name, dir string) *ternv1.ApplyJobRequest {
		return tinySpec(t, name, fmt.Sprintf("steps=%d", steps), "eval.everySteps=0", "checkpoint.dir="+dir, "checkpoint.everySteps=4", "restartPolicy.maxRestarts=2")
	}
	if _, err := c.client.ApplyJob(ctx, spec("phoenix", ckpt)); err != nil {
		t.Fatal(err)
	}
	c.watch("phoenix", "a checkpointed step", func(j *ternv1.Job) bool { return j.CommittedStep >= 9 })
	c.startWorkerProcess("spare")
	c.waitWorkers(2)
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.watch("phoenix", "the recovery", func(j *ternv1.Job) bool { return j.Phase == ternv1.JobPhase_JOB_PHASE_RECOVERING || j.Attempt >= 2 })
	done := c.watch("phoenix", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if done.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED || done.Attempt != 2 || done.Restarts != 1 || done.CommittedStep != steps {
		t.Fatalf("job ended %s in attempt %d after %d restarts at step %d: %s", done.Phase, done.Attempt, done.Restarts, done.CommittedStep, done.Reason)
	}
	if a := done.Attempts; len(a) != 2 || a[1].StartStep < 8 || a[1].StartStep%4 != 0 || !strings.Contains(a[0].Outcome, "victim") {
		t.Fatalf("attempts: %v", a)
	}
	if f := done.LastFailure; f == nil || f.Worker != "victim" || f.Attempt != 1 {
		t.Fatalf("last failure: %v", f)
	}
	lost := false
	for _, ev := range done.Events {
		lost = lost || ev.Reason == "WorkerLost" && strings.Contains(ev.Message, "victim")
	}
	if !lost {
		t.Fatalf("no WorkerLost event: %v", done.Events)
	}
	if got := texts(c.logs(&ternv1.GetLogsRequest{Name: "phoenix", Attempt: 2})); !strings.Contains(got, "attempt 2 resumes from checkpoint "+ckpt) {
		t.Fatalf("log of attempt 2:\n%s", got)
	}

	// The determinism contract: the interrupted run ends where an
	// uninterrupted one does.
	if _, err := c.client.ApplyJob(ctx, spec("steady", t.TempDir())); err != nil {
		t.Fatal(err)
	}
	ref := c.watch("steady", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if ref.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED || ref.Summary.GetFinalLoss() != done.Summary.GetFinalLoss() {
		t.Fatalf("uninterrupted run: %s, final loss %v; interrupted: %v", ref.Phase, ref.Summary.GetFinalLoss(), done.Summary.GetFinalLoss())
	}
	if _, err := snapshot.Latest(ckpt); err != nil {
		t.Fatal(err)
	}
}
