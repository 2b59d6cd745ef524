// Command controlplane measures tern's coordinator at scale: one real
// coordinator (its own process, with its embedded etcd) and many worker
// agents, each a goroutine with its own gRPC connection that registers,
// keeps a Session stream and heartbeats at the coordinator's interval.
//
//	go run ./scripts/bench/controlplane [-agents 1000] [-jobs 4] [-steps 40] [-step-interval 1s] [-idle 10s]
//
// The agents run no training. Their ranks are fake: a StartRank is
// answered with a listening address that nothing listens on, the peer
// list with "started", then one step report every -step-interval and a
// finished report with a made-up summary. The coordinator cannot tell:
// it places, orders, aggregates, commits steps in etcd and ends the jobs
// exactly as for real ranks. What is measured is therefore the control
// plane alone:
//
//   - registration: time for every agent to register and attach;
//   - coordinator CPU, as a share of one core and of the machine, idle
//     (heartbeats only) and while the jobs report steps;
//   - heartbeat handling latency: from an agent sending a heartbeat to
//     receiving the coordinator's acknowledgement, which it sends once it
//     has renewed the worker's etcd lease (p50, p99, max);
//   - time to schedule: from ApplyJob to every rank of the jobs running;
//   - time to detect a dead worker: some agents' connections are closed
//     abruptly, as when their process dies, and others fall silent with
//     their connection open, as when their process hangs (SIGSTOP) or
//     their machine is cut off; measured until the coordinator drops each
//     from the registry and until its job leaves Running.
//
// A job holds at most spec.MaxDataParallel (256) ranks, so the agents are
// split over -jobs jobs of agents/jobs data-parallel ranks each.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ternml/tern/pkg/coordinator"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

const roleEnv = "TERN_BENCH_ROLE"

func main() {
	if os.Getenv(roleEnv) == "coordinator" {
		if err := runCoordinator(); err != nil {
			fmt.Fprintln(os.Stderr, "coordinator:", err)
			os.Exit(1)
		}
		return
	}
	agents := flag.Int("agents", 1000, "number of worker agents (one slot each)")
	jobs := flag.Int("jobs", 4, "number of jobs sharing the agents' slots")
	steps := flag.Int("steps", 40, "steps of each job")
	stepEvery := flag.Duration("step-interval", time.Second, "time between two step reports of a fake rank")
	idle := flag.Duration("idle", 10*time.Second, "window measured with heartbeats only")
	keep := flag.Bool("keep", false, "keep the coordinator's data directory and log")
	cpuProfile := flag.String("cpuprofile", "", "write the coordinator's CPU profile to this file")
	flag.Parse()
	if *jobs < 1 || *agents%*jobs != 0 || *agents / *jobs > 256 {
		fmt.Fprintln(os.Stderr, "controlplane: -agents must split evenly into -jobs jobs of at most 256 ranks")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *cpuProfile != "" {
		abs, err := filepath.Abs(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "controlplane:", err)
			os.Exit(2)
		}
		os.Setenv("TERN_BENCH_CPUPROFILE", abs)
	}
	if err := run(ctx, *agents, *jobs, *steps, *stepEvery, *idle, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

// runCoordinator is the child process: a coordinator with default options
// on the address and data directory it is given.
func runCoordinator() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if path := os.Getenv("TERN_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// Heartbeat handling inside the coordinator: SIGUSR1 appends what was
	// timed since the last one to the stats file and starts afresh.
	inside := &latencies{}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			line := inside.reset() + "\n"
			f, err := os.OpenFile(os.Getenv("TERN_BENCH_STATS"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
			if err == nil {
				f.WriteString(line)
				f.Close()
			}
		}
	}()
	c, err := coordinator.New(coordinator.Options{
		Listen:        os.Getenv("TERN_BENCH_LISTEN"),
		DataDir:       os.Getenv("TERN_BENCH_DIR"),
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		ServerOptions: []grpc.ServerOption{grpc.ChainStreamInterceptor(timeHeartbeats(inside))},
	})
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

// timeHeartbeats wraps each worker's Session stream to time, inside the
// coordinator, every heartbeat from the handler receiving it to the handler
// passing its acknowledgement to gRPC: the coordinator's own handling
// (the etcd lease renewal and the session's outbox), without the network
// or the agents' scheduling. Acknowledgements answer heartbeats in order;
// one that renewal could not make (etcd slower than 1 s) would pair later
// acknowledgements with earlier heartbeats and overstate them.
func timeHeartbeats(lat *latencies) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if strings.HasSuffix(info.FullMethod, "/Session") {
			ss = &timedStream{ServerStream: ss, lat: lat}
		}
		return handler(srv, ss)
	}
}

type timedStream struct {
	grpc.ServerStream
	lat *latencies

	mu       sync.Mutex
	got      []time.Time
	answered bool // the hello's acceptance went out
}

func (s *timedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if r, ok := m.(*ternv1.SessionRequest); err == nil && ok && r.GetHeartbeat() != nil {
		s.mu.Lock()
		s.got = append(s.got, time.Now())
		s.mu.Unlock()
	}
	return err
}

func (s *timedStream) SendMsg(m any) error {
	if r, ok := m.(*ternv1.SessionResponse); ok && r.GetAccepted() != nil {
		s.mu.Lock()
		switch {
		case !s.answered:
			s.answered = true
		case len(s.got) > 0:
			s.lat.add(time.Since(s.got[0]))
			s.got = s.got[1:]
		}
		s.mu.Unlock()
	}
	return s.ServerStream.SendMsg(m)
}

// insideStats asks the coordinator for its heartbeat timings since the
// last call (SIGUSR1) and returns them.
func insideStats(ctx context.Context, proc *os.Process, path string) (string, error) {
	before := countLines(path)
	if err := proc.Signal(syscall.SIGUSR1); err != nil {
		return "", err
	}
	deadline := time.Now().Add(10 * time.Second)
	for countLines(path) == before {
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the coordinator wrote no heartbeat timings")
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return lines[len(lines)-1], nil
}

func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

func run(ctx context.Context, nAgents, nJobs, steps int, stepEvery, idle time.Duration, keep bool) error {
	dir, err := os.MkdirTemp("", "tern-bench-controlplane-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(dir, "coordinator.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(self)
	stats := filepath.Join(dir, "heartbeats.txt")
	cmd.Env = append(os.Environ(), roleEnv+"=coordinator", "TERN_BENCH_LISTEN="+addr, "TERN_BENCH_DIR="+filepath.Join(dir, "data"), "TERN_BENCH_STATS="+stats)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
		}
		if keep {
			fmt.Fprintf(os.Stderr, "coordinator data and log kept in %s\n", dir)
		}
	}()
	pid := cmd.Process.Pid

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	cl := ternv1.NewCoordinatorServiceClient(conn)
	if err := until(ctx, exited, 60*time.Second, "the coordinator to lead", func(ctx context.Context) bool {
		_, err := cl.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
		return err == nil
	}); err != nil {
		return err
	}

	fmt.Printf("machine: %d CPUs (GOMAXPROCS %d), %s; coordinator pid %d, data in %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), pid, dir)
	fmt.Printf("agents %d, jobs %d x %d ranks, %d steps every %v\n\n", nAgents, nJobs, nAgents/nJobs, steps, stepEvery)

	// Registration.
	lat := &latencies{}
	actx, stopAgents := context.WithCancel(ctx)
	defer stopAgents()
	agents := make([]*agent, nAgents)
	var wg sync.WaitGroup
	t0 := time.Now()
	sem := make(chan struct{}, 64)
	for i := range agents {
		a := &agent{name: fmt.Sprintf("a%04d", i), addr: addr, fakePort: 20000 + i, lat: lat, every: stepEvery}
		agents[i] = a
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			err := a.connect(actx)
			<-sem
			if err != nil {
				a.fail(err)
				return
			}
			a.run(actx)
			a.conn.Close()
		}()
	}
	defer wg.Wait()
	defer stopAgents()
	if err := until(ctx, exited, 5*time.Minute, "every agent to connect", func(ctx context.Context) bool {
		resp, err := cl.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
		if err != nil {
			return false
		}
		n := 0
		for _, w := range resp.Workers {
			if w.Connected {
				n++
			}
		}
		return n == nAgents
	}); err != nil {
		return errors.Join(err, firstFailure(agents))
	}
	regTime := time.Since(t0)
	fmt.Printf("registration: %d agents registered and attached in %v (%.0f/s)\n", nAgents, regTime.Round(time.Millisecond), float64(nAgents)/regTime.Seconds())

	// Idle: heartbeats only.
	lat.reset()
	if _, err := insideStats(ctx, cmd.Process, stats); err != nil {
		return err
	}
	idleCPU, err := cpuOver(ctx, pid, idle)
	if err != nil {
		return err
	}
	idleLat := lat.reset()
	idleInside, err := insideStats(ctx, cmd.Process, stats)
	if err != nil {
		return err
	}
	fmt.Printf("idle (%v, heartbeats only): coordinator %s\n  heartbeat ack at the agents: %s\n  heartbeat handling in the coordinator: %s\n", idle, idleCPU, idleLat, idleInside)

	// Jobs.
	t0 = time.Now()
	names := make([]string, nJobs)
	for j := range nJobs {
		names[j] = fmt.Sprintf("bench-%d", j)
		doc := benchSpec(names[j], nAgents/nJobs, steps)
		if _, err := cl.ApplyJob(ctx, &ternv1.ApplyJobRequest{Spec: []byte(doc)}); err != nil {
			return fmt.Errorf("apply %s: %w", names[j], err)
		}
	}
	applied := time.Since(t0)
	if err := until(ctx, exited, 2*time.Minute, "every job to run", func(ctx context.Context) bool {
		for _, n := range names {
			resp, err := cl.GetJob(ctx, &ternv1.GetJobRequest{Name: n})
			if err != nil || resp.Job.Phase != ternv1.JobPhase_JOB_PHASE_RUNNING {
				return false
			}
		}
		return true
	}); err != nil {
		return errors.Join(err, firstFailure(agents))
	}
	scheduled := time.Since(t0)
	var lastOrder time.Duration
	for _, a := range agents {
		if ns := a.orderAt.Load(); ns > 0 {
			lastOrder = max(lastOrder, time.Unix(0, ns).Sub(t0))
		}
	}
	fmt.Printf("schedule %d ranks in %d jobs: ApplyJob x%d returned after %v, every StartRank received after %v, every job Running after %v\n",
		nAgents, nJobs, nJobs, applied.Round(time.Millisecond), lastOrder.Round(time.Millisecond), scheduled.Round(time.Millisecond))

	// Steady state with step reports: measure over most of the run.
	lat.reset()
	if _, err := insideStats(ctx, cmd.Process, stats); err != nil {
		return err
	}
	window := time.Duration(steps)*stepEvery - 5*stepEvery
	if window < 5*time.Second {
		window = 5 * time.Second
	}
	busyCPU, err := cpuOver(ctx, pid, window)
	if err != nil {
		return err
	}
	busyLat := lat.reset()
	busyInside, err := insideStats(ctx, cmd.Process, stats)
	if err != nil {
		return err
	}
	fmt.Printf("running (%v, %d step reports/s): coordinator %s\n  heartbeat ack at the agents: %s\n  heartbeat handling in the coordinator: %s\n", window.Round(time.Second), int(float64(nAgents)/stepEvery.Seconds()), busyCPU, busyLat, busyInside)
	var usage syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &usage)

	if err := until(ctx, exited, 2*time.Minute, "every job to succeed", func(ctx context.Context) bool {
		for _, n := range names {
			resp, err := cl.GetJob(ctx, &ternv1.GetJobRequest{Name: n})
			if err != nil || resp.Job.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}
	fmt.Printf("every job succeeded at step %d\n", steps)

	// Detection: jobs of one rank each, placed on some agents, which then
	// die at once (each at its own point of its heartbeat cycle): even
	// victims' connections close (a process that died), odd victims fall
	// silent with their connection open (a hung process, a partition).
	const victims = 6
	var vjobs []string
	for v := range victims {
		vjobs = append(vjobs, fmt.Sprintf("victim-%d", v))
		if _, err := cl.ApplyJob(ctx, &ternv1.ApplyJobRequest{Spec: []byte(benchSpec(vjobs[v], 1, 1_000_000))}); err != nil {
			return err
		}
	}
	lost := make([]*agent, victims)
	if err := until(ctx, exited, time.Minute, "the victims' jobs to run", func(ctx context.Context) bool {
		for v, name := range vjobs {
			resp, err := cl.GetJob(ctx, &ternv1.GetJobRequest{Name: name})
			if err != nil || resp.Job.Phase != ternv1.JobPhase_JOB_PHASE_RUNNING || resp.Job.CommittedStep < 2 || len(resp.Job.Ranks) != 1 {
				return false
			}
			i := slices.IndexFunc(agents, func(a *agent) bool { return a.name == resp.Job.Ranks[0].Worker })
			if i < 0 {
				return false
			}
			lost[v] = agents[i]
		}
		return true
	}); err != nil {
		return err
	}
	killed := time.Now()
	sinceBeat := make([]time.Duration, victims)
	for v, a := range lost {
		sinceBeat[v] = killed.Sub(time.Unix(0, a.lastBeat.Load()))
		if v%2 == 0 {
			a.kill()
		} else {
			a.hang()
		}
	}
	gone := make([]time.Duration, victims)
	reacted := make([]time.Duration, victims)
	reaction := make([]string, victims)
	if err := until(ctx, exited, time.Minute, "the coordinator to notice", func(ctx context.Context) bool {
		workers, werr := cl.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
		done := true
		for v, a := range lost {
			if gone[v] == 0 && werr == nil && !slices.ContainsFunc(workers.Workers, func(w *ternv1.Worker) bool { return w.Name == a.name }) {
				gone[v] = time.Since(killed)
			}
			if reacted[v] == 0 {
				resp, err := cl.GetJob(ctx, &ternv1.GetJobRequest{Name: vjobs[v]})
				if err == nil && resp.Job.Phase != ternv1.JobPhase_JOB_PHASE_RUNNING {
					reacted[v] = time.Since(killed)
					reaction[v] = strings.TrimPrefix(resp.Job.Phase.String(), "JOB_PHASE_") + ": " + resp.Job.Reason
				}
			}
			done = done && gone[v] > 0 && reacted[v] > 0
		}
		return done
	}); err != nil {
		return err
	}
	for v, a := range lost {
		how := "connection closed"
		if v%2 == 1 {
			how = "fell silent, connection open,"
		}
		fmt.Printf("dead worker %s (%s %v after its last heartbeat): dropped from the registry after %v, its job left Running after %v (%s)\n",
			a.name, how, sinceBeat[v].Round(time.Millisecond), gone[v].Round(time.Millisecond), reacted[v].Round(time.Millisecond), reaction[v])
	}
	fmt.Printf("agents' process (all %d agents, gRPC clients): %.1f CPU-seconds over the run\n", nAgents,
		time.Duration(usage.Utime.Nano()+usage.Stime.Nano()).Seconds())
	return firstFailure(agents)
}

// benchSpec is a job of dp data-parallel ranks of the tiny preset. Its
// data section is never read: the ranks are fake.
func benchSpec(name string, dp, steps int) string {
	return fmt.Sprintf(`apiVersion: tern/v1
kind: TrainingJob
metadata: {name: %s}
spec:
  steps: %d
  model: {preset: tiny}
  data: {kind: dir, path: /nonexistent, include: ["*.go"]}
  parallel: {data: %d}
  eval: {everySteps: 0}
  restartPolicy: {maxRestarts: 0}
`, name, steps, dp)
}

// agent is one fake worker: a gRPC connection, a registration, a Session
// stream with heartbeats, and fake ranks.
type agent struct {
	name     string
	addr     string
	fakePort int
	lat      *latencies
	every    time.Duration
	killed   atomic.Bool
	hung     atomic.Bool

	conn    *grpc.ClientConn
	stream  ternv1.CoordinatorService_SessionClient
	beat    time.Duration
	out     chan *ternv1.SessionRequest
	orderAt atomic.Int64 // unix ns of the first StartRank
	// lastBeat is when the last heartbeat went out (unix ns).
	lastBeat atomic.Int64

	mu   sync.Mutex
	sent []time.Time // heartbeats awaiting their acknowledgement
	// jobSteps is the steps of the job of the last StartRank.
	jobSteps int
	err      error
	killCtx  context.CancelFunc
}

func (a *agent) fail(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err == nil {
		a.err = fmt.Errorf("agent %s: %w", a.name, err)
	}
}

func firstFailure(agents []*agent) error {
	for _, a := range agents {
		a.mu.Lock()
		err := a.err
		a.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// connect registers and opens the session.
func (a *agent) connect(ctx context.Context) error {
	conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	a.conn = conn
	cl := ternv1.NewCoordinatorServiceClient(conn)
	reg, err := cl.RegisterWorker(ctx, &ternv1.RegisterWorkerRequest{Name: a.name, Host: "127.0.0.1", Slots: 1, Pid: int32(os.Getpid())})
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	a.killCtx = cancel
	stream, err := cl.Session(sctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Hello{Hello: &ternv1.SessionHello{Worker: a.name, SessionId: reg.SessionId}}}); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	if first.GetAccepted() == nil {
		return fmt.Errorf("session answered with %T", first.Msg)
	}
	a.stream, a.beat = stream, reg.HeartbeatInterval.AsDuration()
	a.out = make(chan *ternv1.SessionRequest, 256)
	return nil
}

// kill drops the connection at once, without a goodbye: what the
// coordinator sees when the worker's machine dies.
func (a *agent) kill() {
	a.killed.Store(true)
	a.conn.Close()
	a.killCtx()
}

// hang makes the agent send nothing more while its connection stays
// open, as a stopped (SIGSTOP) or cut-off worker.
func (a *agent) hang() {
	a.killed.Store(true)
	a.hung.Store(true)
}

// run sends heartbeats and reports until ctx ends, and carries out the
// coordinator's orders with fake ranks.
func (a *agent) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go a.send(ctx)
	var ranks []context.CancelFunc
	defer func() {
		for _, stop := range ranks {
			stop()
		}
	}()
	for {
		msg, err := a.stream.Recv()
		if err != nil {
			if ctx.Err() == nil && !a.killed.Load() {
				a.fail(fmt.Errorf("session ended: %w", err))
			}
			return
		}
		switch m := msg.Msg.(type) {
		case *ternv1.SessionResponse_Accepted:
			a.mu.Lock()
			if len(a.sent) > 0 {
				a.lat.add(time.Since(a.sent[0]))
				a.sent = a.sent[1:]
			}
			a.mu.Unlock()
		case *ternv1.SessionResponse_StartRank:
			a.orderAt.CompareAndSwap(0, time.Now().UnixNano())
			s := m.StartRank
			var spec struct {
				Spec struct{ Steps int } `json:"spec"`
			}
			if err := json.Unmarshal(s.SpecJson, &spec); err != nil || spec.Spec.Steps < 1 {
				a.fail(fmt.Errorf("StartRank of %s: spec without steps (%v)", s.Job, err))
				return
			}
			a.mu.Lock()
			a.jobSteps = spec.Spec.Steps
			a.mu.Unlock()
			a.report(ctx, s.Job, s.Attempt, s.Rank, &ternv1.RankReport{Event: &ternv1.RankReport_Listening{Listening: &ternv1.RankListening{Address: "127.0.0.1:" + strconv.Itoa(a.fakePort)}}})
		case *ternv1.SessionResponse_Peers:
			p := m.Peers
			rank := int32(slices.Index(p.Addresses, "127.0.0.1:"+strconv.Itoa(a.fakePort)))
			if rank < 0 {
				a.fail(fmt.Errorf("peer list of %s without this agent", p.Job))
				return
			}
			rctx, stop := context.WithCancel(ctx)
			ranks = append(ranks, stop)
			a.mu.Lock()
			steps := a.jobSteps
			a.mu.Unlock()
			go a.fakeRank(rctx, p.Job, p.Attempt, rank, steps)
		case *ternv1.SessionResponse_StopRanks:
			// Fake ranks end by themselves; nothing to stop.
		}
	}
}

// fakeRank reports a rank's life without training: started, a step
// every interval, finished.
func (a *agent) fakeRank(ctx context.Context, job string, attempt, rank int32, steps int) {
	a.report(ctx, job, attempt, rank, &ternv1.RankReport{Event: &ternv1.RankReport_Started{Started: &ternv1.RankStarted{Params: 1}}})
	t := time.NewTicker(a.every)
	defer t.Stop()
	for s := 1; s <= steps; s++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.report(ctx, job, attempt, rank, &ternv1.RankReport{Event: &ternv1.RankReport_Step{Step: &ternv1.RankStep{Step: int64(s), Loss: 1 / float64(s), StepMs: float64(a.every.Milliseconds())}}})
	}
	a.report(ctx, job, attempt, rank, &ternv1.RankReport{Event: &ternv1.RankReport_Finished{Finished: &ternv1.RankFinished{Summary: &ternv1.TrainSummary{Steps: int64(steps), FinalLoss: 1 / float64(steps), Params: 1}}}})
}

func (a *agent) report(ctx context.Context, job string, attempt, rank int32, r *ternv1.RankReport) {
	r.Job, r.Attempt, r.Rank = job, attempt, rank
	select {
	case a.out <- &ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Report{Report: r}}:
	case <-ctx.Done():
	}
}

// send is the stream's only sender: heartbeats at the coordinator's
// interval (the first at a random phase, as agents started at different
// times would be), and reports.
func (a *agent) send(ctx context.Context) {
	hb := &ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Heartbeat{Heartbeat: &ternv1.SessionHeartbeat{}}}
	phase := time.Duration(a.fakePort%1000) * a.beat / 1000
	next := time.NewTimer(phase)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-a.out:
			if a.hung.Load() {
				continue
			}
			if a.stream.Send(m) != nil {
				return
			}
		case <-next.C:
			if a.hung.Load() {
				continue
			}
			now := time.Now()
			a.mu.Lock()
			a.sent = append(a.sent, now)
			a.mu.Unlock()
			a.lastBeat.Store(now.UnixNano())
			if a.stream.Send(hb) != nil {
				return
			}
			next.Reset(a.beat)
		}
	}
}

// latencies collects heartbeat round trips.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// reset returns a summary of what was collected and starts afresh.
func (l *latencies) reset() string {
	l.mu.Lock()
	d := l.d
	l.d = nil
	l.mu.Unlock()
	if len(d) == 0 {
		return "no samples"
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	ms := func(x time.Duration) string { return fmt.Sprintf("%.1f ms", float64(x.Microseconds())/1000) }
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s over %d heartbeats", ms(q(0.5)), ms(q(0.9)), ms(q(0.99)), ms(d[len(d)-1]), len(d))
}

// cpuOver measures a process's CPU time over d.
func cpuOver(ctx context.Context, pid int, d time.Duration) (string, error) {
	c0, err := procCPU(pid)
	if err != nil {
		return "", err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(d):
	}
	c1, err := procCPU(pid)
	if err != nil {
		return "", err
	}
	wall := time.Since(t0)
	cores := (c1 - c0).Seconds() / wall.Seconds()
	return fmt.Sprintf("%.1f%% of one core (%.1f%% of the machine's %d)", 100*cores, 100*cores/float64(runtime.NumCPU()), runtime.NumCPU()), nil
}

// procCPU is a process's user+system CPU time from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("coordinator CPU: %w", err)
	}
	// The command name (field 2) may hold spaces; fields after it are
	// counted from its closing parenthesis.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("coordinator CPU: /proc/%d/stat too short", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("coordinator CPU: /proc/%d/stat: %v %v", pid, err1, err2)
	}
	// Linux reports in USER_HZ, 100 per second on every architecture Go
	// supports there.
	const userHZ = 100
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// until polls cond until it holds, the coordinator exits, or limit passes.
func until(ctx context.Context, exited <-chan error, limit time.Duration, what string, cond func(context.Context) bool) error {
	deadline := time.Now().Add(limit)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok := cond(cctx)
		cancel()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v", what, limit)
		}
		select {
		case err := <-exited:
			return fmt.Errorf("waiting for %s: the coordinator exited: %v", what, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
