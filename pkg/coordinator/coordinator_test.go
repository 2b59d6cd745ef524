package coordinator_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ternml/tern/pkg/coordinator"
	"github.com/ternml/tern/pkg/launch"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
	"github.com/ternml/tern/pkg/worker"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

const tinySteps = 20

// A data-parallel job applied through the API is placed on two workers of
// one slot each, trains to its last step and succeeds, with the final loss
// bitwise equal to the same ranks trained without the control plane
// (determinism: same spec and topology, same result).
func TestJobRunsToSuccess(t *testing.T) {
	c := startCluster(t, 1, 1)
	ctx := context.Background()
	req := tinySpec(t, "tiny-dp2", "parallel.data=2", "steps=20", "eval.everySteps=0")
	resp, err := c.client.ApplyJob(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Created {
		t.Fatal("first apply: created=false")
	}
	done := c.watch("tiny-dp2", "success", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if done.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED {
		t.Fatalf("job ended %s: %s", done.Phase, done.Reason)
	}
	sum := done.Summary
	if sum == nil || sum.Steps != tinySteps || done.CommittedStep != tinySteps {
		t.Fatalf("summary %v, committed step %d: want %d steps", sum, done.CommittedStep, tinySteps)
	}
	if len(done.Ranks) != 2 || done.Ranks[0].Worker == done.Ranks[1].Worker {
		t.Fatalf("ranks %v: want one on each worker", done.Ranks)
	}

	// The same two ranks, wired by hand.
	job, err := spec.Parse(done.SpecJson, nil)
	if err != nil {
		t.Fatal(err)
	}
	ref := trainDirect(t, job)
	if math.Float64bits(ref.FinalLoss) != math.Float64bits(sum.FinalLoss) || ref.Params != sum.Params {
		t.Errorf("final loss %v and %d parameters through the coordinator, %v and %d with the ranks run directly", sum.FinalLoss, sum.Params, ref.FinalLoss, ref.Params)
	}
	first := firstLoss(t, job)
	if !(sum.FinalLoss < first) {
		t.Errorf("final loss %v is not below the first step's %v", sum.FinalLoss, first)
	}

	// The outcome survives a coordinator restart.
	c.stopCoordinator()
	c.startCoordinator()
	c.waitFor("the restarted coordinator to report the job", func(ctx context.Context) (bool, error) {
		resp, err := c.client.GetJob(ctx, &ternv1.GetJobRequest{Name: "tiny-dp2"})
		if status.Code(err) == codes.Unavailable {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if !proto.Equal(resp.Job.Summary, sum) || resp.Job.Phase != done.Phase || resp.Job.CommittedStep != tinySteps {
			return false, fmt.Errorf("after the restart: %s, step %d, summary %v; before: %v", resp.Job.Phase, resp.Job.CommittedStep, resp.Job.Summary, sum)
		}
		return true, nil
	})
	c.waitWorkers(2)

	// Apply is idempotent for the same spec; another spec under the name
	// is refused until the job is deleted.
	again, err := c.client.ApplyJob(ctx, req)
	if err != nil || again.Created || again.Job.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED {
		t.Fatalf("second apply of the same spec: %v, %v", again, err)
	}
	other := tinySpec(t, "tiny-dp2", "parallel.data=2", "steps=21")
	_, err = c.client.ApplyJob(ctx, other)
	wantCode(t, err, codes.AlreadyExists, `job "tiny-dp2" exists with a different spec`)
	if _, err := c.client.DeleteJob(ctx, &ternv1.DeleteJobRequest{Name: "tiny-dp2"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.client.GetJob(ctx, &ternv1.GetJobRequest{Name: "tiny-dp2"})
	wantCode(t, err, codes.NotFound, `no job named "tiny-dp2"`)
	c.waitFor("workers to forget the job's ranks", func(context.Context) (bool, error) {
		return c.workers[0].Running()+c.workers[1].Running() == 0, nil
	})
}

// trainDirect runs job's two ranks in this process with ListenRank/Run.
func trainDirect(t *testing.T, job *spec.TrainingJob) *train.Summary {
	t.Helper()
	const token = "0123456789abcdef0123456789abcdef"
	ranks := make([]*launch.Rank, 2)
	peers := make([]string, 2)
	for i := range ranks {
		r, err := launch.ListenRank(job, i, "127.0.0.1:0", token)
		if err != nil {
			t.Fatal(err)
		}
		ranks[i], peers[i] = r, r.Addr()
	}
	sums := make([]*train.Summary, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, r := range ranks {
		wg.Go(func() { sums[i], errs[i] = r.Run(context.Background(), peers, train.Options{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d run directly: %v", i, err)
		}
	}
	return sums[0]
}

// firstLoss is the loss of the job's first step, trained in one process
// with the same global batch.
func firstLoss(t *testing.T, job *spec.TrainingJob) float64 {
	t.Helper()
	one := *job
	one.Spec.Steps = 1
	one.Spec.Parallel.Data = 1
	one.Spec.Batch.MicroBatches *= 2
	sum, err := train.Run(context.Background(), &one, train.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return sum.FinalLoss
}

// A job larger than the cluster waits Pending with the scheduler's reason;
// cancelling it ends it, and cancelling again is refused.
func TestTooLargeJobPendsThenCancels(t *testing.T) {
	c := startCluster(t, 1, 1)
	ctx := context.Background()
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "too-big", "parallel.data=3")); err != nil {
		t.Fatal(err)
	}
	const reason = "waiting for capacity: needs 3 slots (DP 3 × PP 1), 2 free on 2 workers; the cluster has only 2 usable slots in all, so the job cannot start until more workers join"
	j := c.watch("too-big", "the capacity reason", func(j *ternv1.Job) bool { return j.Reason == reason })
	if j.Phase != ternv1.JobPhase_JOB_PHASE_PENDING || j.Attempt != 0 {
		t.Fatalf("job is %s attempt %d, want Pending before any attempt", j.Phase, j.Attempt)
	}
	cancelled, err := c.client.CancelJob(ctx, &ternv1.CancelJobRequest{Name: "too-big"})
	if err != nil {
		t.Fatal(err)
	}
	if cancelled.Job.Phase != ternv1.JobPhase_JOB_PHASE_CANCELLED {
		t.Fatalf("after cancel the job is %s: %s", cancelled.Job.Phase, cancelled.Job.Reason)
	}
	_, err = c.client.CancelJob(ctx, &ternv1.CancelJobRequest{Name: "too-big"})
	wantCode(t, err, codes.FailedPrecondition, `job "too-big" is already Cancelled`)
	_, err = c.client.DeleteJob(ctx, &ternv1.DeleteJobRequest{Name: "missing"})
	wantCode(t, err, codes.NotFound, `no job named "missing"`)
}

// Cancelling a running job stops its ranks on the workers and frees their
// slots for the next job.
func TestCancelRunningJob(t *testing.T) {
	c := startCluster(t, 1, 1)
	ctx := context.Background()
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "long", "parallel.data=2", "steps=100000", "eval.everySteps=0")); err != nil {
		t.Fatal(err)
	}
	c.watch("long", "a committed step", func(j *ternv1.Job) bool {
		return j.Phase == ternv1.JobPhase_JOB_PHASE_RUNNING && j.CommittedStep >= 2
	})
	_, err := c.client.DeleteJob(ctx, &ternv1.DeleteJobRequest{Name: "long"})
	wantCode(t, err, codes.FailedPrecondition, `job "long" is Running; cancel it first`)
	resp, err := c.client.CancelJob(ctx, &ternv1.CancelJobRequest{Name: "long"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Job.Phase != ternv1.JobPhase_JOB_PHASE_CANCELLED {
		t.Fatalf("after cancel the job is %s", resp.Job.Phase)
	}
	c.waitFor("the ranks to stop", func(context.Context) (bool, error) {
		return c.workers[0].Running()+c.workers[1].Running() == 0, nil
	})
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "next", "parallel.data=2", "steps=2", "eval.everySteps=0")); err != nil {
		t.Fatal(err)
	}
	if j := c.watch("next", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) }); j.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED {
		t.Fatalf("the next job ended %s: %s", j.Phase, j.Reason)
	}
}

// Bad requests get the status code that says what kind of mistake it is,
// and a message that says what to change.
func TestBadRequests(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	relative := tinySpec(t, "rel")
	relative.Set = append(relative.Set, "data.path=tiny.txt")
	for _, tc := range []struct {
		name   string
		req    *ternv1.ApplyJobRequest
		fields []string // paths named in the BadRequest detail
		msg    string
	}{
		{"empty", &ternv1.ApplyJobRequest{}, nil, "the request carries no job spec"},
		{"not yaml", &ternv1.ApplyJobRequest{Spec: []byte("{")}, nil, "parse YAML"},
		{"bad fields", tinySpec(t, "bad", "steps=-1", "optimizer.name=sgd"), []string{"spec.optimizer.name", "spec.steps"}, "spec.steps"},
		{"relative path", relative, []string{"spec.data.path"}, `"tiny.txt" is a relative path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.client.ApplyJob(ctx, tc.req)
			st := wantCode(t, err, codes.InvalidArgument, tc.msg)
			var got []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, f := range br.FieldViolations {
						got = append(got, f.Field)
					}
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.fields, ",") {
				t.Errorf("field violations %v, want %v", got, tc.fields)
			}
		})
	}
	_, err := c.client.GetJob(ctx, &ternv1.GetJobRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound, `no job named "nope"`)
	_, err = c.client.CancelJob(ctx, &ternv1.CancelJobRequest{})
	wantCode(t, err, codes.InvalidArgument, "no job name given")
	_, err = c.client.RegisterWorker(ctx, &ternv1.RegisterWorkerRequest{Name: "w", Host: "127.0.0.1", Slots: 0})
	wantCode(t, err, codes.InvalidArgument, "0 slots: allowed 1 to")
	_, err = c.client.RegisterWorker(ctx, &ternv1.RegisterWorkerRequest{Name: "bad/name", Host: "127.0.0.1", Slots: 1})
	wantCode(t, err, codes.InvalidArgument, `worker name "bad/name" is not valid`)

	stream, err := c.client.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Hello{Hello: &ternv1.SessionHello{Worker: "ghost", SessionId: "x"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.FailedPrecondition, "register again")
}

// Listening beyond loopback needs TLS, which this release does not have:
// both ends refuse, saying so.
func TestNonLoopbackRefused(t *testing.T) {
	_, err := coordinator.New(coordinator.Options{Listen: "0.0.0.0:7070", DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "not a loopback address: serving other machines needs TLS") {
		t.Errorf("coordinator on 0.0.0.0: %v", err)
	}
	_, err = worker.New(worker.Config{Coordinator: "10.1.2.3:7070", Name: "w"})
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("worker of a remote coordinator: %v", err)
	}
	_, err = coordinator.New(coordinator.Options{Listen: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "no data directory and no etcd endpoints") {
		t.Errorf("coordinator without storage: %v", err)
	}
}

func wantCode(t *testing.T, err error, code codes.Code, msg string) *status.Status {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("got %v %q, want %v containing %q", st.Code(), st.Message(), code, msg)
	}
	return st
}

// A coordinator stopped mid-job and started again on the same data picks
// the job up from etcd: the workers reconnect under their registrations,
// replay their ranks' state, and the job goes on committing steps in its
// first attempt, on the same ranks.
func TestRestartedCoordinatorContinuesJob(t *testing.T) {
	c := startCluster(t, 1, 1)
	ctx := context.Background()
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "survivor", "parallel.data=2", "steps=100000", "eval.everySteps=0")); err != nil {
		t.Fatal(err)
	}
	before := c.watch("survivor", "a few committed steps", func(j *ternv1.Job) bool { return j.CommittedStep >= 3 })
	c.stopCoordinator()
	c.startCoordinator()
	c.waitWorkers(2)
	after := c.watch("survivor", "more committed steps", func(j *ternv1.Job) bool { return j.CommittedStep >= before.CommittedStep+3 })
	if after.Phase != ternv1.JobPhase_JOB_PHASE_RUNNING || after.Attempt != 1 || after.Restarts != 0 {
		t.Fatalf("after the restart the job is %s in attempt %d after %d restarts: %s", after.Phase, after.Attempt, after.Restarts, after.Reason)
	}
	for i, r := range after.Ranks {
		if r.Address != before.Ranks[i].Address || r.Phase != ternv1.RankPhase_RANK_PHASE_RUNNING {
			t.Errorf("rank %d: %s at %s, before the restart at %s", i, r.Phase, r.Address, before.Ranks[i].Address)
		}
	}
	if _, err := c.client.CancelJob(ctx, &ternv1.CancelJobRequest{Name: "survivor"}); err != nil {
		t.Fatal(err)
	}
	c.waitFor("the ranks to stop", func(context.Context) (bool, error) {
		return c.workers[0].Running()+c.workers[1].Running() == 0, nil
	})
}

// A worker shut down mid-job stops its rank after the current step; the
// job, which has no restarts, fails saying so.
func TestWorkerShutdownFailsJob(t *testing.T) {
	c := startCluster(t, 1, 1)
	ctx := context.Background()
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "orphan", "parallel.data=2", "steps=100000", "eval.everySteps=0", "restartPolicy.maxRestarts=0")); err != nil {
		t.Fatal(err)
	}
	c.watch("orphan", "a committed step", func(j *ternv1.Job) bool { return j.CommittedStep >= 1 })
	c.stopAll[1]()
	done := c.watch("orphan", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if done.Phase != ternv1.JobPhase_JOB_PHASE_FAILED || !strings.Contains(done.Reason, "before the last step") ||
		!strings.Contains(done.Reason, "the job does not restart") {
		t.Fatalf("job ended %s: %s", done.Phase, done.Reason)
	}
}

// A worker that stops heartbeating (here: one that registers, takes a
// rank and goes silent) loses its etcd lease; the coordinator declares it
// lost and fails the job whose rank it held (it has no restarts).
func TestSilentWorkerIsLost(t *testing.T) {
	c := startClusterWith(t, coordinator.Options{HeartbeatInterval: 500 * time.Millisecond, LeaseTTL: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	reg, err := c.client.RegisterWorker(ctx, &ternv1.RegisterWorkerRequest{Name: "ghost", Host: "127.0.0.1", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := c.client.Session(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Hello{Hello: &ternv1.SessionHello{Worker: "ghost", SessionId: reg.SessionId}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.ApplyJob(ctx, tinySpec(t, "haunted", "restartPolicy.maxRestarts=0")); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("waiting for the rank order: %v", err)
		}
		if msg.GetStartRank() != nil {
			break
		}
	}
	done := c.watch("haunted", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if done.Phase != ternv1.JobPhase_JOB_PHASE_FAILED || !strings.Contains(done.Reason, "worker ghost was lost (no heartbeat for 1.5s, so its registration was revoked)") {
		t.Fatalf("job ended %s: %s", done.Phase, done.Reason)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.FailedPrecondition, "register again")
}

// A pipeline-parallel job runs too: both stages on one worker with two
// slots (the scheduler keeps a replica's stages together), connected
// through the same listen-report-peers handshake.
func TestPipelineJobOnOneWorker(t *testing.T) {
	c := startCluster(t, 2)
	if _, err := c.client.ApplyJob(context.Background(), tinySpec(t, "stages", "parallel.pipeline=2", "batch.microBatches=2", "steps=3", "eval.everySteps=0")); err != nil {
		t.Fatal(err)
	}
	done := c.watch("stages", "its end", func(j *ternv1.Job) bool { return coordinator.Terminal(j.Phase) })
	if done.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED || done.Summary.GetSteps() != 3 {
		t.Fatalf("job ended %s: %s; summary %v", done.Phase, done.Reason, done.Summary)
	}
	for _, r := range done.Ranks {
		if r.Worker != "w1" {
			t.Errorf("rank %d on %s, want w1", r.Rank, r.Worker)
		}
	}
}
