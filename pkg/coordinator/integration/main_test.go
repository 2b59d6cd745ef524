package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ternml/tern/pkg/coordinator/store"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// testDeadline bounds every wait for a condition. Generous: it only
// matters when a test is failing.
const testDeadline = 90 * time.Second

// roleEnv, when set, makes the test binary play a part instead of running
// tests: "etcd-member" runs one embedded etcd member (memberMain).
const roleEnv = "TERN_INTEGRATION_ROLE"

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
	tmpRoot   string
)

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "etcd-member" {
		os.Exit(memberMain())
	}
	code := m.Run()
	if tmpRoot != "" {
		os.RemoveAll(tmpRoot)
	}
	os.Exit(code)
}

// skipShort skips a multi-process test under -short. Its coordinator and
// workers run as binaries built without the race detector, so the -race
// pass of make test would check nothing in them that this pass does not;
// the pass without -short runs them.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-process test: the coordinator and workers run as separate binaries; run without -short")
	}
}

// binaries are the programs the tests start.
type binaries struct{ coordinator, worker string }

// build compiles cmd/coordinator and cmd/worker once per test binary.
func build(t *testing.T) binaries {
	t.Helper()
	buildOnce.Do(func() {
		tmpRoot, buildErr = os.MkdirTemp("", "tern-integration-")
		if buildErr != nil {
			return
		}
		binDir = filepath.Join(tmpRoot, "bin")
		// go test puts its own GOROOT/bin first on the test's PATH.
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "./cmd/coordinator", "./cmd/worker")
		cmd.Dir = "../../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binaries{coordinator: filepath.Join(binDir, "coordinator"), worker: filepath.Join(binDir, "worker")}
}

// proc is a child process whose output goes to a log file, shown when
// the test fails.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs path with args (and extra environment) until the test ends.
func start(t *testing.T, name, path string, env []string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{t: t, name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			p.dump()
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	if p.exited() {
		p.t.Fatalf("%s exited before it was killed: %v", p.name, p.err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill %s: %v", p.name, err)
	}
	<-p.done
}

// stop sends SIGTERM and waits, then SIGKILL if the process lingers.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// dump logs the tail of the process's output.
func (p *proc) dump() {
	b, err := os.ReadFile(p.log)
	if err != nil {
		p.t.Logf("%s: no log: %v", p.name, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	p.t.Logf("--- %s (last %d lines of %s)\n%s", p.name, len(lines), p.log, strings.Join(lines, "\n"))
}

// freeAddr is a loopback address nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// dial connects a CoordinatorService client; gRPC reconnects by itself
// when the server at addr restarts.
func dial(t *testing.T, addr string) ternv1.CoordinatorServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ternv1.NewCoordinatorServiceClient(conn)
}

// waitFor polls cond until it holds; it fails the test at the deadline or
// when cond returns an error.
func waitFor(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := cond(cctx)
		ccancel()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not happen within %v", what, testDeadline)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitWorkers waits until n workers are registered and connected to the
// coordinator that cl reaches.
func waitWorkers(t *testing.T, cl ternv1.CoordinatorServiceClient, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d connected workers", n), func(ctx context.Context) (bool, error) {
		resp, err := cl.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
		if err != nil {
			return false, nil // starting, or standing by
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

// tinyJob is examples/tiny.yaml as a client sends it: the corpus path
// absolute, the tokenizer cache in dir, and overrides.
func tinyJob(t *testing.T, dir, name string, sets ...string) *ternv1.ApplyJobRequest {
	t.Helper()
	doc, err := os.ReadFile("../../../examples/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text, err := filepath.Abs("../../../examples/tiny.txt")
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"metadata.name=" + name, "data.path=" + text, "data.cacheDir=" + filepath.Join(dir, "cache")}
	return &ternv1.ApplyJobRequest{Spec: doc, Set: append(base, sets...)}
}

// jobState is the part of the coordinator's job record (etcd jobs/NAME,
// the state machine's JSON) the tests check.
type jobState struct {
	Phase         string `json:"phase"`
	Version       uint64 `json:"version"`
	Attempt       int    `json:"attempt"`
	Restarts      int    `json:"restarts"`
	CommittedStep int64  `json:"committedStep"`
}

// decodeJobState reads the state machine's fields from a job record's
// state: the machine's JSON, alone or under "job" next to the
// coordinator's own bookkeeping.
func decodeJobState(b []byte) (jobState, error) {
	var s jobState
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return s, err
	}
	inner, ok := probe["job"]
	if !ok {
		return s, json.Unmarshal(b, &s)
	}
	if len(inner) > 0 && inner[0] == '"' {
		var raw []byte // a []byte field: base64
		if err := json.Unmarshal(inner, &raw); err != nil {
			return s, err
		}
		inner = raw
	}
	if err := json.Unmarshal(inner, &s); err != nil {
		return s, err
	}
	if s.Version == 0 {
		return s, fmt.Errorf("no state machine version in the record")
	}
	return s, nil
}

// recordHistory is every version of a job's record and of its committed
// step that etcd still has, in order.
type recordHistory struct {
	states    []jobState
	revisions []int64 // of each state's write
	created   []int64 // create revision of each state's key
	committed []uint64
}

// history reads a job's record history from etcd, from revision 1 to now.
func history(t *testing.T, st *store.Store, job string) recordHistory {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cli := st.Client()
	var h recordHistory
	for _, key := range []string{st.Prefix() + "jobs/" + job, st.Prefix() + "committed/" + job} {
		cur, err := cli.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(cur.Kvs) == 0 {
			continue
		}
		last := cur.Kvs[0].ModRevision
		wctx, wcancel := context.WithCancel(ctx)
		wch := cli.Watch(wctx, key, clientv3.WithRev(1))
		for rev := int64(0); rev < last; {
			wr, ok := <-wch
			if !ok || wr.Err() != nil {
				wcancel()
				t.Fatalf("read the history of %s: %v (compacted?)", key, wr.Err())
			}
			for _, ev := range wr.Events {
				rev = ev.Kv.ModRevision
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				if strings.HasSuffix(key, "jobs/"+job) {
					var rec struct {
						State []byte `json:"state"`
					}
					if err := json.Unmarshal(ev.Kv.Value, &rec); err != nil {
						t.Fatalf("job record at revision %d: %v", rev, err)
					}
					s, err := decodeJobState(rec.State)
					if err != nil {
						t.Fatalf("job state at revision %d: %v\n%s", rev, err, rec.State)
					}
					h.states = append(h.states, s)
					h.revisions = append(h.revisions, ev.Kv.ModRevision)
					h.created = append(h.created, ev.Kv.CreateRevision)
				} else {
					var c struct {
						Step uint64 `json:"step"`
					}
					if err := json.Unmarshal(ev.Kv.Value, &c); err != nil {
						t.Fatalf("committed step at revision %d: %v", rev, err)
					}
					h.committed = append(h.committed, c.Step)
				}
			}
		}
		wcancel()
	}
	return h
}

// checkHistory checks what the tests require of a job's etcd history:
// every write of the record is the state machine's next version (so no
// write was lost or made twice, by one leader or two), in one incarnation
// of the record, and neither the attempt nor the committed step ever goes
// back; committed steps only grow.
func checkHistory(t *testing.T, h recordHistory) {
	t.Helper()
	if len(h.states) == 0 {
		t.Fatal("etcd has no history of the job record")
	}
	for i := 1; i < len(h.states); i++ {
		prev, cur := h.states[i-1], h.states[i]
		if cur.Version != prev.Version+1 {
			t.Errorf("record write %d (revision %d) has version %d after version %d: a write was lost or repeated", i, h.revisions[i], cur.Version, prev.Version)
		}
		if h.created[i] != h.created[0] {
			t.Errorf("record write %d belongs to a job created at revision %d, the first to one created at %d: the job was re-created", i, h.created[i], h.created[0])
		}
		if cur.Attempt < prev.Attempt || cur.CommittedStep < prev.CommittedStep {
			t.Errorf("record write %d went back: attempt %d step %d after attempt %d step %d", i, cur.Attempt, cur.CommittedStep, prev.Attempt, prev.CommittedStep)
		}
	}
	for i := 1; i < len(h.committed); i++ {
		if h.committed[i] <= h.committed[i-1] {
			t.Errorf("committed step %d after %d: commits must only move forward", h.committed[i], h.committed[i-1])
		}
	}
}

// poller records a job's status as often as it can get it, to check
// afterwards what any client could have seen.
type poller struct {
	mu   sync.Mutex
	seen []*ternv1.Job
	stop func()
	done chan struct{}
}

func pollJob(cl ternv1.CoordinatorServiceClient, name string) *poller {
	ctx, cancel := context.WithCancel(context.Background())
	p := &poller{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			resp, err := cl.GetJob(rctx, &ternv1.GetJobRequest{Name: name})
			rcancel()
			if err == nil {
				p.mu.Lock()
				p.seen = append(p.seen, resp.Job)
				p.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()
	return p
}

// statuses stops the poller and returns what it saw.
func (p *poller) statuses() []*ternv1.Job {
	p.stop()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

// memberMain runs one etcd member of a test cluster until SIGTERM or
// SIGKILL. Its settings come from the environment; it prints "ready" on
// stdout once it serves.
func memberMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	dir := os.Getenv("TERN_MEMBER_DIR")
	e, err := store.StartEmbedded(ctx, dir, store.EmbedOptions{
		Name:           os.Getenv("TERN_MEMBER_NAME"),
		ClientURL:      os.Getenv("TERN_MEMBER_CLIENT"),
		PeerURL:        os.Getenv("TERN_MEMBER_PEER"),
		InitialCluster: os.Getenv("TERN_MEMBER_CLUSTER"),
		// Faster raft timings make a re-election quick on loopback.
		HeartbeatInterval: 50 * time.Millisecond,
		ElectionTimeout:   500 * time.Millisecond,
		UnsafeNoFsync:     true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer e.Close()
	fmt.Println("ready")
	select {
	case <-ctx.Done():
		return 0
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "etcd member failed:", err)
		return 1
	}
}

// waitLine waits until the process's log has a line equal to want.
func (p *proc) waitLine(want string) {
	p.t.Helper()
	waitFor(p.t, fmt.Sprintf("%s to print %q", p.name, want), func(context.Context) (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("%s exited: %v", p.name, p.err)
		}
		f, err := os.Open(p.log)
		if err != nil {
			return false, err
		}
		defer f.Close()
		sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
		for sc.Scan() {
			if sc.Text() == want {
				return true, nil
			}
		}
		return false, nil
	})
}

// terminal reports whether a job phase is final.
func terminal(p ternv1.JobPhase) bool {
	switch p {
	case ternv1.JobPhase_JOB_PHASE_SUCCEEDED, ternv1.JobPhase_JOB_PHASE_FAILED, ternv1.JobPhase_JOB_PHASE_CANCELLED:
		return true
	}
	return false
}
