package coordinator

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/ternml/tern/pkg/coordinator/job"
	"github.com/ternml/tern/pkg/coordinator/sched"
	"github.com/ternml/tern/pkg/coordinator/store"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Bounds on what a worker may report.
const (
	maxAddrLen  = 300
	maxErrorLen = 2000
)

// attemptRecord is what etcd keeps of one attempt (attempts/JOB/N): enough
// for a coordinator that takes over to re-send the ranks exactly what
// they were told.
type attemptRecord struct {
	Attempt    int              `json:"attempt"`
	Token      string           `json:"token"`
	FromStep   int64            `json:"fromStep"`
	Assignment sched.Assignment `json:"assignment"`
	// Summary is the finished run's TrainSummary in protobuf's JSON
	// form, which, unlike encoding/json, carries a NaN eval loss.
	Summary json.RawMessage `json:"summary,omitempty"`
}

// attempt is one attempt's ranks as their reports describe them.
type attempt struct {
	n          int
	token      string
	fromStep   int64
	assignment sched.Assignment
	ranks      []rankState
	// peers is every rank's address, set once all of them listen.
	peers []string
	// summary combines the ranks' summaries once all finished;
	// summarySaved says the attempt record in etcd has it.
	summary      *ternv1.TrainSummary
	summarySaved bool
	// stepMS holds rank 0's latest step times, for the ETA.
	stepMS []float64
	// settled says no rank of it can still be running: it was restored
	// from etcd for a job that does not hold slots.
	settled bool
}

type rankState struct {
	phase ternv1.RankPhase
	addr  string
	// step and last are the latest step reported.
	step    int64
	last    *ternv1.RankStep
	summary *ternv1.TrainSummary
	err     string
}

func newAttempt(r attemptRecord) *attempt {
	a := &attempt{n: r.Attempt, token: r.Token, fromStep: r.FromStep, assignment: r.Assignment, ranks: make([]rankState, len(r.Assignment))}
	for i := range a.ranks {
		a.ranks[i].phase = ternv1.RankPhase_RANK_PHASE_ASSIGNED
	}
	return a
}

// encode is the attempt's record in etcd.
func (a *attempt) encode() ([]byte, error) {
	r := attemptRecord{Attempt: a.n, Token: a.token, FromStep: a.fromStep, Assignment: a.assignment}
	if a.summary != nil {
		b, err := protojson.Marshal(a.summary)
		if err != nil {
			return nil, err
		}
		r.Summary = b
	}
	return json.Marshal(r)
}

// decodeAttempt reads an attempt record.
func decodeAttempt(b []byte) (*attempt, error) {
	var r attemptRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	a := newAttempt(r)
	if len(r.Summary) > 0 {
		a.summary = &ternv1.TrainSummary{}
		if err := protojson.Unmarshal(r.Summary, a.summary); err != nil {
			return nil, fmt.Errorf("summary: %w", err)
		}
		a.summarySaved = true
	}
	return a, nil
}

// all reports whether every rank is in one of the phases.
func (a *attempt) all(phases ...ternv1.RankPhase) bool {
	for _, r := range a.ranks {
		ok := false
		for _, p := range phases {
			ok = ok || r.phase == p
		}
		if !ok {
			return false
		}
	}
	return true
}

// minStep is the last step every rank has completed.
func (a *attempt) minStep() int64 {
	m := a.ranks[0].step
	for _, r := range a.ranks[1:] {
		m = min(m, r.step)
	}
	return m
}

// workers lists the distinct workers of the attempt, in rank order.
func (a *attempt) workers() []string {
	var ws []string
	seen := map[string]bool{}
	for _, p := range a.assignment {
		if !seen[p.Worker] {
			seen[p.Worker] = true
			ws = append(ws, p.Worker)
		}
	}
	return ws
}

// launch sends every rank of the job's current attempt to its worker.
func (l *loop) launch(e *entry, n int, recovery bool) {
	run := e.run
	if run == nil || run.n != n {
		// persist creates the attempt with the write that precedes this
		// action, so this is a bug, not a race.
		l.log.Error("launch of an attempt the loop has no record of", "job", e.name, "attempt", n)
		return
	}
	l.planSnapshots(e, run, recovery)
	for _, p := range run.assignment {
		l.send(p.Worker, l.startRank(e, run, p.Rank))
	}
}

func (l *loop) startRank(e *entry, run *attempt, rank int) *ternv1.SessionResponse {
	p := run.assignment[rank]
	listen := ""
	if w := l.registry[p.Worker]; w != nil {
		listen = net.JoinHostPort(w.info.Host, "0")
	}
	return &ternv1.SessionResponse{Msg: &ternv1.SessionResponse_StartRank{StartRank: &ternv1.StartRank{
		Job: e.name, Attempt: int32(run.n), Rank: int32(rank), World: int32(len(run.assignment)),
		SpecJson: l.attemptSpec(e, run), Token: run.token, FromStep: run.fromStep, Listen: listen, Snapshot: l.snapshotPlan(e, run, rank),
	}}}
}

func peersMsg(job string, run *attempt) *ternv1.SessionResponse {
	return &ternv1.SessionResponse{Msg: &ternv1.SessionResponse_Peers{Peers: &ternv1.RankPeers{
		Job: job, Attempt: int32(run.n), Addresses: run.peers,
	}}}
}

func stopMsg(job string, attempt int, reason string) *ternv1.SessionResponse {
	return &ternv1.SessionResponse{Msg: &ternv1.SessionResponse_StopRanks{StopRanks: &ternv1.StopRanks{
		Job: job, Attempt: int32(attempt), Reason: reason,
	}}}
}

// stopRanks tells every worker of the job's attempt n to stop its ranks.
func (l *loop) stopRanks(e *entry, n int, reason string) {
	asg := e.j.Assignment
	if e.run != nil && e.run.n == n {
		asg = e.run.assignment
	}
	seen := map[string]bool{}
	for _, p := range asg {
		if !seen[p.Worker] {
			seen[p.Worker] = true
			l.send(p.Worker, stopMsg(e.name, n, reason))
		}
	}
}

// report is a rank report as received from worker.
type report struct {
	worker string
	r      *ternv1.RankReport
}

// onReport records what a rank did and feeds the job what follows from it.
func (l *loop) onReport(ctx context.Context, in report) error {
	r := in.r
	e := l.jobs[r.Job]
	if e != nil && e.run != nil && int(r.Attempt) == e.run.n && !e.j.HoldsSlots() {
		l.stoppedAfterRelease(e, in.worker, r)
	}
	if e == nil || e.run == nil || int(r.Attempt) != e.run.n || !e.j.HoldsSlots() {
		// A rank the job no longer runs: a late report, a worker catching
		// up after a reconnect. Telling it to stop is also what lets the
		// worker forget a rank that finished.
		l.send(in.worker, stopMsg(r.Job, int(r.Attempt), "the job does not run this attempt any more"))
		return nil
	}
	run := e.run
	rank := int(r.Rank)
	if rank < 0 || rank >= len(run.ranks) || run.assignment[rank].Worker != in.worker {
		l.log.Warn("report about a rank placed elsewhere ignored", "job", e.name, "attempt", run.n, "rank", rank, "from", in.worker)
		return nil
	}
	rs := &run.ranks[rank]
	if rs.phase == ternv1.RankPhase_RANK_PHASE_FAILED || rs.phase == ternv1.RankPhase_RANK_PHASE_FINISHED {
		return nil // repeated after a reconnect
	}
	switch ev := r.Event.(type) {
	case *ternv1.RankReport_Listening:
		if err := checkAddr(ev.Listening.Address); err != nil {
			return l.rankFailed(ctx, e, rank, in.worker, "it reported an unusable address: "+err.Error())
		}
		rs.addr = ev.Listening.Address
		if rs.phase == ternv1.RankPhase_RANK_PHASE_ASSIGNED {
			rs.phase = ternv1.RankPhase_RANK_PHASE_LISTENING
		}
		l.sharePeers(e, in.worker)
	case *ternv1.RankReport_Started:
		if rs.phase != ternv1.RankPhase_RANK_PHASE_RUNNING {
			l.onRestored(e, rank, ev.Started)
		}
		rs.phase = ternv1.RankPhase_RANK_PHASE_RUNNING
		rs.step = max(rs.step, ev.Started.StartStep)
		if n := len(e.meta.Attempts); rank == 0 && n > 0 && e.meta.Attempts[n-1].N == run.n {
			e.meta.Attempts[n-1].StartStep = ev.Started.StartStep
		}
	case *ternv1.RankReport_Step:
		if s := ev.Step.Step; s > rs.step {
			rs.step, rs.last = s, ev.Step
			if rank == 0 {
				l.recordStep(e, ev.Step)
				l.onResumedStep(e, s)
			}
		}
	case *ternv1.RankReport_Snapshot:
		return l.onSnapshot(ctx, e, rank, in.worker, ev.Snapshot)
	case *ternv1.RankReport_Finished:
		if ev.Finished.Summary == nil {
			return l.rankFailed(ctx, e, rank, in.worker, "it finished without a summary")
		}
		if ev.Finished.Summary.Stopped {
			return l.rankFailed(ctx, e, rank, in.worker, fmt.Sprintf("it stopped after step %d of %d, before the last step (was its worker shut down?)", ev.Finished.Summary.Steps, e.spec.Spec.Steps))
		}
		rs.phase, rs.summary = ternv1.RankPhase_RANK_PHASE_FINISHED, ev.Finished.Summary
	case *ternv1.RankReport_Failed:
		why := oneLine(ev.Failed.Error, maxErrorLen)
		if peerFailure(why) {
			// A rank whose peer went away fails too, on a healthy worker:
			// the cause is the peer's (most often a lost worker, known
			// once its lease lapses). Blaming this rank would move it
			// off its worker and away from its local snapshot, so the
			// failure waits; a recovery started meanwhile relaunches
			// every rank anyway and makes it moot.
			rs.phase, rs.err = ternv1.RankPhase_RANK_PHASE_FAILED, why
			l.deferFailure(e, rank, in.worker, why)
			return nil
		}
		return l.rankFailed(ctx, e, rank, in.worker, why)
	default:
		l.log.Warn("empty rank report ignored", "job", e.name, "rank", rank, "from", in.worker)
		return nil
	}
	return l.progress(ctx, e)
}

// recordStep keeps rank 0's step for the job's metrics and ETA. Every
// rank reports the global batch's loss; rank 0's throughput is one
// replica's.
func (l *loop) recordStep(e *entry, st *ternv1.RankStep) {
	run := e.run
	run.stepMS = append(run.stepMS, st.StepMs)
	if len(run.stepMS) > stepTimesKept {
		run.stepMS = run.stepMS[1:]
	}
	m := &ternv1.StepMetrics{Attempt: int32(run.n), Step: st.Step, Loss: st.Loss, TokensPerSecond: st.TokensPerSecond * float64(e.j.Layout().DP),
		StepMs: st.StepMs, Lr: st.Lr, EvalLoss: st.EvalLoss, Time: timestamppb.Now()}
	if err := l.logs.appendMetric(e.name, m); err != nil {
		l.log.Warn("step metrics not stored", "job", e.name, "err", err)
	}
}

// sharePeers hands out the peer list once every rank listens; a worker
// that reports again after it was sent (a reconnect) gets it again.
func (l *loop) sharePeers(e *entry, from string) {
	run := e.run
	if run.peers != nil {
		l.send(from, peersMsg(e.name, run))
		return
	}
	peers := make([]string, len(run.ranks))
	for i, r := range run.ranks {
		if r.addr == "" {
			return
		}
		peers[i] = r.addr
	}
	run.peers = peers
	for _, w := range run.workers() {
		l.send(w, peersMsg(e.name, run))
	}
}

func (l *loop) rankFailed(ctx context.Context, e *entry, rank int, worker, why string) error {
	l.restoreFailed(e, why)
	rs := &e.run.ranks[rank]
	rs.phase, rs.err = ternv1.RankPhase_RANK_PHASE_FAILED, why
	return l.feed(ctx, e, job.RankFailed{Attempt: e.run.n, Rank: rank, Worker: worker, Reason: why})
}

// progress feeds the job what the ranks' reports add up to: all started,
// a step every rank completed (committed in etcd first), all finished.
func (l *loop) progress(ctx context.Context, e *entry) error {
	run := e.run
	running := []ternv1.RankPhase{ternv1.RankPhase_RANK_PHASE_RUNNING, ternv1.RankPhase_RANK_PHASE_FINISHED}
	switch {
	case e.j.Phase == job.Scheduling && run.all(running...):
		if err := l.feed(ctx, e, job.RanksStarted{Attempt: run.n}); err != nil {
			return err
		}
	case e.j.Phase == job.Recovering && e.j.Recovery.Launched && run.all(running...):
		if err := l.feed(ctx, e, job.RecoveryDone{Attempt: run.n, Step: e.j.CommittedStep}); err != nil {
			return err
		}
	}
	if e.j.Phase != job.Running {
		return nil
	}
	if run.all(ternv1.RankPhase_RANK_PHASE_FINISHED) {
		last := max(run.ranks[0].summary.Steps, run.minStep(), e.j.CommittedStep)
		if err := l.commit(ctx, e, last); err != nil {
			return err
		}
		run.summary = combine(run, e.j.Spec.PP)
		return l.feed(ctx, e, job.Finished{Attempt: run.n, Step: last})
	}
	if s := run.minStep(); s > e.j.CommittedStep {
		if err := l.commit(ctx, e, s); err != nil {
			return err
		}
		return l.feed(ctx, e, job.StepCommitted{Attempt: run.n, Step: s})
	}
	return nil
}

// commit records step as the job's committed step in etcd, before the
// state machine hears of it, so etcd is never behind what is reported.
func (l *loop) commit(ctx context.Context, e *entry, step int64) error {
	if step <= e.j.CommittedStep {
		return nil
	}
	cctx, cancel := etcdCtx(ctx)
	defer cancel()
	if _, err := l.leader.CommitStep(cctx, e.name, uint64(step), nil); err != nil && !errors.Is(err, store.ErrStaleStep) {
		return fmt.Errorf("coordinator: commit step %d of job %s: %w", step, e.name, err)
	}
	return nil
}

// combine merges the ranks' summaries into the job's: the loss and the
// parameter count are the whole model's (every rank reports the same),
// tokens per second add up over replicas, each counted at its first stage,
// and memory and traffic are per-rank maxima.
func combine(run *attempt, pp int) *ternv1.TrainSummary {
	s := proto.Clone(run.ranks[0].summary).(*ternv1.TrainSummary)
	s.TokensPerSecond = 0
	var crcs []byte
	for i, r := range run.ranks {
		rs := r.summary
		crcs = binary.LittleEndian.AppendUint32(crcs, rs.WeightsCrc32C)
		if i%pp == 0 {
			s.TokensPerSecond += rs.TokensPerSecond
		}
		s.StepMsMedian = max(s.StepMsMedian, rs.StepMsMedian)
		s.WallSeconds = max(s.WallSeconds, rs.WallSeconds)
		s.PeakRssBytes = max(s.PeakRssBytes, rs.PeakRssBytes)
		s.OptimizerStateBytes = max(s.OptimizerStateBytes, rs.OptimizerStateBytes)
		s.BytesSentPerStep = max(s.BytesSentPerStep, rs.BytesSentPerStep)
		s.BytesRecvPerStep = max(s.BytesRecvPerStep, rs.BytesRecvPerStep)
		s.Stopped = s.Stopped || rs.Stopped
	}
	s.WeightsCrc32C = crc32.Checksum(crcs, crc32.MakeTable(crc32.Castagnoli))
	return s
}

// checkAddr accepts host:port with a non-empty host and a port in 1..65535.
func checkAddr(a string) error {
	if len(a) > maxAddrLen {
		return fmt.Errorf("address of %d bytes: at most %d", len(a), maxAddrLen)
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("address %q has no host", a)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("address %q: port must be 1..65535", a)
	}
	return nil
}

// peerFailure reports whether a rank's error is its transport losing a
// peer (pkg/comm), rather than a fault of its own.
func peerFailure(why string) bool {
	return strings.Contains(why, "comm: ") && (strings.Contains(why, "closed its transport") || strings.Contains(why, "peer closed") ||
		strings.Contains(why, "connection refused") || strings.Contains(why, "timed out") || strings.Contains(why, "timeout") || strings.Contains(why, "Unavailable") || strings.Contains(why, "EOF"))
}

// deferredFailure is a rank failure put off by deferFailure.
type deferredFailure struct {
	job           string
	attempt, rank int
	worker, why   string
	t             *time.Timer
}

// deferFailure feeds a rank's failure after failureGrace, unless the
// attempt has ended by then.
func (l *loop) deferFailure(e *entry, rank int, worker, why string) {
	d := deferredFailure{job: e.name, attempt: e.run.n, rank: rank, worker: worker, why: why}
	var tm *time.Timer
	tm = time.AfterFunc(failureGrace(l.opts.LeaseTTL), func() {
		d.t = tm
		select {
		case l.in <- d:
		case <-l.done:
		}
	})
	l.timers[tm] = struct{}{}
}

func (l *loop) onDeferredFailure(ctx context.Context, d deferredFailure) error {
	delete(l.timers, d.t)
	e := l.jobs[d.job]
	if e == nil || e.run == nil || e.run.n != d.attempt || !e.j.HoldsSlots() || e.j.Attempt != d.attempt {
		return nil
	}
	return l.rankFailed(ctx, e, d.rank, d.worker, d.why)
}

// failureGrace is how long a rank's peer failure waits for its cause to
// show: a worker's lease lapses within about its TTL after its last
// renewal, and etcd checks expiry on its own clock, so several TTLs.
func failureGrace(leaseTTL time.Duration) time.Duration { return 3*leaseTTL + time.Second }
