package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ternml/tern/pkg/auth"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Defaults for Config.
const (
	DefaultHost         = "127.0.0.1"
	DefaultDrainTimeout = 2 * time.Minute
)

// Reconnect pacing: quick at first, so a coordinator restart costs little,
// then backing off so a coordinator that is down is not hammered.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 5 * time.Second
	// flushTimeout bounds the wait, on shutdown, for the last reports to
	// reach the coordinator.
	flushTimeout = 5 * time.Second
	// minHeartbeat guards against a coordinator asking for a busy loop.
	minHeartbeat = 50 * time.Millisecond
)

// Config configures an Agent.
type Config struct {
	// Coordinator is the coordinator's address, host:port. Only loopback
	// addresses are accepted unless Auth sets both TLS and a join token.
	Coordinator string
	// Name identifies the worker to the coordinator (letters, digits, '.',
	// '_', '-'); unique among its workers.
	Name string
	// Host is where this worker's ranks accept their peers (default
	// DefaultHost); ranks listen on Host:0.
	Host string
	// Slots is how many ranks the worker runs at once (default 1).
	Slots int
	// Labels are failure domains, e.g. node and rack, for placement.
	Labels map[string]string
	// DrainTimeout bounds how long Run waits, once its ctx ends, for the
	// ranks to stop (each after its current step) and report.
	DrainTimeout time.Duration
	// Logger receives the agent's logs (default: discarded).
	Logger *slog.Logger
	// Auth is how the agent authenticates to the coordinator: TLS and the
	// join token (pkg/auth); nil dials in plaintext, on loopback only.
	Auth *auth.Client
	// Observe, if set, is called with every report of a rank as it is
	// made (for /metrics), under the agent's lock: it must not block.
	Observe func(*ternv1.RankReport)
}

// Agent registers a worker with the coordinator, keeps its session, and
// runs the ranks the coordinator assigns to it.
type Agent struct {
	cfg Config
	log *slog.Logger

	// quit is closed when Run winds down: sessions flush and close, no
	// new ones open.
	quit     chan struct{}
	quitOnce sync.Once
	// lastContact is when the coordinator was last heard from (unix ns).
	lastContact atomic.Int64

	// wg counts rank goroutines.
	wg sync.WaitGroup
	// bg counts the goroutines that orders start besides ranks (closing
	// a finished job's snapshot stagers). Orders arrive on the session
	// goroutine until Run's end, so Run waits for bg only once serve has
	// returned: an Add racing a Wait on wg, while it drains, would be a
	// WaitGroup misuse.
	bg sync.WaitGroup

	mu sync.Mutex
	// ranks are the ranks this worker runs or ran and still reports;
	// the coordinator's StopRanks lets it forget a finished one.
	ranks map[rankKey]*rankRun
	// draining is set once Run's ctx ended: new ranks are refused.
	draining bool
	// outbox is the current session's queue to the coordinator (nil
	// without a session); endSession ends that session.
	outbox     chan *ternv1.SessionRequest
	endSession context.CancelCauseFunc

	// snaps keeps each job's in-memory snapshots across its attempts
	// (snapshots.go); snapMu guards the map.
	snapMu sync.Mutex
	snaps  map[string]*jobSnaps
}

// New checks cfg and returns an Agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.Host == "" {
		cfg.Host = DefaultHost
	}
	if cfg.Slots == 0 {
		cfg.Slots = 1
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.Name == "":
		return nil, errors.New("worker: no name: give each worker a name unique among the coordinator's workers")
	case cfg.Slots < 0:
		return nil, fmt.Errorf("worker: %d slots: a worker runs at least 1 rank", cfg.Slots)
	case cfg.DrainTimeout < 0:
		return nil, fmt.Errorf("worker: drain timeout %v is negative", cfg.DrainTimeout)
	}
	if err := cfg.checkCoordinator(); err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, log: cfg.Logger.With("worker", cfg.Name), quit: make(chan struct{}), ranks: map[rankKey]*rankRun{}}, nil
}

// checkLoopback refuses a coordinator beyond this machine: the session
// would carry job tokens in the clear.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("worker: coordinator address %q: %w (want host:port, e.g. 127.0.0.1:7070)", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("worker: coordinator address %q is not a loopback address: reaching a coordinator on another machine needs TLS and a join token (Config.Auth, pkg/auth)", addr)
}

// Run registers with the coordinator and serves it until ctx ends, then
// drains: it stops every rank (each after its current step), waits up to
// DrainTimeout for them, sends their last reports and closes the session.
// It reconnects when the coordinator goes away and registers again when
// the coordinator has forgotten it. It returns an error only if the
// coordinator refuses the registration itself (a bad name, no slots).
func (a *Agent) Run(ctx context.Context) error {
	conn, err := grpc.NewClient(a.cfg.Coordinator, a.dialOptions()...)
	if err != nil {
		return fmt.Errorf("worker: coordinator %s: %w", a.cfg.Coordinator, err)
	}
	defer conn.Close()
	client := ternv1.NewCoordinatorServiceClient(conn)

	// Sessions outlive ctx until the ranks' last reports are out.
	sctx, stopSessions := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSessions()
	served := make(chan error, 1)
	go func() { served <- a.serve(sctx, client) }()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-served:
		served = nil
	}
	a.mu.Lock()
	a.draining = true
	a.mu.Unlock()
	a.stopAll(errors.New("the worker is shutting down"))
	if !a.waitRanks(a.cfg.DrainTimeout) {
		a.log.Warn("ranks did not stop within the drain timeout", "timeout", a.cfg.DrainTimeout)
	}
	a.quitOnce.Do(func() { close(a.quit) })
	if served != nil {
		select {
		case <-served:
			served = nil
		case <-time.After(flushTimeout):
			a.log.Warn("last reports not confirmed sent", "timeout", flushTimeout)
		}
	}
	stopSessions()
	if served != nil {
		<-served
	}
	a.bg.Wait()
	return runErr
}

// serve keeps a session with the coordinator: register, open the stream,
// and when it ends, reconnect (registering again if the coordinator
// forgot this worker) until quit.
func (a *Agent) serve(ctx context.Context, client ternv1.CoordinatorServiceClient) error {
	var reg *ternv1.RegisterWorkerResponse
	backoff := minBackoff
	for !a.quitting() {
		if reg == nil {
			resp, err := client.RegisterWorker(ctx, &ternv1.RegisterWorkerRequest{
				Name: a.cfg.Name, Host: a.cfg.Host, Slots: int32(a.cfg.Slots), Labels: a.cfg.Labels, Pid: int32(os.Getpid()),
			})
			switch {
			case status.Code(err) == codes.InvalidArgument:
				return fmt.Errorf("worker: the coordinator refused the registration: %s", status.Convert(err).Message())
			case status.Code(err) == codes.Unauthenticated:
				return fmt.Errorf("worker: the coordinator refused this worker's credentials: %s", status.Convert(err).Message())
			case err != nil:
				a.log.Debug("register", "err", err)
			default:
				// The coordinator counts whatever ran under an earlier
				// registration as lost; stop it before it touches peers.
				a.stopAll(errors.New("the worker registered again, so the coordinator has counted its earlier ranks as lost"))
				reg = resp
				a.touch()
				a.log.Info("registered", "coordinator", a.cfg.Coordinator)
			}
		}
		if reg != nil {
			accepted, err := a.session(ctx, client, reg.SessionId)
			if a.quitting() {
				return nil
			}
			if accepted {
				backoff = minBackoff
			}
			if status.Code(err) == codes.FailedPrecondition {
				a.log.Info("the coordinator no longer knows this session; registering again", "err", status.Convert(err).Message())
				reg = nil
				continue
			}
			a.log.Debug("session ended", "err", err)
			// Past the lease the coordinator has declared this worker
			// lost: its ranks must not go on acting on their own.
			if ttl := reg.LeaseTtl.AsDuration(); ttl > 0 && a.sinceContact() > ttl {
				a.stopAll(fmt.Errorf("no contact with the coordinator for more than the %v lease", ttl))
				reg = nil
			}
		}
		wait := backoff
		if reg != nil {
			// The registration lasts only its lease: retry at the
			// heartbeat pace, so a coordinator that restarts or takes
			// over finds this worker before the lease runs out.
			if hb := reg.HeartbeatInterval.AsDuration(); hb > 0 {
				wait = min(wait, max(hb, minHeartbeat))
			}
		}
		select {
		case <-time.After(wait):
		case <-a.quit:
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, maxBackoff)
	}
	return nil
}

func (a *Agent) quitting() bool {
	select {
	case <-a.quit:
		return true
	default:
		return false
	}
}

func (a *Agent) touch() { a.lastContact.Store(time.Now().UnixNano()) }

func (a *Agent) sinceContact() time.Duration {
	return time.Since(time.Unix(0, a.lastContact.Load()))
}

// waitRanks waits up to d for every rank goroutine to return.
func (a *Agent) waitRanks(d time.Duration) bool {
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// Running is the number of ranks running now on this worker.
func (a *Agent) Running() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, rr := range a.ranks {
		if !rr.done {
			n++
		}
	}
	return n
}
