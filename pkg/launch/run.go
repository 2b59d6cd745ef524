package launch

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
)

// Options say how to start the children.
type Options struct {
	// Exe and Args start one child; it must call Child with its stdin,
	// stdout and stderr (ternctl: its own binary with a hidden command).
	Exe  string
	Args []string
	// Env is added to this process's environment for the children.
	Env []string
	// Stderr receives the children's stderr, each line prefixed with its
	// rank. Nil discards it.
	Stderr io.Writer
	// OnStart, when set, is told each child's process id once it runs.
	OnStart func(rank, pid int)
}

// event is one thing a child did: a line it wrote, or its exit.
type event struct {
	rank int
	msg  fromChild
	exit error // set, with done, when the process has exited
	done bool
}

type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{} // closed once the process has been waited for
	mu     sync.Mutex    // guards writes to stdin
}

func (p *proc) send(m toChild) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err = p.stdin.Write(append(b, '\n'))
	return err
}

// Run trains job as spec.parallel.data worker processes on this machine and
// returns the combined summary: loss and eval loss of the global batch,
// tokens/s of all replicas together, and per-worker maxima of step time,
// memory and exchanged bytes. opts.Observer sees one report per step.
// Cancelling ctx asks every worker to stop after its current step (writing
// a checkpoint when configured), as in a single-process run.
func Run(ctx context.Context, job *spec.TrainingJob, opts train.Options, lo Options) (*train.Summary, error) {
	start := time.Now()
	n := job.Spec.Parallel.Data * job.Spec.Parallel.Pipeline
	obs := opts.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	events := make(chan event, 16*n)
	procs := make([]*proc, n)
	// Whatever happens, no child outlives Run: closing stdin asks it to
	// stop; the kill covers a child that does not.
	var readers sync.WaitGroup
	defer func() {
		for _, p := range procs {
			if p == nil {
				continue
			}
			p.stdin.Close()
		}
		waitOrKill(procs, 30*time.Second)
		readers.Wait()
	}()
	for rank := range n {
		p, err := startChild(lo, rank, events, &readers)
		if err != nil {
			return nil, err
		}
		procs[rank] = p
		cfg := &config{
			Job: job.CanonicalJSON(), Rank: rank, World: n, Token: token,
			CheckpointDir: opts.CheckpointDir, Resume: opts.Resume, Progress: rank == 0 && opts.Progress != nil,
		}
		if err := p.send(toChild{Config: cfg}); err != nil {
			return nil, fmt.Errorf("rank %d: send configuration: %w", rank, err)
		}
	}

	// Handshake: every child's address, then everyone's peer list.
	addrs := make([]string, n)
	deadline := time.After(listenTimeout)
	for got := 0; got < n; {
		select {
		case ev := <-events:
			if err := childFailed(ev, procs); err != nil {
				return nil, err
			}
			if ev.msg.Listening != "" {
				addrs[ev.rank] = ev.msg.Listening
				got++
			}
		case <-deadline:
			return nil, fmt.Errorf("workers did not report their addresses within %v", listenTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	for rank, p := range procs {
		if err := p.send(toChild{Peers: addrs}); err != nil {
			return nil, fmt.Errorf("rank %d: send peer list: %w", rank, err)
		}
	}

	agg := newAggregator(n, job.Spec.Parallel.Pipeline, obs)
	stopSent := false
	done := ctx.Done()
	for agg.summaries < n {
		select {
		case <-done:
			// Ask once; the workers agree on the last step among
			// themselves and write their summaries.
			done = nil
			if !stopSent {
				stopSent = true
				for _, p := range procs {
					_ = p.send(toChild{Stop: true})
				}
			}
		case ev := <-events:
			if err := childFailed(ev, procs); err != nil {
				return nil, rootCause(ev, err, events, procs)
			}
			if err := agg.add(ev.rank, ev.msg); err != nil {
				return nil, err
			}
		}
	}
	sum := agg.summary()
	sum.WallS = time.Since(start).Seconds()
	return sum, nil
}

// childFailed turns an error line or an exit before the summary into the
// run's error, naming the rank.
func childFailed(ev event, procs []*proc) error {
	switch {
	case ev.msg.Error != "":
		return fmt.Errorf("rank %d: %s", ev.rank, ev.msg.Error)
	case ev.done:
		status := "exit status 0"
		if ev.exit != nil {
			status = ev.exit.Error()
			var ee *exec.ExitError
			if errors.As(ev.exit, &ee) {
				status = ee.ProcessState.String()
			}
		}
		return fmt.Errorf("rank %d (pid %d) exited before finishing (%s)", ev.rank, procs[ev.rank].cmd.Process.Pid, status)
	}
	return nil
}

// failureGrace is how long the launcher keeps listening after the first
// failure to find its cause: when one worker dies, the others report losing
// it a moment later, and the dead one is the news.
const failureGrace = 2 * time.Second

// rootCause collects the failures that follow the first one for a moment
// and reports the process that died (exited without reporting an error) in
// preference to the ranks that merely lost it.
func rootCause(first event, firstErr error, events <-chan event, procs []*proc) error {
	if first.done {
		return firstErr
	}
	timeout := time.After(failureGrace)
	reported := map[int]bool{first.rank: true}
	for {
		select {
		case ev := <-events:
			if ev.msg.Error != "" {
				reported[ev.rank] = true
			}
			if ev.done && !reported[ev.rank] {
				err := childFailed(ev, procs)
				return fmt.Errorf("%w; the others stopped: %v", err, firstErr)
			}
		case <-timeout:
			return firstErr
		}
	}
}

func startChild(lo Options, rank int, events chan<- event, readers *sync.WaitGroup) (*proc, error) {
	cmd := exec.Command(lo.Exe, lo.Args...)
	if lo.Env != nil {
		cmd.Env = append(os.Environ(), lo.Env...)
	}
	detach(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr := lo.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	cmd.Stderr = &prefixWriter{w: stderr, prefix: fmt.Sprintf("[rank %d] ", rank)}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker rank %d (%s): %w", rank, lo.Exe, err)
	}
	if lo.OnStart != nil {
		lo.OnStart(rank, cmd.Process.Pid)
	}
	p := &proc{cmd: cmd, stdin: stdin, exited: make(chan struct{})}
	readers.Add(1)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		sawSummary := false
		for sc.Scan() {
			var m fromChild
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				events <- event{rank: rank, msg: fromChild{Error: fmt.Sprintf("malformed report %q: %v", truncate(sc.Text(), 200), err)}}
				continue
			}
			sawSummary = sawSummary || m.Summary != nil
			events <- event{rank: rank, msg: m}
		}
		err := cmd.Wait()
		close(p.exited)
		if sawSummary && err == nil {
			return
		}
		events <- event{rank: rank, exit: err, done: true}
	}()
	return p, nil
}

// waitOrKill gives the children time to exit on their own, then kills the
// rest.
func waitOrKill(procs []*proc, grace time.Duration) {
	timeout := time.After(grace)
	for _, p := range procs {
		if p == nil {
			continue
		}
		select {
		case <-p.exited:
		case <-timeout:
			_ = p.cmd.Process.Kill()
		}
	}
}

func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("job token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// prefixWriter prefixes every line written to it.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	mid    bool // inside a line
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var sb strings.Builder
	for _, c := range b {
		if !p.mid {
			sb.WriteString(p.prefix)
			p.mid = true
		}
		sb.WriteByte(c)
		if c == '\n' || c == '\r' {
			p.mid = false
		}
	}
	if _, err := io.WriteString(p.w, sb.String()); err != nil {
		return 0, err
	}
	return len(b), nil
}

type nopObserver struct{}

func (nopObserver) Started(train.RunInfo) {}
func (nopObserver) Step(train.StepReport) {}
func (nopObserver) Log(string)            {}
