package coordinator_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ternml/tern/pkg/coordinator"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Worker loss is detected by the coordinator, not only by etcd. These
// tests run with a lease far longer than the test's own deadline, so that
// a loss can only come from the miss window or from the broken stream.
const (
	missBeat   = 100 * time.Millisecond
	missWindow = 400 * time.Millisecond
	missLease  = 10 * time.Minute
)

// rawWorker is a worker speaking the Session protocol by hand over its own
// loopback connection, so a test controls exactly when it heartbeats and
// how its stream ends.
type rawWorker struct {
	conn    *grpc.ClientConn
	client  ternv1.CoordinatorServiceClient
	session string
	stream  ternv1.CoordinatorService_SessionClient
	cancel  context.CancelFunc
}

// registerRaw registers a worker; attach opens its session.
func registerRaw(t *testing.T, c *cluster, name string) *rawWorker {
	t.Helper()
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	w := &rawWorker{conn: conn, client: ternv1.NewCoordinatorServiceClient(conn), cancel: func() {}}
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	reg, err := w.client.RegisterWorker(ctx, &ternv1.RegisterWorkerRequest{Name: name, Host: "127.0.0.1", Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.session = reg.SessionId
	return w
}

func (w *rawWorker) attach(name string) error {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := w.client.Session(ctx)
	if err != nil {
		cancel()
		return err
	}
	if err := stream.Send(&ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Hello{Hello: &ternv1.SessionHello{Worker: name, SessionId: w.session}}}); err != nil {
		cancel()
		return err
	}
	if _, err := stream.Recv(); err != nil {
		cancel()
		return err
	}
	w.stream, w.cancel = stream, cancel
	return nil
}

func (w *rawWorker) heartbeat() error {
	return w.stream.Send(&ternv1.SessionRequest{Msg: &ternv1.SessionRequest_Heartbeat{Heartbeat: &ternv1.SessionHeartbeat{}}})
}

func workerNames(ctx context.Context, c *cluster) ([]string, error) {
	r, err := c.client.ListWorkers(ctx, &ternv1.ListWorkersRequest{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, w := range r.Workers {
		names = append(names, w.Name)
	}
	return names, nil
}

func missCluster(t *testing.T) *cluster {
	return startClusterWith(t, coordinator.Options{HeartbeatInterval: missBeat, LeaseTTL: missLease, MissWindow: missWindow})
}

// A worker that stops heartbeating but keeps its stream open (hung,
// stopped with SIGSTOP, partitioned) is lost after the miss window, long
// before its lease would lapse, and its registration is gone from etcd
// too: a restarted coordinator does not list it.
func TestSilentWorkerLostAfterMissWindow(t *testing.T) {
	c := missCluster(t)
	w := registerRaw(t, c, "hung")
	if err := w.attach("hung"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.cancel() })
	// Heartbeat for a few windows: a worker that heartbeats is kept.
	var lastSent time.Time
	beat := time.NewTicker(missBeat)
	for i := 0; i < 12; i++ {
		<-beat.C
		if err := w.heartbeat(); err != nil {
			t.Fatal(err)
		}
		lastSent = time.Now()
	}
	beat.Stop()
	names, err := workerNames(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, "hung") {
		t.Fatalf("a worker heartbeating every %v was dropped (miss window %v); workers: %v", missBeat, missWindow, names)
	}
	// Now silence, with the stream still open.
	var lostAt time.Time
	c.waitFor("the silent worker to be lost", func(ctx context.Context) (bool, error) {
		names, err := workerNames(ctx, c)
		lostAt = time.Now()
		return err == nil && !slices.Contains(names, "hung"), err
	})
	if since := lostAt.Sub(lastSent); since < missWindow {
		t.Fatalf("worker lost %v after its last heartbeat, before the %v miss window", since, missWindow)
	}
	t.Logf("silent worker lost %v after its last heartbeat (miss window %v, lease %v)", lostAt.Sub(lastSent).Round(time.Millisecond), missWindow, missLease)
	// Its session is over: attaching again with it is refused.
	if err := w.attach("hung"); err == nil {
		t.Fatal("a lost worker's session was accepted again")
	}
	// etcd agrees: the registration was revoked, not left to its lease.
	c.stopCoordinator()
	c.startCoordinator()
	c.waitFor("the restarted coordinator to list workers", func(ctx context.Context) (bool, error) {
		names, err := workerNames(ctx, c)
		if err != nil {
			return false, nil // still electing
		}
		if slices.Contains(names, "hung") {
			t.Fatalf("the lost worker's registration is still in etcd after a restart: %v", names)
		}
		return true, nil
	})
}

// A worker whose connection drops (its process died) is lost at once;
// one that closes its side of the stream (io.EOF) may attach again.
func TestBrokenStreamLostAtOnce(t *testing.T) {
	c := startClusterWith(t, coordinator.Options{HeartbeatInterval: missBeat, LeaseTTL: missLease, MissWindow: missLease - missBeat})

	polite := registerRaw(t, c, "polite")
	if err := polite.attach("polite"); err != nil {
		t.Fatal(err)
	}
	if err := polite.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := polite.stream.Recv(); err == nil {
		t.Fatal("the session went on after the worker closed its side")
	}
	// Not lost: its session is still its registration's, and attaching
	// with it again is accepted.
	if err := polite.attach("polite"); err != nil {
		t.Fatalf("a worker that closed its stream could not attach again: %v", err)
	}
	t.Cleanup(func() { polite.cancel() })

	dead := registerRaw(t, c, "dead")
	if err := dead.attach("dead"); err != nil {
		t.Fatal(err)
	}
	dead.conn.Close() // what the kernel does for a process that died
	c.waitFor("the worker whose connection dropped to be lost", func(ctx context.Context) (bool, error) {
		names, err := workerNames(ctx, c)
		return err == nil && !slices.Contains(names, "dead"), err
	})
}
