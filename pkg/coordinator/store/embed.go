package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/ternml/tern/pkg/atomicfile"
)

// Defaults for an embedded member.
const (
	defaultMemberName   = "tern"
	defaultStartTimeout = 60 * time.Second
	defaultLogLevel     = "warn"
	// defaultCompactionRetention keeps an hour of history: enough for a
	// watcher that reconnects after a coordinator restart to resume from its
	// last revision, small enough that the backend does not grow with every
	// heartbeat-driven write forever.
	defaultCompactionRetention = time.Hour
	// portAttempts bounds the retries when a chosen port is taken between
	// choosing it and etcd binding it.
	portAttempts = 8
	// logFileName is where an embedded member logs inside its data directory.
	logFileName = "etcd.log"
	// urlsFileName records the URLs a member served on, so a restart reuses
	// them when they are still free.
	urlsFileName = "member-urls.json"
)

// EmbedOptions configures an embedded etcd member. The zero value starts a
// single-member cluster on free loopback ports that logs warnings to
// DIR/etcd.log.
type EmbedOptions struct {
	// Name is the member name (default "tern"). It must match this member's
	// entry in InitialCluster.
	Name string
	// ClientURL and PeerURL are where the member serves clients and peers,
	// e.g. http://127.0.0.1:2379. Empty: a free loopback port is chosen, and
	// chosen again if another process takes it before etcd binds it.
	ClientURL, PeerURL string
	// InitialCluster lists every member of a new cluster as
	// "name=peerURL,name=peerURL". Empty: this member alone. It is read only
	// when DIR holds no data yet; afterwards membership comes from DIR.
	InitialCluster string

	// LogFile receives etcd's logs (default DIR/etcd.log). DiscardLogs drops
	// them instead. LogLevel is one of debug, info, warn, error (default warn).
	LogFile     string
	DiscardLogs bool
	LogLevel    string

	// StartTimeout bounds the wait for the member to be ready to serve, which
	// for a multi-member cluster includes waiting for a quorum (default 60 s).
	StartTimeout time.Duration
	// HeartbeatInterval and ElectionTimeout tune raft (etcd defaults: 100 ms
	// and 1 s). Shorter values make leader failover of a multi-member cluster
	// faster on loopback; they also lower etcd's minimum lease TTL, which is
	// 1.5 election timeouts.
	HeartbeatInterval, ElectionTimeout time.Duration
	// CompactionRetention is how much history auto-compaction keeps (default
	// 1 h; negative disables compaction).
	CompactionRetention time.Duration
	// UnsafeNoFsync skips fsync: a crash can lose acknowledged writes. Only for
	// tests.
	UnsafeNoFsync bool
}

// Embedded is an etcd member running inside this process.
type Embedded struct {
	etcd      *embed.Etcd
	name      string
	clientURL string
	peerURL   string
	logger    *zap.Logger
	closeOnce sync.Once
}

// StartEmbedded starts an etcd member with its data in dir (created if
// missing) and waits until it is ready to serve clients or ctx, or the start
// timeout, ends. Reopening a dir after Close keeps its data.
func StartEmbedded(ctx context.Context, dir string, opts EmbedOptions) (*Embedded, error) {
	if dir == "" {
		return nil, errors.New("start embedded etcd: data directory is empty; pass a directory for etcd's WAL and database")
	}
	if opts.Name == "" {
		opts.Name = defaultMemberName
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = defaultStartTimeout
	}
	if opts.LogLevel == "" {
		opts.LogLevel = defaultLogLevel
	}
	switch opts.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf("start embedded etcd: log level %q is not one of debug, info, warn, error", opts.LogLevel)
	}
	if opts.InitialCluster != "" && opts.PeerURL == "" {
		return nil, fmt.Errorf("start embedded etcd member %q: InitialCluster is set but PeerURL is empty; a cluster member needs the fixed peer URL it is listed under", opts.Name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	lg, err := memberLogger(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}

	chooseClient, choosePeer := opts.ClientURL == "", opts.PeerURL == ""
	// A reopened member first tries the URLs it used last time, so that its
	// stored membership and anyone who noted its address stay right.
	last, haveLast := readMemberURLs(dir)
	for attempt := 1; ; attempt++ {
		o := opts
		if attempt == 1 && haveLast {
			if chooseClient {
				o.ClientURL = last.Client
			}
			if choosePeer {
				o.PeerURL = last.Peer
			}
		} else if chooseClient || choosePeer {
			urls, err := FreeLoopbackURLs(2)
			if err != nil {
				lg.Sync()
				return nil, fmt.Errorf("start embedded etcd: %w", err)
			}
			if chooseClient {
				o.ClientURL = urls[0]
			}
			if choosePeer {
				o.PeerURL = urls[1]
			}
		}
		e, err := startMember(ctx, dir, o, lg)
		if err == nil {
			if err := writeMemberURLs(dir, memberURLs{Client: e.clientURL, Peer: e.peerURL}); err != nil {
				e.Close()
				return nil, fmt.Errorf("start embedded etcd: %w", err)
			}
			return e, nil
		}
		// Only ports this call chose may be replaced: a caller's fixed URL is
		// part of a cluster's membership and must not silently change.
		if errors.Is(err, syscall.EADDRINUSE) && (chooseClient || choosePeer) && attempt < portAttempts {
			continue
		}
		lg.Sync()
		return nil, fmt.Errorf("start embedded etcd member %q in %s: %w", o.Name, dir, err)
	}
}

// memberURLs records the URLs a member last served on.
type memberURLs struct {
	Client string `json:"client"`
	Peer   string `json:"peer"`
}

// readMemberURLs returns the URLs saved by the last start in dir, if any. A
// missing or unreadable file only means fresh ports are chosen.
func readMemberURLs(dir string) (memberURLs, bool) {
	b, err := os.ReadFile(filepath.Join(dir, urlsFileName))
	if err != nil {
		return memberURLs{}, false
	}
	var u memberURLs
	if json.Unmarshal(b, &u) != nil || u.Client == "" || u.Peer == "" {
		return memberURLs{}, false
	}
	return u, true
}

func writeMemberURLs(dir string, u memberURLs) error {
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, urlsFileName), 0o600, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// memberLogger builds the zap logger etcd writes to: a file, or nothing.
func memberLogger(dir string, opts EmbedOptions) (*zap.Logger, error) {
	if opts.DiscardLogs {
		return zap.NewNop(), nil
	}
	path := opts.LogFile
	if path == "" {
		path = filepath.Join(dir, logFileName)
	}
	cfg := zap.NewProductionConfig()
	cfg.Sampling = nil
	cfg.OutputPaths = []string{path}
	cfg.ErrorOutputPaths = []string{path}
	level, err := zap.ParseAtomicLevel(opts.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("log level %q: %w", opts.LogLevel, err)
	}
	cfg.Level = level
	lg, err := cfg.Build()
	if err != nil {
		return nil, fmt.Errorf("open etcd log %s: %w", path, err)
	}
	return lg, nil
}

func startMember(ctx context.Context, dir string, o EmbedOptions, lg *zap.Logger) (*Embedded, error) {
	curl, err := url.Parse(o.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("client URL %q: %w", o.ClientURL, err)
	}
	purl, err := url.Parse(o.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("peer URL %q: %w", o.PeerURL, err)
	}

	cfg := embed.NewConfig()
	cfg.Name = o.Name
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*curl}
	cfg.AdvertiseClientUrls = []url.URL{*curl}
	cfg.ListenPeerUrls = []url.URL{*purl}
	cfg.AdvertisePeerUrls = []url.URL{*purl}
	cfg.InitialCluster = o.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = o.Name + "=" + o.PeerURL
	}
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	cfg.LogLevel = o.LogLevel
	// etcd's gRPC gateway and metrics are not used: the coordinator serves its
	// own API and metrics.
	cfg.EnableGRPCGateway = false
	if o.HeartbeatInterval > 0 {
		cfg.TickMs = uint(o.HeartbeatInterval / time.Millisecond)
	}
	if o.ElectionTimeout > 0 {
		cfg.ElectionMs = uint(o.ElectionTimeout / time.Millisecond)
	}
	switch r := o.CompactionRetention; {
	case r == 0:
		cfg.AutoCompactionMode = embed.CompactorModePeriodic
		cfg.AutoCompactionRetention = defaultCompactionRetention.String()
	case r > 0:
		cfg.AutoCompactionMode = embed.CompactorModePeriodic
		cfg.AutoCompactionRetention = r.String()
	default:
		cfg.AutoCompactionRetention = "0"
	}
	cfg.UnsafeNoFsync = o.UnsafeNoFsync

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(o.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd failed while starting: %w", err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("etcd not ready after %v (a multi-member cluster needs a quorum of members started)", o.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("waiting for etcd to become ready: %w", ctx.Err())
	}
	return &Embedded{etcd: e, name: o.Name, clientURL: o.ClientURL, peerURL: o.PeerURL, logger: lg}, nil
}

// Endpoints returns the client URLs to give an etcd client.
func (e *Embedded) Endpoints() []string { return []string{e.clientURL} }

// ClientURL returns the URL the member serves clients on.
func (e *Embedded) ClientURL() string { return e.clientURL }

// PeerURL returns the URL the member serves other members on.
func (e *Embedded) PeerURL() string { return e.peerURL }

// Name returns the member name.
func (e *Embedded) Name() string { return e.name }

// Err reports a fatal error of the running member (its listeners failing).
// The channel is closed by Close.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the member: it stops accepting requests, finishes in-flight
// ones within etcd's request timeout, closes its data files and returns once
// every goroutine it started has exited. Close is safe to call twice.
// Clients with open watches delay Close by up to etcd's request timeout
// (5 s plus two election timeouts): close them first.
func (e *Embedded) Close() error {
	e.closeOnce.Do(func() {
		e.etcd.Close()
		// zap's Sync reports EINVAL on some outputs; the log is best effort.
		_ = e.logger.Sync()
	})
	return nil
}
