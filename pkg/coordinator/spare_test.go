package coordinator_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/worker"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// A worker labelled spare=true (worker --spare) is kept idle by placement:
// a job that would need it waits, saying slots are reserved as spares, and
// a job that fits elsewhere runs elsewhere.
func TestSpareWorkerIsNotPlaced(t *testing.T) {
	c := startCluster(t, 1)
	a, err := worker.New(worker.Config{Coordinator: c.addr, Name: "spare-1", Slots: 1, Logger: c.log, DrainTimeout: testDeadline,
		Labels: map[string]string{"spare": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("spare worker: %v", err)
		}
	})
	c.waitWorkers(2)

	if _, err := c.client.ApplyJob(context.Background(), tinySpec(t, "two", "parallel.data=2")); err != nil {
		t.Fatal(err)
	}
	j := c.watch("two", "a reason naming the spare", func(j *ternv1.Job) bool { return strings.Contains(j.Reason, "reserved as spares") })
	if j.Phase != ternv1.JobPhase_JOB_PHASE_PENDING {
		t.Fatalf("two-rank job is %s (%s), want Pending while the only other slot is a spare", j.Phase, j.Reason)
	}
	if _, err := c.client.CancelJob(context.Background(), &ternv1.CancelJobRequest{Name: "two"}); err != nil {
		t.Fatal(err)
	}

	if _, err := c.client.ApplyJob(context.Background(), tinySpec(t, "one", "steps=2")); err != nil {
		t.Fatal(err)
	}
	j = c.watch("one", "success", func(j *ternv1.Job) bool { return j.Phase == ternv1.JobPhase_JOB_PHASE_SUCCEEDED })
	for _, r := range j.Ranks {
		if r.Worker != "w1" {
			t.Errorf("rank %d ran on %s, want w1 (spare-1 is a spare)", r.Rank, r.Worker)
		}
	}
}
