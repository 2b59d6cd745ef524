package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Size limits. etcd refuses requests over its MaxRequestBytes (1.5 MiB by
// default), and a transaction carries several values, so single values are
// held well below that.
const (
	// DefaultMaxValueBytes is the default limit on one caller-supplied value.
	DefaultMaxValueBytes = 256 << 10
	// MaxValueBytesLimit is the largest Options.MaxValueBytes accepted.
	MaxValueBytesLimit = 1 << 20
	// etcdRequestBytes is etcd's default MaxRequestBytes.
	etcdRequestBytes = 3 << 19 // 1.5 MiB
	// txnBytesLimit bounds the keys and values of one transaction, leaving
	// room under etcdRequestBytes for the compares and protobuf framing.
	txnBytesLimit = etcdRequestBytes - 64<<10
	// maxTxnOps is etcd's default limit on operations per transaction branch.
	maxTxnOps = 128
)

// Other defaults.
const (
	DefaultPrefix    = "/tern/"
	DefaultLeaderTTL = 5 * time.Second
	// defaultDialTimeout bounds Open's first request when ctx has no deadline.
	// clientv3.New does not block, so this request is what finds a wrong
	// endpoint.
	defaultDialTimeout = 5 * time.Second
)

// Options configures a Store. The zero value is usable.
type Options struct {
	// Prefix is prepended to every key (default "/tern/"), so several
	// independent installations can share one etcd cluster.
	Prefix string
	// MaxValueBytes limits each value a caller stores: a job spec or state,
	// an attempt, an assignment, a manifest, a worker's info (default 256 KiB,
	// at most 1 MiB).
	MaxValueBytes int
	// LeaderTTL is the lease TTL of a leader's session: how long a crashed
	// leader keeps leadership before a standby takes over (default 5 s;
	// rounded up to whole seconds; etcd raises anything under its minimum,
	// 2 s with default raft timings).
	LeaderTTL time.Duration
	// Logger receives etcd client logs (Open only; default: discarded).
	Logger *zap.Logger
}

// Store reads and writes the coordinator's state in etcd. Reads are methods
// of Store; writes are methods of Leader (see Campaign), so that every write
// is fenced. A Store is safe for concurrent use.
type Store struct {
	cli        *clientv3.Client
	ownsClient bool
	prefix     string
	maxValue   int
	leaderTTL  int // seconds
	// renew carries WorkerLease.Refresh over one shared stream.
	renew *renewer
}

// New returns a Store over an existing client, which the caller keeps
// owning: Close does not close it.
func New(cli *clientv3.Client, opts Options) (*Store, error) {
	if cli == nil {
		return nil, fmt.Errorf("new store: etcd client is nil: %w", ErrInvalid)
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	if opts.MaxValueBytes == 0 {
		opts.MaxValueBytes = DefaultMaxValueBytes
	}
	if opts.MaxValueBytes < 0 || opts.MaxValueBytes > MaxValueBytesLimit {
		return nil, fmt.Errorf("new store: MaxValueBytes %d is outside 1..%d (etcd accepts at most %d bytes per request): %w",
			opts.MaxValueBytes, MaxValueBytesLimit, etcdRequestBytes, ErrInvalid)
	}
	if opts.LeaderTTL == 0 {
		opts.LeaderTTL = DefaultLeaderTTL
	}
	if opts.LeaderTTL < 0 {
		return nil, fmt.Errorf("new store: LeaderTTL %v is negative: %w", opts.LeaderTTL, ErrInvalid)
	}
	return &Store{
		cli:       cli,
		prefix:    opts.Prefix,
		maxValue:  opts.MaxValueBytes,
		leaderTTL: ttlSeconds(opts.LeaderTTL),
		renew:     &renewer{cli: cli},
	}, nil
}

// Open connects to etcd at endpoints (for example an Embedded's Endpoints)
// and checks that it answers before ctx ends (or within 5 s if ctx has no
// deadline). Close closes the connection.
func Open(ctx context.Context, endpoints []string, opts Options) (*Store, error) {
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("open store: no etcd endpoints given: %w", ErrInvalid)
	}
	lg := opts.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: defaultDialTimeout,
		Logger:      lg,
		// A request carries at most one transaction's worth of values.
		MaxCallSendMsgSize: etcdRequestBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("open store at %v: %w", endpoints, err)
	}
	s, err := New(cli, opts)
	if err != nil {
		cli.Close()
		return nil, err
	}
	s.ownsClient = true
	pctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, defaultDialTimeout)
		defer cancel()
	}
	if _, err := cli.Get(pctx, s.prefix, clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("open store: etcd at %v does not answer (is it running, and are these its client URLs?): %w", endpoints, err)
	}
	return s, nil
}

// Close releases the etcd connection if Open made it. Leaders and worker
// leases obtained through the Store stop being kept alive.
func (s *Store) Close() error {
	s.renew.close()
	if s.ownsClient {
		return s.cli.Close()
	}
	return nil
}

// Client returns the underlying etcd client.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix in use.
func (s *Store) Prefix() string { return s.prefix }

// MaxValueBytes returns the limit on one stored value.
func (s *Store) MaxValueBytes() int { return s.maxValue }

// Keys. Jobs' sub-records live in their own subtrees (not under jobs/NAME/)
// so that listing or watching jobs/ sees job records only; see doc.go.
func (s *Store) jobsPrefix() string               { return s.prefix + "jobs/" }
func (s *Store) jobKey(name string) string        { return s.jobsPrefix() + name }
func (s *Store) attemptsPrefix(job string) string { return s.prefix + "attempts/" + job + "/" }
func (s *Store) attemptKey(job string, n int) string {
	// Zero-padded so that key order is numeric order.
	return fmt.Sprintf("%s%010d", s.attemptsPrefix(job), n)
}
func (s *Store) assignmentKey(job string) string { return s.prefix + "assignments/" + job }
func (s *Store) committedKey(job string) string  { return s.prefix + "committed/" + job }
func (s *Store) snapshotKey(job string) string   { return s.prefix + "snapshots/" + job }
func (s *Store) workersPrefix() string           { return s.prefix + "workers/" }
func (s *Store) workerKey(name string) string    { return s.workersPrefix() + name }

// electionPrefix is the election's prefix; candidates' keys are
// electionPrefix/LEASE-ID (concurrency.NewElection appends the slash).
func (s *Store) electionPrefix() string { return s.prefix + "leader" }

// maxAttempt keeps an attempt number within its ten zero-padded digits.
const maxAttempt = 9_999_999_999

// maxNameLen is the DNS name limit, which covers host names used as worker
// names. Job names are further restricted by the spec (63 characters).
const maxNameLen = 253

var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

// checkName rejects names that would break the key layout (a '/' would nest
// a job under another) or be awkward in logs and file names.
func checkName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%s name is empty: %w", kind, ErrInvalid)
	}
	if len(name) > maxNameLen || !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %q is not valid (letters, digits, '.', '_' and '-', at most %d characters, starting and ending with a letter or digit): %w",
			kind, name, maxNameLen, ErrInvalid)
	}
	return nil
}

func checkAttempt(n int) error {
	if n < 0 || n > maxAttempt {
		return fmt.Errorf("attempt %d is outside 0..%d: %w", n, maxAttempt, ErrInvalid)
	}
	return nil
}

// checkValue enforces MaxValueBytes on one caller-supplied value.
func (s *Store) checkValue(what string, b []byte) error {
	if len(b) > s.maxValue {
		return fmt.Errorf("%s is %d bytes, over the %d-byte limit (etcd takes at most %d bytes per request; keep bulk data out of etcd): %w",
			what, len(b), s.maxValue, etcdRequestBytes, ErrTooLarge)
	}
	return nil
}

// ttlSeconds rounds a TTL up to whole seconds, at least 1.
func ttlSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// wrapEtcd maps etcd's size refusal to ErrTooLarge and keeps other errors.
func wrapEtcd(err error) error {
	if errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrGRPCRequestTooLarge) {
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	}
	return err
}
