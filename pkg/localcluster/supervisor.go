package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Restart backoff: the delay before starting a dead process again doubles
// from RestartBackoffMin up to RestartBackoffMax while the process keeps
// dying within RestartResetAfter of its start, and falls back to the
// minimum once it has stayed up that long.
const (
	RestartBackoffMin = 500 * time.Millisecond
	RestartBackoffMax = 30 * time.Second
	RestartResetAfter = 30 * time.Second
)

// child is one supervised process.
type child struct {
	proc    Proc
	bin     string
	args    []string
	cmd     *exec.Cmd // nil while not running
	backoff time.Duration
}

type exitEvent struct {
	c   *child
	err error
}

// Supervise runs the cluster described by dir/spec.json until ctx ends,
// then stops it. It is the body of the detached process Up starts; log
// receives what it does.
func Supervise(ctx context.Context, dir string, log io.Writer) error {
	logf := func(format string, a ...any) {
		fmt.Fprintf(log, "%s supervisor: %s\n", time.Now().Format(time.RFC3339), fmt.Sprintf(format, a...))
	}
	lf, ok, err := lock(dir)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("a local cluster is already up in %s", dir)
	}
	defer lf.Close()
	var spec Spec
	if err := readJSON(filepath.Join(dir, specFile), &spec); err != nil {
		return fmt.Errorf("read the cluster spec: %w", err)
	}
	addr, err := resolveListen(spec.Listen)
	if err != nil {
		return err
	}
	st := &State{Dir: dir, Addr: addr, Spec: spec, Started: time.Now().UTC(),
		Supervisor: Proc{Name: "supervisor", Role: "supervisor", PID: os.Getpid(), StartTicks: startTicks(os.Getpid()),
			Started: time.Now().UTC(), Log: filepath.Join(dir, logDir, "supervisor.log")}}
	children := newChildren(dir, addr, &spec)
	exits := make(chan exitEvent)
	restarts := make(chan *child)
	save := func() {
		st.Procs = st.Procs[:0]
		for _, c := range children {
			st.Procs = append(st.Procs, c.proc)
		}
		if err := writeJSON(filepath.Join(dir, stateFile), st); err != nil {
			logf("%v", err)
		}
	}
	start := func(c *child) {
		if err := c.start(exits); err != nil {
			logf("start %s: %v", c.proc.Name, err)
			c.proc.LastExit = err.Error()
			if !spec.NoRestart {
				c.scheduleRestart(ctx, restarts, logf)
			}
			return
		}
		logf("started %s, pid %d", c.proc.Name, c.proc.PID)
	}
	for _, c := range children {
		start(c)
	}
	save()
	logf("cluster up: coordinator %s, %d workers, %d spares", addr, spec.Workers, spec.Spares)

	for {
		select {
		case ev := <-exits:
			c := ev.c
			c.proc.LastExit = exitText(ev.err)
			c.proc.PID, c.proc.StartTicks, c.cmd = 0, 0, nil
			logf("%s exited: %s", c.proc.Name, c.proc.LastExit)
			if ctx.Err() == nil {
				if spec.NoRestart {
					logf("not restarting %s (--no-restart)", c.proc.Name)
				} else {
					c.scheduleRestart(ctx, restarts, logf)
				}
			}
			save()
		case c := <-restarts:
			if ctx.Err() != nil || c.cmd != nil {
				continue
			}
			c.proc.Restarts++
			start(c)
			save()
		case <-ctx.Done():
			logf("stopping")
			stopChildren(children, exits, time.Duration(spec.Grace), logf)
			if err := os.Remove(filepath.Join(dir, stateFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
				logf("%v", err)
			}
			logf("stopped")
			return nil
		}
	}
}

func newChildren(dir, addr string, spec *Spec) []*child {
	logPath := func(name string) string { return filepath.Join(dir, logDir, name+".log") }
	cs := []*child{{
		proc: Proc{Name: "coordinator", Role: RoleCoordinator, Log: logPath("coordinator")},
		bin:  spec.CoordinatorBin,
		args: []string{"--listen", addr, "--data-dir", filepath.Join(dir, coordinatorDir)},
	}}
	add := func(role, name string, labels ...string) {
		args := []string{"--coordinator", addr, "--name", name, "--slots", fmt.Sprint(spec.Slots)}
		for _, l := range labels {
			args = append(args, "--label", l)
		}
		cs = append(cs, &child{proc: Proc{Name: name, Role: role, Log: logPath(name)}, bin: spec.WorkerBin, args: args})
	}
	for i := 1; i <= spec.Workers; i++ {
		add(RoleWorker, fmt.Sprintf("worker-%d", i))
	}
	for i := 1; i <= spec.Spares; i++ {
		add(RoleSpare, fmt.Sprintf("spare-%d", i), "spare=true")
	}
	return cs
}

// start runs the child with its output appended to its log, in its own
// process group so that signals reach whatever it starts in turn.
func (c *child) start(exits chan<- exitEvent) error {
	f, err := os.OpenFile(c.proc.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close() // the child holds its own copy
	fmt.Fprintf(f, "%s ---- %s %v (start %d)\n", time.Now().Format(time.RFC3339), c.bin, c.args, c.proc.Restarts+1)
	cmd := exec.Command(c.bin, c.args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	c.cmd = cmd
	c.proc.PID = cmd.Process.Pid
	c.proc.StartTicks = startTicks(c.proc.PID)
	c.proc.Started = time.Now().UTC()
	go func() { exits <- exitEvent{c, cmd.Wait()} }()
	return nil
}

// scheduleRestart starts c again after its backoff, through restarts.
func (c *child) scheduleRestart(ctx context.Context, restarts chan<- *child, logf func(string, ...any)) {
	if !c.proc.Started.IsZero() && time.Since(c.proc.Started) >= RestartResetAfter {
		c.backoff = 0
	}
	if c.backoff == 0 {
		c.backoff = RestartBackoffMin
	} else {
		c.backoff = min(2*c.backoff, RestartBackoffMax)
	}
	logf("restarting %s in %v", c.proc.Name, c.backoff)
	t := time.NewTimer(c.backoff)
	go func() {
		select {
		case <-t.C:
			select {
			case restarts <- c:
			case <-ctx.Done():
			}
		case <-ctx.Done():
			t.Stop()
		}
	}()
}

// stopChildren stops the workers first, so that they can report their
// ranks to the coordinator, then the coordinator: SIGTERM, then SIGKILL
// after grace.
func stopChildren(children []*child, exits <-chan exitEvent, grace time.Duration, logf func(string, ...any)) {
	var workers, coord []*child
	for _, c := range children {
		if c.proc.Role == RoleCoordinator {
			coord = append(coord, c)
		} else {
			workers = append(workers, c)
		}
	}
	for _, group := range [][]*child{workers, coord} {
		waiting := map[*child]bool{}
		for _, c := range group {
			if c.cmd != nil {
				_ = syscall.Kill(-c.proc.PID, syscall.SIGTERM)
				waiting[c] = true
			}
		}
		timer := time.NewTimer(grace)
		for len(waiting) > 0 {
			select {
			case ev := <-exits:
				ev.c.cmd, ev.c.proc.PID = nil, 0
				delete(waiting, ev.c)
				logf("%s exited: %s", ev.c.proc.Name, exitText(ev.err))
			case <-timer.C:
				for c := range waiting {
					logf("%s did not exit within %v: SIGKILL", c.proc.Name, grace)
					_ = syscall.Kill(-c.proc.PID, syscall.SIGKILL)
				}
			}
		}
		timer.Stop()
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// resolveListen turns a port 0 into a free port, once: the coordinator
// keeps the address across restarts, and workers and contexts point at it.
// A fixed port must be free now, or the coordinator would fail to bind.
func resolveListen(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q is not host:port: %v", listen, err)
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return "", fmt.Errorf("cannot listen on %s (%v): another coordinator may be using it; pass --listen %s for a free port", listen, unwrapOp(err), net.JoinHostPort(host, "0"))
	}
	addr := l.Addr().(*net.TCPAddr)
	l.Close()
	if port == "0" {
		return net.JoinHostPort(host, fmt.Sprint(addr.Port)), nil
	}
	return listen, nil
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}
