package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/ternml/tern/pkg/auth"
	"github.com/ternml/tern/pkg/coordinator/store"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Defaults for Options.
const (
	DefaultListen = "127.0.0.1:7070"
	// DefaultHeartbeatInterval and DefaultLeaseTTL: a worker that stops
	// heartbeating is declared lost within 5 s (ARCHITECTURE.md, control
	// plane).
	DefaultHeartbeatInterval = time.Second
	DefaultLeaseTTL          = 5 * time.Second
	// DefaultLeaderTTL is, with an external etcd cluster, how long a dead
	// leader keeps leadership before a standby takes over. It must be
	// well under the workers' lease: the workers reattach to the new
	// leader only once it leads, and one whose lease ran out meanwhile is
	// lost with its ranks. 2 s is etcd's minimum lease with its default
	// raft timings. With the embedded member there is no standby (a
	// restart ends its dead predecessor's session at once), so
	// DefaultEmbeddedLeaderTTL applies.
	DefaultLeaderTTL = 2 * time.Second
	// DefaultEmbeddedLeaderTTL is the leader session's TTL on the embedded
	// member. Nothing waits on it (no standby; a restart revokes the dead
	// session), so it is long enough to ride out a starved process: at a
	// load average of 15 on 2 cores, 5 s sessions lapsed between renewals
	// and the coordinator stopped with "leadership lost".
	DefaultEmbeddedLeaderTTL = 15 * time.Second
	// DefaultMissHeartbeats heartbeat intervals without a word from an
	// attached worker make it lost (Options.MissWindow): 3 s by default,
	// so a hung worker is dropped with 2 s to spare against the 5 s
	// target, while two delayed heartbeats in a row are still tolerated.
	DefaultMissHeartbeats = 3
	// DefaultStartTimeout bounds how long an attempt's ranks may take to
	// start: tokenizing a corpus the first time is the slow part.
	DefaultStartTimeout = 10 * time.Minute
	// DefaultRecoveryTimeout bounds a recovery.
	DefaultRecoveryTimeout = 5 * time.Minute
)

// Internal limits.
const (
	// etcdTimeout bounds every etcd request the loop makes; a write that
	// cannot finish in this time means etcd is unwell and the loop stops.
	etcdTimeout = 10 * time.Second
	// resignTimeout bounds the resignation on the way out.
	resignTimeout = 2 * time.Second
	// maxSpecBytes bounds an applied document. The resolved spec must also
	// fit one etcd value (store.DefaultMaxValueBytes).
	maxSpecBytes = 1 << 20
)

// Options configures a Coordinator. The zero value is usable once DataDir
// or EtcdEndpoints is set.
type Options struct {
	// Listen is the gRPC address for ternctl and workers (default
	// DefaultListen). Only loopback addresses are accepted unless Auth
	// sets both TLS and a join token.
	Listen string
	// DataDir holds the embedded etcd member (DataDir/etcd) and the jobs'
	// logs (DataDir/logs). Required unless EtcdEndpoints is set.
	DataDir string
	// LogDir is where the ranks' logs and step metrics are kept (default
	// DataDir/logs; with neither set, a new temporary directory). Logs
	// stay on this coordinator's disk: a coordinator that takes over
	// serves only what reaches it from then on.
	LogDir string
	// EtcdEndpoints uses an external etcd cluster instead of the embedded
	// member; several coordinators may share one, and one of them leads.
	EtcdEndpoints []string
	// Name is what this coordinator campaigns as, shown to clients of the
	// coordinators standing by (default: the bound listen address).
	Name string
	// HeartbeatInterval is how often workers heartbeat; LeaseTTL how long a
	// worker's registration outlives its last heartbeat (defaults above).
	HeartbeatInterval, LeaseTTL time.Duration
	// MissWindow is how long the leader waits, from the last message on
	// a worker's attached session, before it declares the worker lost and
	// revokes its lease (default DefaultMissHeartbeats heartbeat
	// intervals, and below LeaseTTL: the lease is the backstop for
	// workers not attached to this leader). It must be more than one
	// heartbeat interval and less than LeaseTTL.
	MissWindow time.Duration
	// StartTimeout and RecoveryTimeout are the job state machine's
	// deadlines (job.TimerStart, job.TimerRecovery).
	StartTimeout, RecoveryTimeout time.Duration
	// Etcd configures the embedded member; Store the etcd key space.
	Etcd  store.EmbedOptions
	Store store.Options
	// Logger receives the coordinator's logs (default: discarded).
	Logger *slog.Logger
	// Auth secures the gRPC server with TLS and the join token
	// (pkg/auth); with both, Listen may be any address.
	Auth *auth.Server
	// ServerOptions are added to the gRPC server's, e.g. interceptors
	// that count reports for /metrics.
	ServerOptions []grpc.ServerOption
}

func (o *Options) setDefaults() error {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.Store.LeaderTTL == 0 {
		o.Store.LeaderTTL = DefaultEmbeddedLeaderTTL
		if len(o.EtcdEndpoints) > 0 {
			o.Store.LeaderTTL = DefaultLeaderTTL
		}
	}
	if o.MissWindow == 0 {
		o.MissWindow = DefaultMissHeartbeats * o.HeartbeatInterval
		if o.MissWindow >= o.LeaseTTL {
			o.MissWindow = o.LeaseTTL - o.HeartbeatInterval/2
		}
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.RecoveryTimeout == 0 {
		o.RecoveryTimeout = DefaultRecoveryTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.LogDir == "" && o.DataDir != "" {
		o.LogDir = filepath.Join(o.DataDir, "logs")
	}
	switch {
	case o.DataDir == "" && len(o.EtcdEndpoints) == 0:
		return errors.New("coordinator: no data directory and no etcd endpoints: give a data directory for the embedded etcd, or the endpoints of an etcd cluster")
	case o.HeartbeatInterval < 0 || o.LeaseTTL < 0 || o.StartTimeout < 0 || o.RecoveryTimeout < 0:
		return errors.New("coordinator: heartbeat interval, lease TTL and timeouts must be positive")
	case o.LeaseTTL < 2*o.HeartbeatInterval:
		return fmt.Errorf("coordinator: lease TTL %v must be at least two heartbeat intervals (%v), so that one late heartbeat does not lose a worker", o.LeaseTTL, o.HeartbeatInterval)
	case o.MissWindow <= o.HeartbeatInterval || o.MissWindow >= o.LeaseTTL:
		return fmt.Errorf("coordinator: miss window %v must be more than one heartbeat interval (%v) and less than the lease TTL (%v)", o.MissWindow, o.HeartbeatInterval, o.LeaseTTL)
	}
	return o.checkListen()
}

// checkLoopback refuses a listen address beyond this machine: without TLS
// and a join token anyone who can reach the port could submit jobs or pose
// as a worker.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("coordinator: listen address %q: %w (want host:port, e.g. %s)", addr, err, DefaultListen)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("coordinator: listen address %q is not a loopback address: serving other machines needs TLS and a join token (Options.Auth, pkg/auth); listen on 127.0.0.1:PORT", addr)
}

// Coordinator is tern's control-plane server: it keeps jobs and the worker
// registry in etcd, leads (or stands by) through an etcd election, places
// ranks on workers and drives each job's state machine.
type Coordinator struct {
	opts  Options
	lis   net.Listener
	views *views
	logs  *logStore
	// loop is set while this coordinator leads; the gRPC handlers read it.
	loop atomic.Pointer[loop]
	// st is set once etcd is open, for the handlers of a standby.
	st atomic.Pointer[store.Store]
}

// New checks opts and binds the listen address, so a taken port fails here
// and Addr reports the port bound for ":0". Run serves.
func New(opts Options) (*Coordinator, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("coordinator: listen on %s: %w", opts.Listen, err)
	}
	if opts.Name == "" {
		opts.Name = lis.Addr().String()
	}
	if opts.LogDir == "" {
		if opts.LogDir, err = os.MkdirTemp("", "tern-coordinator-logs-"); err != nil {
			lis.Close()
			return nil, fmt.Errorf("coordinator: log directory: %w", err)
		}
	}
	logs, err := newLogStore(opts.LogDir)
	if err != nil {
		lis.Close()
		return nil, err
	}
	return &Coordinator{opts: opts, lis: lis, views: newViews(), logs: logs}, nil
}

// Addr is the bound gRPC address.
func (c *Coordinator) Addr() string { return c.lis.Addr().String() }

// Run serves until ctx ends (it then returns nil) or something fatal
// happens: etcd fails to start or answer, leadership is lost, a write of
// job state fails. It starts the embedded etcd member (unless external
// endpoints were given), serves gRPC at once (answering UNAVAILABLE while
// it stands by), campaigns for leadership, restores every job from etcd
// and runs the loop that drives them. Jobs keep running on the workers
// when Run returns; a coordinator started on the same data picks them up.
func (c *Coordinator) Run(ctx context.Context) (err error) {
	defer c.lis.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := c.opts.Logger

	st, closeStore, err := c.openStore(ctx)
	if err != nil {
		return err
	}
	defer closeStore()
	c.st.Store(st)

	srv := grpc.NewServer(c.serverOptions()...)
	ternv1.RegisterCoordinatorServiceServer(srv, &service{c: c})
	served := make(chan error, 1)
	go func() {
		// Serve returns early only if the listener fails; then stop.
		served <- srv.Serve(c.lis)
		cancel()
	}()
	defer func() {
		srv.Stop()
		if serr := <-served; serr != nil && err == nil {
			err = fmt.Errorf("coordinator: serve gRPC on %s: %w", c.Addr(), serr)
		}
	}()

	log.Info("campaigning for leadership", "name", c.opts.Name, "addr", c.Addr())
	leader, err := st.Campaign(ctx, c.opts.Name)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("coordinator: %w", err)
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), resignTimeout)
		defer rcancel()
		if rerr := leader.Resign(rctx); rerr != nil {
			log.Warn("resign leadership", "err", rerr)
		}
	}()
	log.Info("leading", "name", c.opts.Name, "fence", leader.Fence())

	l, err := newLoop(ctx, leader, c.opts, c.views, c.logs)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	c.loop.Store(l)
	defer c.loop.Store(nil)
	if err := l.run(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	// An etcd request cut short by the shutdown is not a failure.
	return nil
}

// openStore starts the embedded member or connects to the external
// cluster, and returns how to close whatever it opened.
func (c *Coordinator) openStore(ctx context.Context) (*store.Store, func(), error) {
	endpoints := c.opts.EtcdEndpoints
	closeEtcd := func() {}
	if len(endpoints) == 0 {
		dir := filepath.Join(c.opts.DataDir, "etcd")
		e, err := store.StartEmbedded(ctx, dir, c.opts.Etcd)
		if err != nil {
			return nil, nil, fmt.Errorf("coordinator: %w", err)
		}
		endpoints = e.Endpoints()
		closeEtcd = func() { e.Close() }
	}
	st, err := store.Open(ctx, endpoints, c.opts.Store)
	if err != nil {
		closeEtcd()
		return nil, nil, fmt.Errorf("coordinator: %w", err)
	}
	if len(c.opts.EtcdEndpoints) == 0 {
		// A candidate key in the member just started on our own data
		// directory is a dead predecessor's (killed without resigning).
		// Waiting out its TTL would keep the workers from the leader for
		// as long as their own leases last, and they would be lost.
		n, err := st.RevokeCandidates(ctx)
		if err != nil {
			st.Close()
			closeEtcd()
			return nil, nil, fmt.Errorf("coordinator: %w", err)
		}
		if n > 0 {
			c.opts.Logger.Info("ended the leadership of a coordinator that stopped without resigning", "sessions", n)
		}
	}
	return st, func() { st.Close(); closeEtcd() }, nil
}
