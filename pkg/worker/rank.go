package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"time"

	"github.com/ternml/tern/pkg/launch"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Bounds on an order from the wire.
const (
	maxJobName   = 253
	maxWorld     = 1 << 16
	maxSpecBytes = 1 << 20
)

// rankKey names one rank of one attempt of a job.
type rankKey struct {
	job     string
	attempt int
	rank    int
}

func (k rankKey) compare(o rankKey) int {
	return cmp.Or(cmp.Compare(k.job, o.job), cmp.Compare(k.attempt, o.attempt), cmp.Compare(k.rank, o.rank))
}

// rankRun is one rank this worker runs (or ran). The reports fields keep
// its latest state for replay to a new session; they and done are guarded
// by Agent.mu.
type rankRun struct {
	key   rankKey
	start *ternv1.StartRank
	stop  context.CancelCauseFunc
	// peers receives the peer list once; peersGiven says it was sent.
	peers      chan []string
	peersGiven bool
	done       bool
	// ended is closed when the rank's goroutine returns.
	ended chan struct{}
	// closeTr closes the rank's peer endpoint, once it has one: a rank
	// superseded by a newer attempt may sit in a collective with a peer
	// that will never answer (a paused worker), and waiting for the
	// transport's timeout would hold up the newer attempt here.
	closeTr func()
	// local is the rank's index among this worker's ranks (the lowest one
	// no other live rank holds): with spec.device.gpu auto it picks the
	// GPU, so a worker with --slots N on a host with N GPUs gives each
	// rank its own.
	local int
	// prev are the ranks of earlier attempts of the job that this one
	// superseded: it waits for them to end before it starts, so that
	// one that writes a checkpoint as it stops has finished writing.
	prev []*rankRun

	listening, started, step, snap, final *ternv1.RankReport
	// restoredFrom and restoreMS say where the state came from, for
	// RankStarted.
	restoredFrom string
	restoreMS    float64

	// logSeq numbers the rank's log lines; logs retains the latest
	// maxRetainedLines of them for replay to a new session.
	logSeq int64
	logs   []*ternv1.LogLine
}

// startRank starts a rank the coordinator assigned, or re-reports one
// already running (the order is repeated after a reconnect).
func (a *Agent) startRank(s *ternv1.StartRank) error {
	switch {
	case s.Job == "" || len(s.Job) > maxJobName:
		return fmt.Errorf("start rank: job name of %d bytes: want 1 to %d", len(s.Job), maxJobName)
	case s.World < 1 || s.World > maxWorld:
		return fmt.Errorf("start rank of job %s: world %d: want 1 to %d", s.Job, s.World, maxWorld)
	case s.Rank < 0 || s.Rank >= s.World:
		return fmt.Errorf("start rank of job %s: rank %d is outside 0..%d", s.Job, s.Rank, s.World-1)
	case s.Attempt < 1:
		return fmt.Errorf("start rank of job %s: attempt %d: attempts count from 1", s.Job, s.Attempt)
	case len(s.SpecJson) > maxSpecBytes:
		return fmt.Errorf("start rank of job %s: spec of %d bytes: at most %d", s.Job, len(s.SpecJson), maxSpecBytes)
	}
	k := rankKey{s.Job, int(s.Attempt), int(s.Rank)}
	a.mu.Lock()
	defer a.mu.Unlock()
	if rr := a.ranks[k]; rr != nil {
		a.replayLocked(rr)
		return nil
	}
	if a.draining {
		// Until its registration lapses the coordinator may still place
		// ranks here; refusing at once lets it place them elsewhere.
		ended := make(chan struct{})
		close(ended)
		rr := &rankRun{key: k, start: s, stop: func(error) {}, done: true, ended: ended, peers: make(chan []string, 1)}
		a.ranks[k] = rr
		a.logLocked(rr, "refused: the worker is shutting down")
		a.reportLocked(rr, &ternv1.RankReport{Event: &ternv1.RankReport_Failed{Failed: &ternv1.RankFailed{Error: "the worker is shutting down, so it starts no new ranks"}}})
		return nil
	}
	// A newer attempt of the job supersedes what runs of older ones.
	var prev []*rankRun
	for ok, rr := range a.ranks {
		if ok.job == k.job && ok.attempt < k.attempt && !rr.done {
			a.logLocked(rr, fmt.Sprintf("stopping: attempt %d of the job superseded this one", k.attempt))
			rr.stop(fmt.Errorf("attempt %d of job %s superseded it", k.attempt, k.job))
			if rr.closeTr != nil {
				rr.closeTr()
			}
			prev = append(prev, rr)
		}
	}
	ctx, stop := context.WithCancelCause(context.Background())
	rr := &rankRun{key: k, start: s, stop: stop, peers: make(chan []string, 1), ended: make(chan struct{}), prev: prev, local: a.freeLocalLocked(prev)}
	a.ranks[k] = rr
	a.wg.Add(1)
	go a.runRank(ctx, rr)
	a.log.Info("rank assigned", "job", k.job, "attempt", k.attempt, "rank", k.rank, "world", s.World)
	return nil
}

// freeLocalLocked returns the lowest local index that no live rank holds,
// other than those in leaving (superseded ranks this one waits for).
func (a *Agent) freeLocalLocked(leaving []*rankRun) int {
	held := map[int]bool{}
	for _, rr := range a.ranks {
		if !rr.done && !slices.Contains(leaving, rr) {
			held[rr.local] = true
		}
	}
	i := 0
	for held[i] {
		i++
	}
	return i
}

// givePeers hands the peer list to this worker's ranks of the attempt.
func (a *Agent) givePeers(p *ternv1.RankPeers) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, rr := range a.ranks {
		if k.job != p.Job || k.attempt != int(p.Attempt) || rr.peersGiven {
			continue
		}
		if len(p.Addresses) != int(rr.start.World) {
			return fmt.Errorf("peers of job %s attempt %d: %d addresses for %d ranks", p.Job, p.Attempt, len(p.Addresses), rr.start.World)
		}
		rr.peers <- p.Addresses
		rr.peersGiven = true
	}
	return nil
}

// stopRanks stops this worker's ranks of the job up to the attempt, and
// forgets those that are over: the coordinator has their last report.
func (a *Agent) stopRanks(s *ternv1.StopRanks) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, rr := range a.ranks {
		if k.job != s.Job || k.attempt > int(s.Attempt) {
			continue
		}
		if rr.done {
			delete(a.ranks, k)
			continue
		}
		a.log.Info("stopping rank", "job", k.job, "attempt", k.attempt, "rank", k.rank, "reason", s.Reason)
		a.logLocked(rr, "stopping after the current step: "+s.Reason)
		rr.stop(fmt.Errorf("stopped by the coordinator: %s", s.Reason))
	}
}

// stopAll stops every running rank.
func (a *Agent) stopAll(cause error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, rr := range a.ranks {
		if !rr.done {
			k := rr.key
			a.log.Warn("stopping rank", "job", k.job, "attempt", k.attempt, "rank", k.rank, "reason", cause)
			a.logLocked(rr, "stopping: "+cause.Error())
			rr.stop(cause)
		}
	}
}

// runRank trains one rank and reports how it ended.
func (a *Agent) runRank(ctx context.Context, rr *rankRun) {
	defer a.wg.Done()
	defer close(rr.ended)
	sum, err := a.train(ctx, rr)
	a.mu.Lock()
	defer a.mu.Unlock()
	rr.done = true
	rr.stop(nil)
	k := rr.key
	if err != nil {
		a.log.Warn("rank failed", "job", k.job, "attempt", k.attempt, "rank", k.rank, "err", err)
		a.logLocked(rr, "failed: "+err.Error())
		a.reportLocked(rr, &ternv1.RankReport{Event: &ternv1.RankReport_Failed{Failed: &ternv1.RankFailed{Error: err.Error()}}})
		return
	}
	a.log.Info("rank finished", "job", k.job, "attempt", k.attempt, "rank", k.rank, "steps", sum.Steps, "stopped", sum.Stopped)
	if sum.Stopped {
		a.logLocked(rr, fmt.Sprintf("stopped after step %d", sum.Steps))
	} else {
		a.logLocked(rr, fmt.Sprintf("finished: %d steps, final loss %.4f, %.0f tokens/s", sum.Steps, sum.FinalLoss, sum.TokensPerS))
	}
	a.reportLocked(rr, &ternv1.RankReport{Event: &ternv1.RankReport_Finished{Finished: &ternv1.RankFinished{Summary: summaryProto(sum)}}})
}

// train binds the rank's endpoint, reports its address, waits for the
// peer list and trains with the peers.
func (a *Agent) train(ctx context.Context, rr *rankRun) (*train.Summary, error) {
	s := rr.start
	for _, p := range rr.prev {
		select {
		case <-p.ended:
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped before training started: %w", context.Cause(ctx))
		}
	}
	job, err := spec.Parse(s.SpecJson, nil)
	if err != nil {
		return nil, fmt.Errorf("job spec from the coordinator: %w", err)
	}
	if job.Metadata.Name != s.Job {
		return nil, fmt.Errorf("the spec is for job %q, the order for job %q", job.Metadata.Name, s.Job)
	}
	if w := job.Spec.Parallel.Data * job.Spec.Parallel.Pipeline; w != int(s.World) {
		return nil, fmt.Errorf("the spec has %d ranks (data %d × pipeline %d), the order %d", w, job.Spec.Parallel.Data, job.Spec.Parallel.Pipeline, s.World)
	}
	listen := s.Listen
	if listen == "" {
		listen = net.JoinHostPort(a.cfg.Host, "0")
	}
	r, err := launch.ListenRank(job, int(s.Rank), listen, s.Token)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	a.mu.Lock()
	rr.closeTr = func() { _ = r.Close() }
	a.mu.Unlock()
	a.logf(rr, "rank %d of %d (attempt %d) listening on %s", s.Rank, s.World, s.Attempt, r.Addr())
	a.report(rr, &ternv1.RankReport{Event: &ternv1.RankReport_Listening{Listening: &ternv1.RankListening{Address: r.Addr()}}})
	var peers []string
	select {
	case peers = <-rr.peers:
	case <-ctx.Done():
		return nil, fmt.Errorf("stopped before training started: %w", context.Cause(ctx))
	}
	tr, err := r.Connect(ctx, peers)
	if err != nil {
		return nil, err
	}
	opts := train.Options{Observer: observer{a, rr}, Progress: &progressWriter{a: a, rr: rr}, LocalRank: &rr.local}
	t0 := time.Now()
	sr := a.newSnapRun(rr, job)
	if sr != nil {
		sr.start(tr)
		defer sr.close()
		opts.Snapshots = sr
	}
	if sr != nil && sr.plan.Restore {
		// Every rank of the attempt restores the same committed step:
		// from this worker's copy, or from its peers' fragments.
		st, from, err := sr.restore(ctx)
		if err != nil {
			return nil, err
		}
		opts.RestoreState = st
		rr.restoredFrom, rr.restoreMS = from, since(t0)
		a.logf(rr, "attempt %d restores committed snapshot step %d from %s in %.1f ms", s.Attempt, st.Step, from, rr.restoreMS)
	} else {
		// Every rank of the attempt listens before any gets its peers,
		// and each waited for its superseded ranks first: the
		// checkpoints they wrote on the way out are complete by now, so
		// all ranks find the same latest one.
		resume, err := a.resumePoint(rr, job)
		if err != nil {
			return nil, err
		}
		opts.Resume = resume
		rr.restoredFrom = sourceInitial
		if resume != "" {
			rr.restoredFrom = sourceCheckpoint
		}
		rr.restoreMS = since(t0)
	}
	sum, err := r.Train(ctx, opts)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (while stopping: %v)", err, cause)
		}
		return nil, err
	}
	sum.PeakRSSBytes = train.PeakRSS()
	return sum, nil
}

// resumePoint is the checkpoint a relaunched attempt resumes from: the
// latest complete one in spec.checkpoint.dir. A first attempt starts
// afresh (a directory left by another run is not this job's progress), as
// does a relaunch without a checkpoint directory or before the first
// checkpoint was written, from step 0.
func (a *Agent) resumePoint(rr *rankRun, job *spec.TrainingJob) (string, error) {
	s := rr.start
	if s.Attempt <= 1 && s.FromStep == 0 {
		return "", nil
	}
	dir := job.Spec.Checkpoint.Dir
	if dir == "" {
		a.logf(rr, "spec.checkpoint.dir is not set, so attempt %d starts again from step 0", s.Attempt)
		return "", nil
	}
	p, err := snapshot.Latest(dir)
	switch {
	case errors.Is(err, snapshot.ErrNoCheckpoint) || errors.Is(err, fs.ErrNotExist):
		a.logf(rr, "no complete checkpoint in %s yet, so attempt %d starts again from step 0", dir, s.Attempt)
		return "", nil
	case err != nil:
		return "", fmt.Errorf("find the checkpoint to resume from: %w", err)
	}
	a.logf(rr, "attempt %d resumes from checkpoint %s", s.Attempt, p)
	return p, nil
}

// report records a rank's report as its latest state and sends it.
func (a *Agent) report(rr *rankRun, r *ternv1.RankReport) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reportLocked(rr, r)
}

func (a *Agent) reportLocked(rr *rankRun, r *ternv1.RankReport) {
	r.Job, r.Attempt, r.Rank = rr.key.job, int32(rr.key.attempt), int32(rr.key.rank)
	if a.cfg.Observe != nil {
		a.cfg.Observe(r)
	}
	switch r.Event.(type) {
	case *ternv1.RankReport_Listening:
		rr.listening = r
	case *ternv1.RankReport_Started:
		rr.started = r
	case *ternv1.RankReport_Step:
		rr.step = r
	case *ternv1.RankReport_Snapshot:
		rr.snap = r
	default:
		rr.final = r
	}
	a.offerLocked(&ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Report{Report: r}})
}

// replayLocked re-sends a rank's latest state, in the order it happened.
func (a *Agent) replayLocked(rr *rankRun) {
	for _, r := range []*ternv1.RankReport{rr.listening, rr.started, rr.step, rr.snap, rr.final} {
		if r != nil {
			a.offerLocked(&ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Report{Report: r}})
		}
	}
}

// observer forwards a rank's progress to the coordinator.
type observer struct {
	a  *Agent
	rr *rankRun
}

func (o observer) Started(info train.RunInfo) {
	o.a.logf(o.rr, "training: %d parameters, from step %d", info.Params, info.StartStep)
	o.a.report(o.rr, &ternv1.RankReport{Event: &ternv1.RankReport_Started{Started: &ternv1.RankStarted{
		Params: info.Params, StartStep: int64(info.StartStep), RestoredFrom: o.rr.restoredFrom, RestoreMs: o.rr.restoreMS,
	}}})
}

func (o observer) Step(r train.StepReport) {
	line := fmt.Sprintf("step %d/%d loss %.4f lr %.3g grad-norm %.3g %.0f tokens/s %.0f ms", r.Step, r.Steps, r.Loss, r.LR, r.GradNorm, r.TokensPerS, r.StepMS)
	if r.EvalLoss != nil {
		line += fmt.Sprintf(" eval-loss %.4f", *r.EvalLoss)
	}
	o.a.logf(o.rr, "%s", line)
	o.a.report(o.rr, &ternv1.RankReport{Event: &ternv1.RankReport_Step{Step: &ternv1.RankStep{
		Step: int64(r.Step), Loss: r.Loss, TokensPerSecond: r.TokensPerS, StepMs: r.StepMS, Lr: r.LR,
		GradNorm: r.GradNorm, EvalLoss: r.EvalLoss, BytesSent: r.BytesSent, BytesRecv: r.BytesRecv,
	}}})
}

func (o observer) Log(msg string) {
	k := o.rr.key
	o.a.log.Debug(msg, "job", k.job, "attempt", k.attempt, "rank", k.rank)
	o.a.logf(o.rr, "%s", msg)
}

func summaryProto(s *train.Summary) *ternv1.TrainSummary {
	return &ternv1.TrainSummary{
		Steps: int64(s.Steps), FinalLoss: s.FinalLoss, FinalEvalLoss: s.FinalEvalLoss,
		TokensPerSecond: s.TokensPerS, StepMsMedian: s.StepMSMedian, WallSeconds: s.WallS,
		Params: s.Params, PeakRssBytes: s.PeakRSSBytes, OptimizerStateBytes: s.OptimizerStateBytes,
		BytesSentPerStep: s.BytesSentPerStep, BytesRecvPerStep: s.BytesRecvPerStep, Stopped: s.Stopped,
		WeightsCrc32C: s.WeightsCRC32C,
	}
}
