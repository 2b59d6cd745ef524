package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ternml/tern/pkg/coordinator/store"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// leaseTTL is the coordinator's default worker lease (coordinator.
// DefaultLeaseTTL): a job must have run longer than this before the kill,
// so that the workers' no-contact rule would stop its ranks if nothing
// told them the coordinator was there.
const leaseTTL = 5 * time.Second

// embeddedStore connects to the etcd member a coordinator runs inside
// itself in dataDir (its client URL is in the member's saved URLs).
func embeddedStore(t *testing.T, dataDir string) *store.Store {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "etcd", "member-urls.json"))
	if err != nil {
		t.Fatal(err)
	}
	var urls struct{ Client string }
	if err := json.Unmarshal(b, &urls); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, []string{urls.Client}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// jobDuration is how long the tests' jobs should train: past a worker
// lease before the kill, and on for a while after the coordinator is back.
const jobDuration = 14 * time.Second

// jobSteps sizes a tiny 2-rank job to last about jobDuration on this
// machine, from the median step time of a short run on the same workers,
// so that the job neither ends before the kill on a fast machine nor drags
// on a slow one.
func jobSteps(t *testing.T, cl ternv1.CoordinatorServiceClient, dir string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	if _, err := cl.ApplyJob(ctx, tinyJob(t, dir, "calibrate", "parallel.data=2", "steps=20", "eval.everySteps=0")); err != nil {
		t.Fatal(err)
	}
	var done *ternv1.Job
	waitFor(t, "the calibration job to end", func(ctx context.Context) (bool, error) {
		resp, err := cl.GetJob(ctx, &ternv1.GetJobRequest{Name: "calibrate"})
		if err != nil {
			return false, err
		}
		done = resp.Job
		return terminal(done.Phase), nil
	})
	ms := done.Summary.GetStepMsMedian()
	if done.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED || !(ms > 0) {
		t.Fatalf("calibration job ended %s (%s), median step %v ms", done.Phase, done.Reason, ms)
	}
	steps := min(max(int(float64(jobDuration.Milliseconds())/ms), 200), 100_000)
	t.Logf("median step %.1f ms: the job gets %d steps", ms, steps)
	return steps
}

// A coordinator killed with SIGKILL in the middle of a job, and started
// again on the same data directory, picks the job up from etcd: the
// workers (separate processes) reconnect under their registrations and the
// job runs to success in its first attempt, as the same etcd record, with
// every write of the record in sequence and no committed step going back.
func TestCoordinatorSIGKILLRestart(t *testing.T) {
	skipShort(t)
	t.Parallel()
	bins := build(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	dataDir := filepath.Join(dir, "coordinator")
	coordArgs := []string{"--listen", addr, "--data-dir", dataDir, "--log-level", "info"}
	coord := start(t, "coordinator", bins.coordinator, nil, coordArgs...)
	for _, name := range []string{"w1", "w2"} {
		start(t, name, bins.worker, nil, "--coordinator", addr, "--name", name, "--slots", "1")
	}
	cl := dial(t, addr)
	waitWorkers(t, cl, 2)

	steps := jobSteps(t, cl, dir)
	// No restarts: a rank lost to the restart would fail the job rather
	// than be hidden by a relaunch.
	req := tinyJob(t, dir, "survivor", "parallel.data=2", fmt.Sprintf("steps=%d", steps), "eval.everySteps=0", "restartPolicy.maxRestarts=0")
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	if _, err := cl.ApplyJob(ctx, req); err != nil {
		t.Fatal(err)
	}
	polled := pollJob(cl, "survivor")
	var runningSince time.Time
	waitFor(t, "the job to run for longer than a worker lease", func(ctx context.Context) (bool, error) {
		resp, err := cl.GetJob(ctx, &ternv1.GetJobRequest{Name: "survivor"})
		if err != nil {
			return false, err
		}
		j := resp.Job
		if terminal(j.Phase) {
			return false, fmt.Errorf("the job ended before the kill: %s: %s", j.Phase, j.Reason)
		}
		if j.Phase == ternv1.JobPhase_JOB_PHASE_RUNNING && j.CommittedStep > 0 && runningSince.IsZero() {
			runningSince = time.Now()
		}
		return !runningSince.IsZero() && time.Since(runningSince) > leaseTTL+time.Second, nil
	})
	st := embeddedStore(t, dataDir)
	before, err := st.GetJob(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	st.Close()

	coord.kill()
	killed := time.Now()
	start(t, "coordinator-2", bins.coordinator, nil, coordArgs...)
	var resumedAt int64
	waitFor(t, "the restarted coordinator to lead and report the job", func(ctx context.Context) (bool, error) {
		resp, err := cl.GetJob(ctx, &ternv1.GetJobRequest{Name: "survivor"})
		if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		resumedAt = resp.Job.CommittedStep
		return true, nil
	})
	t.Logf("the restarted coordinator served the job %v after the kill, at committed step %d", time.Since(killed).Round(time.Millisecond), resumedAt)
	waitWorkers(t, cl, 2)

	var done *ternv1.Job
	waitFor(t, "the job to end", func(ctx context.Context) (bool, error) {
		resp, err := cl.GetJob(ctx, &ternv1.GetJobRequest{Name: "survivor"})
		if err != nil {
			return false, err
		}
		done = resp.Job
		return terminal(done.Phase), nil
	})
	seen := polled.statuses()
	if done.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED || done.CommittedStep != int64(steps) || done.Summary.GetSteps() != int64(steps) {
		t.Fatalf("job ended %s at step %d (summary %v): %s", done.Phase, done.CommittedStep, done.Summary, done.Reason)
	}
	if done.Attempt != 1 || done.Restarts != 0 {
		t.Errorf("job ended in attempt %d after %d restarts: the restart of the coordinator must not start another attempt", done.Attempt, done.Restarts)
	}
	if resumedAt >= int64(steps) {
		t.Logf("note: the ranks finished during the outage (committed step %d when the coordinator came back)", resumedAt)
	}

	// What clients saw: the committed step never went back, across the
	// restart, and the attempt stayed the first.
	for i := 1; i < len(seen); i++ {
		if seen[i].CommittedStep < seen[i-1].CommittedStep {
			t.Errorf("a client saw committed step %d after %d", seen[i].CommittedStep, seen[i-1].CommittedStep)
		}
		if seen[i].Attempt != 1 {
			t.Errorf("a client saw attempt %d", seen[i].Attempt)
		}
	}

	// What etcd holds: the same record (same create revision: the job's
	// identity), every write in sequence, one attempt.
	st = embeddedStore(t, dataDir)
	after, err := st.GetJob(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	if after.Created != before.Created {
		t.Errorf("the job record was created at revision %d before the kill and %d after: it is not the same job", before.Created, after.Created)
	}
	h := history(t, st, "survivor")
	checkHistory(t, h)
	attempts, err := st.ListAttempts(ctx, "survivor")
	if err != nil {
		t.Fatal(err)
	}
	if len(attempts) != 1 || attempts[0].N != 1 {
		t.Errorf("etcd holds %d attempt records, want attempt 1 alone", len(attempts))
	}
	if n := len(h.committed); n == 0 || h.committed[n-1] != uint64(steps) {
		t.Errorf("committed steps in etcd end at %v, want %d", h.committed[max(0, n-1):], steps)
	}
	t.Logf("%d record writes, %d commits, %d statuses polled", len(h.states), len(h.committed), len(seen))
}
