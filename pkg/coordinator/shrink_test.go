package coordinator_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ternml/tern/pkg/coordinator"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// A DP=2 job with restartPolicy.shrink loses one replica's worker (a real
// process, SIGKILLed) with no spare to replace it: after the shrink
// timeout it continues at DP 1 from the durable checkpoint, and when a
// worker joins it grows back to DP 2 and finishes, with finite losses.
func TestShrinkThenGrowBack(t *testing.T) {
	c := startClusterWith(t, coordinator.Options{HeartbeatInterval: 500 * time.Millisecond, LeaseTTL: 2 * time.Second})
	ctx := context.Background()
	c.startWorkerProcess("keeper")
	victim := c.startWorkerProcess("victim")
	c.waitWorkers(2)
	const steps = 100
	ckpt := t.TempDir()
	req := tinySpec(t, "elastic", fmt.Sprintf("steps=%d", steps), "eval.everySteps=0", "parallel.data=2",
		"checkpoint.dir="+ckpt, "checkpoint.everySteps=2", "restartPolicy.maxRestarts=2",
		"restartPolicy.shrink=true", "restartPolicy.shrinkTimeoutSeconds=1")
	if _, err := c.client.ApplyJob(ctx, req); err != nil {
		t.Fatal(err)
	}
	c.watch("elastic", "a checkpointed step", func(j *ternv1.Job) bool { return j.CommittedStep >= 3 })
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	hasEvent := func(j *ternv1.Job, reason, text string) bool {
		for _, ev := range j.Events {
			if ev.Reason == reason && strings.Contains(ev.Message, text) {
				return true
			}
		}
		return false
	}
	shrunk := c.watch("elastic", "the shrink", func(j *ternv1.Job) bool {
		return hasEvent(j, "Shrunk", "shrunk from DP 2 to 1") || coordinator.Terminal(j.Phase)
	})
	if coordinator.Terminal(shrunk.Phase) {
		t.Fatalf("job ended %s before shrinking: %s", shrunk.Phase, shrunk.Reason)
	}
	c.watch("elastic", "training at DP 1", func(j *ternv1.Job) bool {
		return j.Phase == ternv1.JobPhase_JOB_PHASE_RUNNING || coordinator.Terminal(j.Phase)
	})
	if got := texts(c.logs(&ternv1.GetLogsRequest{Name: "elastic", Attempt: 2})); !strings.Contains(got, "resumes from checkpoint") {
		t.Fatalf("log of attempt 2 (DP 1):\n%s", got)
	}
	// Train a few steps at DP 1: one rank only.
	c.watch("elastic", "steps at DP 1", func(j *ternv1.Job) bool {
		return j.Attempt == 2 && j.CommittedStep >= 10 || coordinator.Terminal(j.Phase)
	})
	dp1 := c.logs(&ternv1.GetLogsRequest{Name: "elastic", Attempt: 2})
	for _, line := range dp1 {
		if line.Rank != 0 {
			t.Fatalf("attempt 2 runs at DP 1, yet rank %d logged: %s", line.Rank, line.Text)
		}
	}
	if !strings.Contains(texts(dp1), "step 10/") {
		t.Fatalf("attempt 2 did not train at DP 1:\n%s", texts(dp1))
	}
	c.startWorkerProcess("returning")
	done := c.watch("elastic", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if done.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED || done.CommittedStep != steps || done.Attempt != 3 {
		t.Fatalf("job ended %s in attempt %d at step %d: %s\nevents: %v", done.Phase, done.Attempt, done.CommittedStep, done.Reason, done.Events)
	}
	if !hasEvent(done, "Grown", "grew back to DP 2") {
		t.Fatalf("no Grown event: %v", done.Events)
	}
	if a := done.Attempts; len(a) != 3 {
		t.Fatalf("attempts: %v", a)
	}
	if l := done.Summary.GetFinalLoss(); math.IsNaN(l) || math.IsInf(l, 0) || l <= 0 {
		t.Fatalf("final loss %v", l)
	}
	for _, a := range []int32{2, 3} {
		for _, line := range c.logs(&ternv1.GetLogsRequest{Name: "elastic", Attempt: a}) {
			if strings.Contains(line.Text, "loss=NaN") || strings.Contains(line.Text, "loss=+Inf") {
				t.Fatalf("attempt %d: %s", a, line.Text)
			}
		}
	}
}
