package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ternml/tern/pkg/coordinator/store"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// etcdCluster is three etcd members, each in a process of its own.
type etcdCluster struct {
	members   []*proc
	clients   []string
	endpoints string
}

// startEtcdCluster starts three members (this test binary in the member
// role) and waits until each serves.
func startEtcdCluster(t *testing.T) *etcdCluster {
	t.Helper()
	const n = 3
	urls, err := store.FreeLoopbackURLs(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=%s", i, urls[n+i]))
	}
	c := &etcdCluster{clients: urls[:n], endpoints: strings.Join(urls[:n], ",")}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		env := []string{
			roleEnv + "=etcd-member",
			"TERN_MEMBER_NAME=" + fmt.Sprintf("m%d", i),
			"TERN_MEMBER_DIR=" + filepath.Join(t.TempDir(), "etcd"),
			"TERN_MEMBER_CLIENT=" + urls[i],
			"TERN_MEMBER_PEER=" + urls[n+i],
			"TERN_MEMBER_CLUSTER=" + strings.Join(initial, ","),
		}
		c.members = append(c.members, start(t, fmt.Sprintf("etcd-m%d", i), self, env))
	}
	for _, m := range c.members {
		m.waitLine("ready")
	}
	return c
}

// raftLeader returns the index of the member that leads raft now.
func (c *etcdCluster) raftLeader(t *testing.T, cli *clientv3.Client) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, ep := range c.clients {
		if c.members[i].exited() {
			continue
		}
		st, err := cli.Status(ctx, ep)
		if err != nil {
			t.Fatalf("status of %s: %v", ep, err)
		}
		if st.Leader == st.Header.MemberId {
			return i
		}
	}
	t.Fatal("no member leads raft")
	return -1
}

// proxy forwards each connection to the first of its backends that
// accepts it. It stands for the address a deployment puts in front of
// its coordinators (a virtual IP, a Kubernetes Service): workers know one
// address, and a dead coordinator refuses connections, so they reach the
// one still alive. It knows nothing of leadership: a standby answers
// UNAVAILABLE, and the worker tries again.
type proxy struct {
	lis      net.Listener
	backends []string
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

func startProxy(t *testing.T, backends ...string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, backends: backends, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return p.lis.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.forward(c)
		}()
	}
}

func (p *proxy) forward(c net.Conn) {
	var b net.Conn
	for _, addr := range p.backends {
		var err error
		if b, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
			break
		}
	}
	if b == nil || !p.track(c, b) {
		c.Close()
		if b != nil {
			b.Close()
		}
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Either side ending ends both, as a dead host would.
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(b, c)
	go pipe(c, b)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, b)
	p.mu.Unlock()
}

// track registers a connection pair, unless the proxy is closing.
func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *proxy) close() {
	p.lis.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// Two coordinator processes share a three-member etcd cluster (three more
// processes). The leader is killed with SIGKILL in the middle of a job;
// the standby takes over, names itself leader, and the job applied before
// the kill runs on to success in its first attempt, with the record's
// writes in one sequence across both leaders. Then the store's fencing is
// checked directly against the cluster with a member gone: a leader whose
// session ended can no longer write.
func TestLeaderFailover(t *testing.T) {
	skipShort(t)
	t.Parallel()
	bins := build(t)
	dir := t.TempDir()
	etcd := startEtcdCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	st, err := store.Open(ctx, etcd.clients, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	addrA, addrB := freeAddr(t), freeAddr(t)
	coord := func(name, addr string) *proc {
		return start(t, name, bins.coordinator, nil, "--listen", addr, "--etcd-endpoints", etcd.endpoints, "--name", name, "--log-level", "info")
	}
	a := coord("coord-a", addrA)
	clA := dial(t, addrA)
	waitFor(t, "coord-a to lead", func(ctx context.Context) (bool, error) {
		_, err := clA.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
		return err == nil, nil
	})
	coord("coord-b", addrB)
	clB := dial(t, addrB)
	waitFor(t, "coord-b to stand by, naming coord-a", func(ctx context.Context) (bool, error) {
		_, err := clB.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
		s := status.Convert(err)
		return s.Code() == codes.Unavailable && strings.Contains(s.Message(), "the leader is coord-a"), nil
	})

	px := startProxy(t, addrA, addrB)
	for _, name := range []string{"w1", "w2"} {
		start(t, name, bins.worker, nil, "--coordinator", px.addr(), "--name", name, "--slots", "1")
	}
	cl := dial(t, px.addr())
	waitWorkers(t, cl, 2)

	steps := jobSteps(t, cl, dir)
	if _, err := cl.ApplyJob(ctx, tinyJob(t, dir, "failover", "parallel.data=2", fmt.Sprintf("steps=%d", steps), "eval.everySteps=0", "restartPolicy.maxRestarts=0")); err != nil {
		t.Fatal(err)
	}
	var runningSince time.Time
	waitFor(t, "the job to run for longer than a worker lease", func(ctx context.Context) (bool, error) {
		resp, err := clA.GetJob(ctx, &ternv1.GetJobRequest{Name: "failover"})
		if err != nil {
			return false, err
		}
		j := resp.Job
		if terminal(j.Phase) {
			return false, fmt.Errorf("the job ended before the kill: %s: %s", j.Phase, j.Reason)
		}
		if j.Phase == ternv1.JobPhase_JOB_PHASE_RUNNING && j.CommittedStep > 0 && runningSince.IsZero() {
			runningSince = time.Now()
		}
		return !runningSince.IsZero() && time.Since(runningSince) > leaseTTL+time.Second, nil
	})
	oldLeader, err := st.Leader(ctx)
	if err != nil || oldLeader.Name != "coord-a" {
		t.Fatalf("leader before the kill: %+v, %v", oldLeader, err)
	}
	before, err := st.GetJob(ctx, "failover")
	if err != nil {
		t.Fatal(err)
	}

	a.kill()
	killed := time.Now()
	waitFor(t, "coord-b to lead", func(ctx context.Context) (bool, error) {
		info, err := st.Leader(ctx)
		if err != nil || info.Name != "coord-b" {
			return false, nil
		}
		if info.Fence <= oldLeader.Fence {
			return false, fmt.Errorf("coord-b leads with fence %d, not above coord-a's %d", info.Fence, oldLeader.Fence)
		}
		_, err = clB.GetJob(ctx, &ternv1.GetJobRequest{Name: "failover"})
		return err == nil, nil
	})
	t.Logf("coord-b led and served the job %v after coord-a was killed", time.Since(killed).Round(time.Millisecond))

	var done *ternv1.Job
	waitFor(t, "the job to end", func(ctx context.Context) (bool, error) {
		resp, err := clB.GetJob(ctx, &ternv1.GetJobRequest{Name: "failover"})
		if err != nil {
			return false, err
		}
		done = resp.Job
		return terminal(done.Phase), nil
	})
	if done.Phase != ternv1.JobPhase_JOB_PHASE_SUCCEEDED || done.CommittedStep != int64(steps) {
		t.Fatalf("job ended %s at step %d: %s", done.Phase, done.CommittedStep, done.Reason)
	}
	if done.Attempt != 1 || done.Restarts != 0 {
		t.Errorf("job ended in attempt %d after %d restarts, want the first attempt", done.Attempt, done.Restarts)
	}
	after, err := st.GetJob(ctx, "failover")
	if err != nil {
		t.Fatal(err)
	}
	if after.Created != before.Created {
		t.Errorf("job record created at revision %d before the failover, %d after", before.Created, after.Created)
	}
	checkHistory(t, history(t, st, "failover"))
	attempts, err := st.ListAttempts(ctx, "failover")
	if err != nil {
		t.Fatal(err)
	}
	if len(attempts) != 1 || attempts[0].N != 1 {
		t.Errorf("etcd holds %d attempt records, want attempt 1 alone", len(attempts))
	}

	// Fencing, directly: lose the raft leader member, then depose a leader
	// by ending its session (as a pause past its TTL would) and check its
	// writes fail while its successor's land.
	victim := etcd.raftLeader(t, st.Client())
	etcd.members[victim].kill()
	t.Logf("killed etcd member m%d, the raft leader", victim)
	checkFencing(t, etcd.clients)

	// coord-b keeps the workers' leases renewed through the remaining
	// members: past a whole lease after the member died, both are still
	// registered and connected.
	memberKilled := time.Now()
	waitFor(t, "a worker lease to pass with one etcd member gone", func(ctx context.Context) (bool, error) {
		resp, err := clB.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
		if err != nil {
			return false, nil // etcd electing a raft leader
		}
		connected := 0
		for _, w := range resp.Workers {
			if w.Connected {
				connected++
			}
		}
		if connected != 2 && time.Since(memberKilled) > leaseTTL {
			return false, fmt.Errorf("%d of 2 workers connected %v after the member died", connected, time.Since(memberKilled).Round(time.Millisecond))
		}
		return connected == 2 && time.Since(memberKilled) > leaseTTL+time.Second, nil
	})
}

// checkFencing campaigns two leaders in turn under a private prefix and
// checks the deposed one cannot write.
func checkFencing(t *testing.T, endpoints []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	open := func() *store.Store {
		var s *store.Store
		waitFor(t, "a store on the remaining members", func(ctx context.Context) (bool, error) {
			var err error
			s, err = store.Open(ctx, endpoints, store.Options{Prefix: "/fence-check/", LeaderTTL: 2 * time.Second})
			return err == nil, nil
		})
		t.Cleanup(func() { s.Close() })
		return s
	}
	s1, s2 := open(), open()
	var old *store.Leader
	waitFor(t, "the first leader", func(ctx context.Context) (bool, error) {
		var err error
		old, err = s1.Campaign(ctx, "old")
		return err == nil, nil
	})
	var job store.Job
	waitFor(t, "the first leader's write", func(ctx context.Context) (bool, error) {
		var err error
		job, err = old.CreateJob(ctx, "j", []byte("spec"), []byte("by old"))
		if errors.Is(err, store.ErrExists) {
			job, err = s1.GetJob(ctx, "j")
		}
		return err == nil, nil
	})
	// Depose it: its session's lease ends, as if it had been paused past
	// its TTL, while the process itself carries on.
	resp, err := s2.Client().Get(ctx, old.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read the leader key: %v", err)
	}
	if _, err := s2.Client().Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	newL, err := s2.Campaign(ctx, "new")
	if err != nil {
		t.Fatal(err)
	}
	if newL.Fence() <= old.Fence() {
		t.Fatalf("new leader's fence %d is not above the old one's %d", newL.Fence(), old.Fence())
	}
	stale := job
	stale.State = []byte("by old, after losing")
	if _, err := old.UpdateJob(ctx, stale); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("the deposed leader's write: %v, want ErrNotLeader", err)
	}
	if _, err := old.CommitStep(ctx, "j", 1, nil); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("the deposed leader's commit: %v, want ErrNotLeader", err)
	}
	got, err := s2.GetJob(ctx, "j")
	if err != nil || string(got.State) != "by old" || got.Revision != job.Revision {
		t.Fatalf("after the deposed leader's writes the record is %q at revision %d (%v), want it untouched at %d", got.State, got.Revision, err, job.Revision)
	}
	job.State = []byte("by new")
	if _, err := newL.UpdateJob(ctx, job); err != nil {
		t.Fatalf("the new leader's write: %v", err)
	}
}
