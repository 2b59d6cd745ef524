package coordinator_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/ternml/tern/pkg/coordinator"
	"github.com/ternml/tern/pkg/snapshot"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// logs reads a job's stored lines (not following).
func (c *cluster) logs(req *ternv1.GetLogsRequest) []*ternv1.LogLine {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	stream, err := c.client.GetLogs(ctx, req)
	if err != nil {
		c.t.Fatal(err)
	}
	var out []*ternv1.LogLine
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			c.t.Fatalf("logs of job %s: %v", req.Name, err)
		}
		out = append(out, resp.Lines...)
	}
}

func texts(lines []*ternv1.LogLine) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

func rank(r int32) *int32 { return &r }

// The ranks' lines and step metrics reach the coordinator, are served by
// rank, tail and time, merged over ranks in time order, and are still
// there, with the job's times, attempts and events, after the
// coordinator restarts.
func TestLogsMetricsAndTimesSurviveRestart(t *testing.T) {
	c := startCluster(t, 1, 1)
	ctx := context.Background()
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "talky", "parallel.data=2", "steps=6", "eval.everySteps=0")); err != nil {
		t.Fatal(err)
	}
	// Following from the start sees every step and ends with the attempt.
	stream, err := c.client.GetLogs(ctx, &ternv1.GetLogsRequest{Name: "talky", Follow: true, Rank: rank(1)})
	if err != nil {
		t.Fatal(err)
	}
	var followed []*ternv1.LogLine
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("follow: %v", err)
		}
		followed = append(followed, resp.Lines...)
	}
	if got := texts(followed); !strings.Contains(got, "step 6/6 loss") || !strings.Contains(got, "finished: 6 steps") {
		t.Fatalf("followed rank 1:\n%s", got)
	}
	done := c.watch("talky", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if done.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED {
		t.Fatalf("job ended %s: %s", done.Phase, done.Reason)
	}
	for i, l := range followed {
		if l.Rank != 1 || l.Attempt != 1 || l.Seq != int64(i+1) {
			t.Fatalf("line %d: rank %d attempt %d seq %d, want rank 1 attempt 1 seq %d", i, l.Rank, l.Attempt, l.Seq, i+1)
		}
	}

	all := c.logs(&ternv1.GetLogsRequest{Name: "talky"})
	seen := map[int32]bool{}
	for i, l := range all {
		seen[l.Rank] = true
		if i > 0 && l.Time.AsTime().Before(all[i-1].Time.AsTime()) {
			t.Fatalf("merged lines out of time order at %d", i)
		}
	}
	if !seen[0] || !seen[1] {
		t.Fatalf("merged logs lack a rank:\n%s", texts(all))
	}
	tail := c.logs(&ternv1.GetLogsRequest{Name: "talky", Rank: rank(0), Tail: 2})
	if len(tail) != 2 || !strings.HasPrefix(tail[1].Text, "finished: 6 steps") {
		t.Fatalf("tail 2 of rank 0:\n%s", texts(tail))
	}
	if late := c.logs(&ternv1.GetLogsRequest{Name: "talky", Since: done.Finished}); len(late) > 2 {
		t.Fatalf("lines since the job finished:\n%s", texts(late))
	}
	m, err := c.client.GetJobMetrics(ctx, &ternv1.GetJobMetricsRequest{Name: "talky"})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Points) != 6 || m.Points[5].Step != 6 || m.Points[0].Loss <= m.Points[5].Loss || m.Points[5].TokensPerSecond <= 0 {
		t.Fatalf("metrics: %v", m.Points)
	}
	if m, err := c.client.GetJobMetrics(ctx, &ternv1.GetJobMetricsRequest{Name: "talky", AfterStep: 4}); err != nil || len(m.GetPoints()) != 2 {
		t.Fatalf("metrics after step 4: %v %v", m.GetPoints(), err)
	}
	if done.Created == nil || done.Started == nil || done.Finished == nil || done.Finished.AsTime().Before(done.Started.AsTime()) ||
		len(done.Attempts) != 1 || done.Attempts[0].Outcome != "succeeded" || done.Attempts[0].Ended == nil || done.StepMs <= 0 {
		t.Fatalf("times and attempts: created %v started %v finished %v attempts %v step ms %v", done.Created, done.Started, done.Finished, done.Attempts, done.StepMs)
	}

	c.stopCoordinator()
	c.startCoordinator()
	c.waitWorkers(2)
	var after *ternv1.Job
	c.waitFor("the job restored", func(ctx context.Context) (bool, error) {
		resp, err := c.client.GetJob(ctx, &ternv1.GetJobRequest{Name: "talky"})
		after = resp.GetJob()
		return err == nil, nil
	})
	if texts(c.logs(&ternv1.GetLogsRequest{Name: "talky"})) != texts(all) {
		t.Fatal("logs changed across the coordinator restart")
	}
	if !after.Created.AsTime().Equal(done.Created.AsTime()) || !after.Finished.AsTime().Equal(done.Finished.AsTime()) ||
		len(after.Events) != len(done.Events) || len(after.Attempts) != 1 {
		t.Fatalf("after the restart: created %v finished %v, %d events (was %d), attempts %v",
			after.Created, after.Finished, len(after.Events), len(done.Events), after.Attempts)
	}
	if m, err := c.client.GetJobMetrics(ctx, &ternv1.GetJobMetricsRequest{Name: "talky"}); err != nil || len(m.GetPoints()) != 6 {
		t.Fatalf("metrics after the restart: %d points, %v", len(m.GetPoints()), err)
	}
	ws, err := c.client.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
	if err != nil || len(ws.Workers) != 2 || ws.Workers[0].Pid <= 0 || ws.Workers[0].Registered == nil {
		t.Fatalf("workers: %v %v", ws.GetWorkers(), err)
	}

	// Deleting the job deletes its logs: a new job of the name starts clean.
	if _, err := c.client.DeleteJob(ctx, &ternv1.DeleteJobRequest{Name: "talky"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.client.GetJobMetrics(ctx, &ternv1.GetJobMetricsRequest{Name: "talky"})
	wantCode(t, err, codes.NotFound, "no job named")
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "talky", "steps=1", "eval.everySteps=0")); err != nil {
		t.Fatal(err)
	}
	if m, err := c.client.GetJobMetrics(ctx, &ternv1.GetJobMetricsRequest{Name: "talky"}); err != nil || len(m.GetPoints()) > 1 {
		t.Fatalf("metrics of the new job: %d points, %v", len(m.GetPoints()), err)
	}
}

// Pause stops the ranks and frees the slots; resume relaunches the job as
// a new attempt. With a checkpoint directory it continues from the
// checkpoint the ranks wrote as they stopped; without one it starts again
// from step 0, and says so in its log.
func TestPauseAndResume(t *testing.T) {
	c := startCluster(t, 1, 1)
	ctx := context.Background()
	ckpt := t.TempDir()
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "kept", "steps=100000", "eval.everySteps=0", "checkpoint.dir="+ckpt, "checkpoint.everySteps=1000")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "bare", "steps=100000", "eval.everySteps=0")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kept", "bare"} {
		c.watch(name, "three committed steps", func(j *ternv1.Job) bool { return j.CommittedStep >= 3 })
		resp, err := c.client.PauseJob(ctx, &ternv1.PauseJobRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Job.Phase != ternv1.JobPhase_JOB_PHASE_PAUSED {
			t.Fatalf("%s after pause: %s", name, resp.Job.Phase)
		}
		_, err = c.client.PauseJob(ctx, &ternv1.PauseJobRequest{Name: name})
		wantCode(t, err, codes.FailedPrecondition, "already paused")
	}
	c.waitFor("the ranks to stop", func(context.Context) (bool, error) {
		return c.workers[0].Running()+c.workers[1].Running() == 0, nil
	})
	cp, err := snapshot.Latest(ckpt)
	if err != nil {
		t.Fatalf("no checkpoint written on pause: %v", err)
	}
	ws, _ := c.client.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
	for _, w := range ws.GetWorkers() {
		if w.UsedSlots != 0 {
			t.Fatalf("worker %s holds %d slots while every job is paused", w.Name, w.UsedSlots)
		}
	}
	for _, name := range []string{"kept", "bare"} {
		if _, err := c.client.ResumeJob(ctx, &ternv1.ResumeJobRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		_, err = c.client.ResumeJob(ctx, &ternv1.ResumeJobRequest{Name: name})
		wantCode(t, err, codes.FailedPrecondition, "only a paused job can resume")
	}
	kept := c.watch("kept", "attempt 2 running", func(j *ternv1.Job) bool {
		return j.Attempt == 2 && j.Phase == ternv1.JobPhase_JOB_PHASE_RUNNING && len(j.Ranks) == 1 && j.Ranks[0].Step > 0
	})
	bare := c.watch("bare", "attempt 2 running", func(j *ternv1.Job) bool {
		return j.Attempt == 2 && j.Phase == ternv1.JobPhase_JOB_PHASE_RUNNING && len(j.Ranks) == 1 && j.Ranks[0].Step > 0
	})
	if a := kept.Attempts; len(a) != 2 || a[1].StartStep < 3 || a[0].Ended == nil || !strings.Contains(a[0].Outcome, "paused") {
		t.Fatalf("kept attempts after resume: %v", a)
	}
	if a := bare.Attempts; len(a) != 2 || a[1].StartStep != 0 {
		t.Fatalf("bare attempts after resume: %v", a)
	}
	if kept.Restarts != 0 || bare.Restarts != 0 {
		t.Fatalf("a pause counted as a restart: %d, %d", kept.Restarts, bare.Restarts)
	}
	if got := texts(c.logs(&ternv1.GetLogsRequest{Name: "kept", Attempt: 2})); !strings.Contains(got, "attempt 2 resumes from checkpoint "+cp) {
		t.Errorf("kept's log of attempt 2 does not name %s:\n%s", cp, got)
	}
	if got := texts(c.logs(&ternv1.GetLogsRequest{Name: "bare", Attempt: 2})); !strings.Contains(got, "spec.checkpoint.dir is not set, so attempt 2 starts again from step 0") {
		t.Errorf("bare's log of attempt 2:\n%s", got)
	}
	if got := texts(c.logs(&ternv1.GetLogsRequest{Name: "bare", Attempt: 1})); !strings.Contains(got, "stopping after the current step") {
		t.Errorf("bare's log of attempt 1:\n%s", got)
	}
	for _, name := range []string{"kept", "bare"} {
		if _, err := c.client.CancelJob(ctx, &ternv1.CancelJobRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		_, err := c.client.PauseJob(ctx, &ternv1.PauseJobRequest{Name: name})
		wantCode(t, err, codes.FailedPrecondition, "nothing to pause")
	}
	_, err = c.client.PauseJob(ctx, &ternv1.PauseJobRequest{Name: "nosuch"})
	wantCode(t, err, codes.NotFound, "no job named")
	c.waitFor("the ranks to stop", func(context.Context) (bool, error) {
		return c.workers[0].Running()+c.workers[1].Running() == 0, nil
	})
}

// A rank whose worker shuts down fails the attempt; with a restart left
// the job relaunches elsewhere under the next attempt number, and when
// the restarts are used up it fails saying so.
func TestRestartsThenFailsWhenUsedUp(t *testing.T) {
	c := startCluster(t, 1, 1)
	ctx := context.Background()
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "fragile", "steps=100000", "eval.everySteps=0", "restartPolicy.maxRestarts=1")); err != nil {
		t.Fatal(err)
	}
	first := c.watch("fragile", "a committed step", func(j *ternv1.Job) bool { return j.CommittedStep >= 1 && len(j.Ranks) == 1 })
	on := first.Ranks[0].Worker
	stop := map[string]func(){"w1": c.stopAll[0], "w2": c.stopAll[1]}
	stop[on]()
	second := c.watch("fragile", "attempt 2 running", func(j *ternv1.Job) bool {
		return j.Attempt == 2 && j.Phase == ternv1.JobPhase_JOB_PHASE_RUNNING && j.CommittedStep >= 1
	})
	if second.Restarts != 1 || second.MaxRestarts != 1 || second.Ranks[0].Worker == on || second.LastFailure == nil ||
		second.LastFailure.Attempt != 1 || second.LastFailure.Time == nil || len(second.Attempts) != 2 || !strings.HasPrefix(second.Attempts[0].Outcome, "failed: ") {
		t.Fatalf("after the first failure: restarts %d/%d on %s, last failure %v, attempts %v", second.Restarts, second.MaxRestarts, second.Ranks[0].Worker, second.LastFailure, second.Attempts)
	}
	stop[second.Ranks[0].Worker]()
	done := c.watch("fragile", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if done.Phase != ternv1.JobPhase_JOB_PHASE_FAILED || !strings.Contains(done.Reason, "no restarts left") || done.LastFailure.GetAttempt() != 2 {
		t.Fatalf("job ended %s: %s (last failure %v)", done.Phase, done.Reason, done.LastFailure)
	}
}

// waitStopped gives a helper process a moment to be reaped.
func waitStopped(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(testDeadline):
		t.Fatal("worker process did not exit")
	}
}

// When one worker of a two-replica job shuts down, both replicas stop
// (they agree to stop after the same step) and count as failed; the
// recovery places them on the spare and on the surviving worker, whose
// slot its failed rank frees, rather than waiting for more capacity.
func TestRecoveryReusesTheSurvivorsSlot(t *testing.T) {
	c := startCluster(t, 1, 1, 1)
	ctx := context.Background()
	ckpt := t.TempDir()
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "pair", "parallel.data=2", "steps=100000", "eval.everySteps=0", "checkpoint.dir="+ckpt)); err != nil {
		t.Fatal(err)
	}
	first := c.watch("pair", "a committed step", func(j *ternv1.Job) bool { return j.CommittedStep >= 2 && len(j.Ranks) == 2 })
	stop := map[string]func(){"w1": c.stopAll[0], "w2": c.stopAll[1], "w3": c.stopAll[2]}
	gone := first.Ranks[0].Worker
	stop[gone]()
	// The shut-down worker may still be given a rank of attempt 2 (its
	// registration lasts until its lease lapses); it refuses it, and the
	// next attempt goes elsewhere.
	second := c.watch("pair", "a later attempt running on the other workers", func(j *ternv1.Job) bool {
		return j.Attempt >= 2 && j.Phase == ternv1.JobPhase_JOB_PHASE_RUNNING && j.Ranks[0].Worker != gone && j.Ranks[1].Worker != gone &&
			j.Ranks[0].Phase == ternv1.RankPhase_RANK_PHASE_RUNNING && j.Ranks[1].Phase == ternv1.RankPhase_RANK_PHASE_RUNNING
	})
	if second.Restarts != second.Attempt-1 || second.Attempts[len(second.Attempts)-1].StartStep < 2 {
		t.Fatalf("attempt 2 on %s and %s (lost %s), restarts %d, attempts %v", second.Ranks[0].Worker, second.Ranks[1].Worker, gone, second.Restarts, second.Attempts)
	}
	if _, err := c.client.CancelJob(ctx, &ternv1.CancelJobRequest{Name: "pair"}); err != nil {
		t.Fatal(err)
	}
}

// A job resumed at once after a pause, and placed on another worker than
// before, still continues from the checkpoint its ranks write as they
// stop: its placement waits for them to report their end.
func TestQuickResumeElsewhereWaitsForTheStopCheckpoint(t *testing.T) {
	c := startCluster(t, 1, 1)
	ctx := context.Background()
	ckpt := t.TempDir()
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "mover", "steps=100000", "eval.everySteps=0", "checkpoint.dir="+ckpt, "checkpoint.everySteps=100000")); err != nil {
		t.Fatal(err)
	}
	first := c.watch("mover", "three committed steps", func(j *ternv1.Job) bool { return j.CommittedStep >= 3 && len(j.Ranks) == 1 })
	if _, err := c.client.PauseJob(ctx, &ternv1.PauseJobRequest{Name: "mover"}); err != nil {
		t.Fatal(err)
	}
	// Another job takes the slot the paused one left, so the resumed one
	// goes to the other worker.
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "filler", "steps=100000", "eval.everySteps=0")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.ResumeJob(ctx, &ternv1.ResumeJobRequest{Name: "mover"}); err != nil {
		t.Fatal(err)
	}
	second := c.watch("mover", "attempt 2 running", func(j *ternv1.Job) bool {
		return j.Attempt == 2 && j.Phase == ternv1.JobPhase_JOB_PHASE_RUNNING && len(j.Ranks) == 1 && j.Ranks[0].Step > 0
	})
	filler := c.watch("filler", "running", func(j *ternv1.Job) bool { return len(j.Ranks) == 1 })
	if filler.Ranks[0].Worker != first.Ranks[0].Worker || second.Ranks[0].Worker == first.Ranks[0].Worker {
		t.Fatalf("mover moved from %s to %s, filler on %s: want filler where mover was", first.Ranks[0].Worker, second.Ranks[0].Worker, filler.Ranks[0].Worker)
	}
	if a := second.Attempts; a[1].StartStep < 3 {
		t.Fatalf("attempt 2 started from step %d, before the pause's checkpoint (attempt 1 reached step %d)", a[1].StartStep, a[0].LastStep)
	}
	for _, name := range []string{"mover", "filler"} {
		if _, err := c.client.CancelJob(ctx, &ternv1.CancelJobRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	c.waitFor("the ranks to stop", func(context.Context) (bool, error) {
		return c.workers[0].Running()+c.workers[1].Running() == 0, nil
	})
}
