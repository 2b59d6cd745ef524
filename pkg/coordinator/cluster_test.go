package coordinator_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ternml/tern/pkg/coordinator"
	"github.com/ternml/tern/pkg/coordinator/store"
	"github.com/ternml/tern/pkg/worker"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// testDeadline bounds every wait for a condition. Generous: it only
// matters when a test is failing.
const testDeadline = 90 * time.Second

// cluster is a coordinator with an embedded etcd and worker agents, all in
// this process, talking real gRPC over loopback.
type cluster struct {
	t       *testing.T
	dir     string
	addr    string
	client  ternv1.CoordinatorServiceClient
	workers []*worker.Agent
	log     *slog.Logger
	opts    coordinator.Options

	stopCoord context.CancelFunc
	coordDone chan error
	stopAll   []func()
}

// startCluster starts a coordinator and one worker per entry of slots.
func startCluster(t *testing.T, slots ...int) *cluster {
	t.Helper()
	return startClusterWith(t, coordinator.Options{}, slots...)
}

// startClusterWith is startCluster with coordinator options (the listen
// address, data directory and logger are the cluster's).
func startClusterWith(t *testing.T, opts coordinator.Options, slots ...int) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), addr: "127.0.0.1:0", log: testLogger(t), opts: opts}
	c.startCoordinator()
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c.client = ternv1.NewCoordinatorServiceClient(conn)
	for i, n := range slots {
		a, err := worker.New(worker.Config{Coordinator: c.addr, Name: fmt.Sprintf("w%d", i+1), Slots: n, Logger: c.log, DrainTimeout: testDeadline})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		c.workers = append(c.workers, a)
		var once sync.Once
		c.stopAll = append(c.stopAll, func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("worker %d: %v", i+1, err)
				}
			})
		})
	}
	t.Cleanup(func() {
		for _, stop := range c.stopAll {
			stop()
		}
		c.stopCoordinator()
	})
	c.waitWorkers(len(slots))
	return c
}

// startCoordinator starts (or restarts) the coordinator on the cluster's
// data directory and address.
func (c *cluster) startCoordinator() {
	c.t.Helper()
	opts := c.opts
	opts.Listen, opts.DataDir = c.addr, c.dir
	opts.Etcd = store.EmbedOptions{UnsafeNoFsync: true}
	opts.Logger = c.log.With("component", "coordinator")
	co, err := coordinator.New(opts)
	if err != nil {
		c.t.Fatal(err)
	}
	c.addr = co.Addr()
	ctx, cancel := context.WithCancel(context.Background())
	c.stopCoord, c.coordDone = cancel, make(chan error, 1)
	go func() { c.coordDone <- co.Run(ctx) }()
}

func (c *cluster) stopCoordinator() {
	if c.stopCoord == nil {
		return
	}
	c.stopCoord()
	if err := <-c.coordDone; err != nil {
		c.t.Errorf("coordinator: %v", err)
	}
	c.stopCoord = nil
}

// waitWorkers waits until n workers are registered and connected.
func (c *cluster) waitWorkers(n int) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("%d connected workers", n), func(ctx context.Context) (bool, error) {
		resp, err := c.client.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
		if err != nil {
			return false, nil // standing by, or still starting
		}
		connected := 0
		for _, w := range resp.Workers {
			if w.Connected {
				connected++
			}
		}
		return connected == n, nil
	})
}

// waitFor polls cond until it holds; it fails the test at the deadline.
func (c *cluster) waitFor(what string, cond func(ctx context.Context) (bool, error)) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	for {
		ok, err := cond(ctx)
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("%s did not happen within %v", what, testDeadline)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// watch follows a job until cond holds and returns that status.
func (c *cluster) watch(name, what string, cond func(*ternv1.Job) bool) *ternv1.Job {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	stream, err := c.client.WatchJob(ctx, &ternv1.WatchJobRequest{Name: name})
	if err != nil {
		c.t.Fatal(err)
	}
	var last *ternv1.Job
	for {
		resp, err := stream.Recv()
		if err != nil {
			if err == io.EOF {
				c.t.Fatalf("job %s: watch ended before %s; last status %s: %s", name, what, last.GetPhase(), last.GetReason())
			}
			c.t.Fatalf("job %s: waiting for %s: %v; last status %s: %s", name, what, err, last.GetPhase(), last.GetReason())
		}
		last = resp.Job
		if cond(last) {
			return last
		}
	}
}

// tinySpec is examples/tiny.yaml as a client sends it: the corpus path
// made absolute, the cache in the test's directory, and overrides.
func tinySpec(t *testing.T, name string, sets ...string) *ternv1.ApplyJobRequest {
	t.Helper()
	doc, err := os.ReadFile("../../examples/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text, err := filepath.Abs("../../examples/tiny.txt")
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"metadata.name=" + name, "data.path=" + text, "data.cacheDir=" + cacheDir(t)}
	return &ternv1.ApplyJobRequest{Spec: doc, Set: append(base, sets...)}
}

var (
	cacheOnce sync.Once
	cachePath string
)

// cacheDir is one tokenizer cache for the whole test binary, so the tiny
// corpus is tokenized once.
func cacheDir(t *testing.T) string {
	cacheOnce.Do(func() {
		d, err := os.MkdirTemp("", "tern-coordinator-test-cache-")
		if err != nil {
			t.Fatal(err)
		}
		cachePath = d
	})
	return cachePath
}

func TestMain(m *testing.M) {
	if v := os.Getenv(workerProcessEnv); v != "" {
		os.Exit(workerProcess(v))
	}
	code := m.Run()
	if cachePath != "" {
		os.RemoveAll(cachePath)
	}
	os.Exit(code)
}

// testLogger sends logs to the test's output until the test ends, at the
// level TERN_TEST_LOG names (default warn).
func testLogger(t *testing.T) *slog.Logger {
	level := slog.LevelWarn
	if v := os.Getenv("TERN_TEST_LOG"); v != "" {
		_ = level.UnmarshalText([]byte(v))
	}
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}
