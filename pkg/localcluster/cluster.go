package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Defaults of a cluster's shape.
const (
	DefaultListen  = "127.0.0.1:7070"
	DefaultWorkers = 2
	DefaultSlots   = 1
	DefaultGrace   = 15 * time.Second
	// DefaultReadyTimeout bounds how long Up waits for every worker to
	// register.
	DefaultReadyTimeout = 90 * time.Second
	// MaxWorkers bounds workers plus spares: each is a process.
	MaxWorkers = 64
)

// Home is tern's directory for this user: $TERN_HOME, else ~/.tern.
func Home() (string, error) {
	if h := os.Getenv("TERN_HOME"); h != "" {
		return h, nil
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no home directory for ~/.tern (%v): set TERN_HOME", err)
	}
	return filepath.Join(h, ".tern"), nil
}

// DefaultDir is where the local cluster lives unless told otherwise:
// Home()/local.
func DefaultDir() (string, error) {
	h, err := Home()
	if err != nil {
		return "", err
	}
	return filepath.Join(h, "local"), nil
}

// UpOptions says how to start a cluster.
type UpOptions struct {
	Dir  string
	Spec Spec
	// Supervisor is the command line that runs Supervise(ctx, Dir) in a
	// process of its own, e.g. {"/usr/bin/ternctl", "__supervise", DIR}.
	Supervisor []string
	// ReadyTimeout bounds the wait for every worker to register (default
	// DefaultReadyTimeout).
	ReadyTimeout time.Duration
}

// ErrAlreadyUp comes with the state of the cluster already running.
var ErrAlreadyUp = errors.New("a local cluster is already up")

// Validate fills in defaults and checks the cluster's shape, naming what
// is wrong. Up also checks the programs.
func (s *Spec) Validate() error {
	if s.Listen == "" {
		s.Listen = DefaultListen
	}
	if s.Grace == 0 {
		s.Grace = Duration(DefaultGrace)
	}
	host, _, err := net.SplitHostPort(s.Listen)
	switch {
	case err != nil:
		return fmt.Errorf("--listen %q is not host:port: %v", s.Listen, err)
	case !isLoopback(host):
		return fmt.Errorf("--listen %q: a local cluster listens on loopback only (e.g. 127.0.0.1:7070, or 127.0.0.1:0 for a free port)", s.Listen)
	case s.Workers < 1:
		return fmt.Errorf("--workers %d: a cluster needs at least 1 worker", s.Workers)
	case s.Spares < 0:
		return fmt.Errorf("--spares %d is negative", s.Spares)
	case s.Workers+s.Spares > MaxWorkers:
		return fmt.Errorf("--workers %d + --spares %d: at most %d worker processes on one machine", s.Workers, s.Spares, MaxWorkers)
	case s.Slots < 1:
		return fmt.Errorf("--slots %d: a worker runs at least 1 rank", s.Slots)
	case s.Grace < 0:
		return fmt.Errorf("grace period %v is negative", time.Duration(s.Grace))
	}
	return nil
}

// checkPrograms checks that the coordinator and worker programs can run.
func (s *Spec) checkPrograms() error {
	for _, b := range []struct{ flag, path string }{{"coordinator", s.CoordinatorBin}, {"worker", s.WorkerBin}} {
		if !filepath.IsAbs(b.path) {
			return fmt.Errorf("the %s program %q is not an absolute path", b.flag, b.path)
		}
		st, err := os.Stat(b.path)
		if err != nil {
			return fmt.Errorf("the %s program: %v (make build puts it in bin/)", b.flag, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("the %s program %s is not executable", b.flag, b.path)
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Up starts a cluster in o.Dir and returns its state once every worker has
// registered with the coordinator. When one is already up there, it
// returns that one's state and ErrAlreadyUp. If the cluster does not come
// up, Up stops what it started.
func Up(ctx context.Context, o UpOptions) (*State, error) {
	if err := o.Spec.Validate(); err != nil {
		return nil, err
	}
	if err := o.Spec.checkPrograms(); err != nil {
		return nil, err
	}
	if len(o.Supervisor) == 0 {
		return nil, errors.New("no supervisor command")
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = DefaultReadyTimeout
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, logDir), 0o755); err != nil {
		return nil, fmt.Errorf("create the cluster directory: %w", err)
	}
	up, err := locked(dir)
	if err != nil {
		return nil, err
	}
	if up {
		st, err := waitState(ctx, dir, 0, nil)
		if err != nil {
			return nil, err
		}
		return st, ErrAlreadyUp
	}
	if st, err := ReadState(dir); err == nil {
		// A supervisor that was killed outright leaves its state behind,
		// and maybe its processes.
		var left []string
		for _, p := range st.Procs {
			if alive(p) {
				left = append(left, fmt.Sprintf("%s (pid %d)", p.Name, p.PID))
			}
		}
		if len(left) > 0 {
			return nil, fmt.Errorf("the previous cluster in %s lost its supervisor but %s still run: stop them with `ternctl down --dir %s`", dir, strings.Join(left, ", "), dir)
		}
		os.Remove(filepath.Join(dir, stateFile))
	} else if !errors.Is(err, ErrNotUp) {
		return nil, err
	}
	if err := writeJSON(filepath.Join(dir, specFile), &o.Spec); err != nil {
		return nil, err
	}

	supLog := filepath.Join(dir, logDir, "supervisor.log")
	lf, err := os.OpenFile(supLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.Supervisor[0], o.Supervisor[1:]...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// A session of its own: no terminal, so neither Ctrl-C nor closing
	// the terminal reaches the cluster.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	lf.Close()
	if err != nil {
		return nil, fmt.Errorf("start the supervisor: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	fail := func(err error) (*State, error) {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(2*time.Duration(o.Spec.Grace) + killWait):
			_ = cmd.Process.Kill()
			<-exited
		}
		if st, rerr := ReadState(dir); rerr == nil {
			stopProcs(st.Procs, time.Duration(o.Spec.Grace))
		}
		os.Remove(filepath.Join(dir, stateFile))
		os.Remove(filepath.Join(dir, specFile))
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, o.ReadyTimeout)
	defer cancel()
	st, err := waitState(rctx, dir, cmd.Process.Pid, exited)
	if err != nil {
		return fail(err)
	}
	var names []string
	for _, p := range st.Workers() {
		names = append(names, p.Name)
	}
	if err := WaitRegistered(rctx, dir, names, exited); err != nil {
		if rctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("the workers did not all register within %v: see the logs in %s", o.ReadyTimeout, filepath.Join(dir, logDir))
		}
		return fail(err)
	}
	return ReadState(dir)
}

// waitState waits for the supervisor with pid (any, if 0) to write
// state.json with every process started.
func waitState(ctx context.Context, dir string, pid int, exited <-chan struct{}) (*State, error) {
	for {
		st, err := ReadState(dir)
		if err == nil && (pid == 0 || st.Supervisor.PID == pid) && len(st.Procs) > 0 {
			return st, nil
		}
		if err != nil && !errors.Is(err, ErrNotUp) {
			return nil, err
		}
		select {
		case <-exited:
			return nil, supervisorFailed(dir)
		case <-ctx.Done():
			return nil, fmt.Errorf("the supervisor did not start the cluster: see %s", filepath.Join(dir, logDir, "supervisor.log"))
		case <-time.After(pollInterval):
		}
	}
}

// supervisorFailed reads why the supervisor exited from the last line of
// its log.
func supervisorFailed(dir string) error {
	p := filepath.Join(dir, logDir, "supervisor.log")
	b, _ := os.ReadFile(p)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	last := lines[len(lines)-1]
	if last == "" {
		return fmt.Errorf("the supervisor exited before the cluster was up: see %s", p)
	}
	return fmt.Errorf("the supervisor exited before the cluster was up: %s", strings.TrimPrefix(last, "error: "))
}

// WaitRegistered waits until every worker named is connected to the
// coordinator as the process state.json records: when the coordinator
// knows a worker's pid, it must be the one the supervisor started (after a
// restart, the old process's registration may linger until its lease
// lapses). It gives up when ctx ends or exited (if not nil) closes.
func WaitRegistered(ctx context.Context, dir string, names []string, exited <-chan struct{}) error {
	var conn *grpc.ClientConn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	addr := ""
	for {
		st, err := ReadState(dir)
		if err != nil {
			return err
		}
		if conn == nil || st.Addr != addr {
			if conn != nil {
				conn.Close()
			}
			addr = st.Addr
			if conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
				return fmt.Errorf("coordinator at %s: %w", addr, err)
			}
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, err := ternv1.NewCoordinatorServiceClient(conn).ListWorkers(cctx, &ternv1.ListWorkersRequest{})
		cancel()
		if err == nil && allRegistered(st, resp.Workers, names) {
			return nil
		}
		select {
		case <-exited:
			return supervisorFailed(dir)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(4 * pollInterval):
		}
	}
}

func allRegistered(st *State, ws []*ternv1.Worker, names []string) bool {
	byName := map[string]*ternv1.Worker{}
	for _, w := range ws {
		byName[w.Name] = w
	}
	for _, n := range names {
		w, ok := byName[n]
		p, _ := st.Proc(n)
		if !ok || !w.Connected || p.PID == 0 || (w.Pid != 0 && int(w.Pid) != p.PID) {
			return false
		}
	}
	return true
}

// DownResult says what Down did.
type DownResult struct {
	// WasUp: a supervisor held the cluster; Leftover: processes of a
	// cluster whose supervisor had died, stopped here.
	WasUp    bool
	Leftover []string
	// State is the cluster's last state, nil if none was found.
	State *State
}

// Down stops the cluster in dir and removes its state and the
// coordinator's data; with purge, its logs too. With nothing up there it
// returns ErrNotUp (after purging, if asked).
func Down(ctx context.Context, dir string, grace time.Duration, purge bool) (*DownResult, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	res := &DownResult{}
	up, err := locked(dir)
	if err != nil {
		return nil, err
	}
	st, err := ReadState(dir)
	if err != nil && !errors.Is(err, ErrNotUp) {
		return nil, err
	}
	if up && st == nil {
		// The supervisor has just started: its state comes at once.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, _ = waitState(wctx, dir, 0, nil)
		cancel()
	}
	res.State, res.WasUp = st, up
	if up && st != nil {
		if grace == 0 {
			grace = time.Duration(st.Spec.Grace)
		}
		sup := st.Supervisor
		signalProc(sup, syscall.SIGTERM)
		// Workers, then the coordinator, each get grace.
		if !waitUnlocked(ctx, dir, 2*grace+killWait) {
			signalProc(sup, syscall.SIGKILL)
			waitUnlocked(ctx, dir, killWait)
		}
	}
	if grace == 0 {
		grace = DefaultGrace
	}
	// Whatever a supervisor that died left behind.
	if left, err := ReadState(dir); err == nil {
		var ps []Proc
		for _, p := range left.Procs {
			if alive(p) {
				ps = append(ps, p)
				res.Leftover = append(res.Leftover, fmt.Sprintf("%s (pid %d)", p.Name, p.PID))
			}
		}
		stopProcs(ps, grace)
	}
	for _, name := range []string{stateFile, specFile, coordinatorDir} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return res, err
		}
	}
	if purge {
		if err := os.RemoveAll(filepath.Join(dir, logDir)); err != nil {
			return res, err
		}
		os.Remove(lockPath(dir))
		os.Remove(dir) // only if nothing else is in it
	}
	if !up && st == nil {
		return res, ErrNotUp
	}
	return res, nil
}

func signalProc(p Proc, sig syscall.Signal) {
	if alive(p) {
		_ = syscall.Kill(p.PID, sig)
	}
}

func waitUnlocked(ctx context.Context, dir string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if up, err := locked(dir); err == nil && !up {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(pollInterval)
	}
}

// Tail returns the last n lines of a log file, for error messages.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
