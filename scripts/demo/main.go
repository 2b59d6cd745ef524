// Command demo is what `make demo` runs: it starts a local cluster with
// `ternctl up`, submits examples/demo.yaml with `ternctl apply`, follows the
// job with `ternctl get jobs -o json` until it is over, prints a summary
// (eval loss, tokens/s, bytes on the wire per step, and the optimizer
// state saved against AdamW, from `ternctl plan`), and stops the cluster
// with `ternctl down`, also when the job fails or the demo is interrupted.
//
//	go run ./scripts/demo [--bin bin] [-f examples/demo.yaml] [--set k=v]... [--keep] [--kill-worker-at 0.4]
//
// With --kill-worker-at F (make demo passes 0.4) it also plays a machine
// failing: once a fraction F of the steps is done it kills the worker
// running rank 1 with SIGKILL; the cluster's supervisor starts the worker
// again and the coordinator restores every rank from the last committed
// step: from the snapshots the workers hold in memory, else from the latest
// checkpoint (written every checkpoint.everySteps steps into the cluster's
// directory).
//
// It drives ternctl as a user would, echoing each command, so what it does
// can be repeated by hand. The cluster lives in $TERN_HOME/demo (default
// ~/.tern/demo) on a free loopback port, under the context "demo", so it
// leaves any cluster of `ternctl up` alone; the context that was current
// before is current again afterwards. The logs stay in the cluster's
// directory.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// pollInterval paces the progress checks; coordinatorGone is how long the
// coordinator may not answer before the demo gives up.
const (
	pollInterval    = time.Second
	coordinatorGone = 2 * time.Minute
	// stallLimit is how long a job may sit at one step in one phase (the
	// first step includes tokenising the corpus once) before the demo
	// gives up on it.
	stallLimit = 5 * time.Minute
)

type sets []string

func (s *sets) String() string     { return strings.Join(*s, ",") }
func (s *sets) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	bin := flag.String("bin", "bin", "directory holding ternctl, coordinator and worker (make build)")
	file := flag.String("f", "examples/demo.yaml", "the job to run")
	dir := flag.String("dir", "", "the cluster's directory (default $TERN_HOME/demo, else ~/.tern/demo)")
	keep := flag.Bool("keep", false, "leave the cluster up at the end (stop it with ternctl down --dir DIR)")
	killAt := flag.Float64("kill-worker-at", 0, "kill -9 the worker of rank 1 once this fraction of the steps is done (e.g. 0.4), to watch the job recover; 0: never")
	var overrides sets
	flag.Var(&overrides, "set", "override a field of the job, e.g. --set steps=20 (repeatable)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if *killAt < 0 || *killAt >= 1 {
		fmt.Fprintf(os.Stderr, "demo: --kill-worker-at %v: want a fraction of the steps in [0, 1)\n", *killAt)
		os.Exit(2)
	}
	d := &demo{bin: *bin, file: *file, dir: *dir, keep: *keep, sets: overrides, killAt: *killAt, out: os.Stdout, tty: isTerminal(os.Stdout)}
	err := d.run(ctx)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		if interrupted {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

type demo struct {
	bin, file, dir string
	keep           bool
	sets           []string
	killAt         float64
	kill           *killed       // what --kill-worker-at did
	trainWall      time.Duration // from the job running to its end, as seen here
	out            io.Writer
	tty            bool
	addr           string
}

func (d *demo) run(ctx context.Context) (err error) {
	start := time.Now()
	if d.dir == "" {
		home := os.Getenv("TERN_HOME")
		if home == "" {
			h, err := os.UserHomeDir()
			if err != nil {
				return fmt.Errorf("no home directory (%v): pass --dir", err)
			}
			home = filepath.Join(h, ".tern")
		}
		d.dir = filepath.Join(home, "demo")
	}
	jobName, err := d.jobName()
	if err != nil {
		return err
	}
	// What the job will hold and send, before it runs, and what AdamW
	// with a float32 all-reduce would.
	d.step("Plan the job: memory per stage and bytes on the wire, before anything runs")
	if _, err := d.ternctl(false, append([]string{"plan", "-f", d.file}, d.setArgs()...)...); err != nil {
		return err
	}
	plan, err := d.plan()
	if err != nil {
		return err
	}
	adamw, err := d.plan("--set", "optimizer.name=adamw", "--set", "optimizer.demo=null", "--set", "communication.exchange=dense")
	if err != nil {
		return err
	}

	prevContext, _ := d.quiet("config", "current-context")
	// A demo cluster left over from an interrupted run goes first.
	if _, err := d.quiet("down", "--dir", d.dir); err != nil {
		return err
	}
	workers := plan.ranks()
	d.step(fmt.Sprintf("Start a local cluster: a coordinator and %d workers, each a process of its own", workers))
	if _, err := d.ternctl(false, "up", "--dir", d.dir, "--workers", fmt.Sprint(workers), "--listen", "127.0.0.1:0", "--context", "demo"); err != nil {
		return err
	}
	// Where the coordinator listens, from the cluster's state file.
	b, err := os.ReadFile(filepath.Join(d.dir, "state.json"))
	if err != nil {
		return err
	}
	var st struct {
		Addr string `json:"addr"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Addr == "" {
		return fmt.Errorf("%s: no coordinator address (%v)", filepath.Join(d.dir, "state.json"), err)
	}
	d.addr = st.Addr
	defer func() {
		if d.keep && err == nil {
			fmt.Fprintf(d.out, "\nThe cluster is still up (context demo): stop it with  %s down --dir %s\n", d.ternctlPath(), d.dir)
			return
		}
		d.step("Stop the cluster")
		// Interrupted or not, the cluster goes: a fresh context for down.
		if _, derr := d.ternctlCtx(context.Background(), false, "down", "--dir", d.dir); derr != nil && err == nil {
			err = derr
		}
		if strings.TrimSpace(prevContext) != "" {
			_, _ = d.quiet("config", "use-context", strings.TrimSpace(prevContext))
		}
		_, _ = d.quiet("config", "delete-context", "demo")
		_ = os.RemoveAll(filepath.Join(d.dir, "checkpoints"))
		fmt.Fprintf(d.out, "Logs of every process: %s\nThe demo took %s.\n", filepath.Join(d.dir, "logs"), time.Since(start).Round(time.Second))
	}()
	if _, err := d.ternctl(false, "get", "workers"); err != nil {
		return err
	}

	// Checkpoints, which a restarted job resumes from, go in the cluster's
	// directory, fresh for every demo.
	ckpt := filepath.Join(d.dir, "checkpoints")
	if err := os.RemoveAll(ckpt); err != nil {
		return err
	}
	d.step("Submit the job; the coordinator places its ranks on the workers")
	if _, err := d.ternctl(false, append([]string{"apply", "-f", d.file, "--set", "checkpoint.dir=" + ckpt}, d.setArgs()...)...); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "(in another terminal:  %[1]s get jobs %[2]s -w   or   %[1]s describe job %[2]s)\n", d.ternctlPath(), jobName)

	d.step("Training")
	job, firstLoss, err := d.follow(ctx, jobName)
	if err != nil {
		return err
	}
	if job.Phase != "Succeeded" {
		_, _ = d.ternctl(false, "describe", "job", jobName)
		return fmt.Errorf("job %s %s: %s", jobName, strings.ToLower(job.Phase), job.Reason)
	}
	d.summary(job, firstLoss, plan, adamw)
	return nil
}

// jobView is the part of `ternctl get jobs NAME -o json` the demo reads.
type jobView struct {
	Name             string   `json:"name"`
	Phase            string   `json:"phase"`
	Reason           string   `json:"reason"`
	DataParallel     int      `json:"data_parallel"`
	PipelineParallel int      `json:"pipeline_parallel"`
	Steps            int64    `json:"steps"`
	CommittedStep    int64    `json:"committed_step"`
	LastLoss         *float64 `json:"last_loss"`
	TokensPerSecond  *float64 `json:"tokens_per_second"`
	Restarts         int      `json:"restarts"`
	Events           []struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"events"`
	Ranks []struct {
		Rank   int    `json:"rank"`
		Worker string `json:"worker"`
	} `json:"ranks"`
	Summary *struct {
		Steps               int64    `json:"steps"`
		FinalLoss           *float64 `json:"final_loss"`
		FinalEvalLoss       *float64 `json:"final_eval_loss"`
		TokensPerSecond     float64  `json:"tokens_per_second"`
		StepMSMedian        float64  `json:"step_ms_median"`
		WallSeconds         float64  `json:"wall_seconds"`
		Params              int64    `json:"params"`
		OptimizerStateBytes int64    `json:"optimizer_state_bytes"`
		BytesSentPerStep    int64    `json:"bytes_sent_per_step"`
		BytesRecvPerStep    int64    `json:"bytes_recv_per_step"`
	} `json:"summary"`
}

func isOver(phase string) bool {
	return phase == "Succeeded" || phase == "Failed" || phase == "Cancelled"
}

// follow polls the job until it is over, drawing a progress line (redrawn
// in place on a terminal, one line per 10% otherwise). It returns the job
// as it ended and the first loss it saw.
func (d *demo) follow(ctx context.Context, name string) (*jobView, float64, error) {
	firstLoss := math.NaN()
	lastPhase, lastDecile := "", int64(-1)
	began, baseStep := time.Now(), int64(-1)
	var running time.Time // when the job was first seen running
	var unreachableSince time.Time
	lastStep, lastChange := int64(-1), time.Now()
	for {
		out, err := d.quiet("get", "jobs", name, "-o", "json")
		if err != nil {
			// The supervisor restarts a coordinator that exits; the job is
			// in etcd and goes on. Give it time before giving up.
			if unreachableSince.IsZero() {
				unreachableSince = time.Now()
				if d.tty {
					fmt.Fprintln(d.out)
				}
				fmt.Fprintf(d.out, "the coordinator does not answer; waiting for the supervisor to restart it (%v)\n", firstLine(err))
			}
			if time.Since(unreachableSince) > coordinatorGone {
				return nil, 0, err
			}
			select {
			case <-ctx.Done():
				return nil, 0, errors.New("interrupted")
			case <-time.After(pollInterval):
			}
			continue
		}
		unreachableSince = time.Time{}
		var j jobView
		if err := json.Unmarshal([]byte(out), &j); err != nil {
			return nil, 0, fmt.Errorf("ternctl get jobs %s -o json: %v", name, err)
		}
		if j.CommittedStep != lastStep || j.Phase != lastPhase {
			lastStep, lastChange = j.CommittedStep, time.Now()
		} else if time.Since(lastChange) > stallLimit {
			return nil, 0, fmt.Errorf("job %s made no progress for %v (phase %s%s): see %s and ternctl describe job %s",
				name, stallLimit, j.Phase, reasonText(j.Reason), filepath.Join(d.dir, "logs"), name)
		}
		if j.LastLoss != nil && math.IsNaN(firstLoss) {
			firstLoss = *j.LastLoss
		}
		// The ETA comes from this attempt's pace: from the first step seen
		// running, again after a recovery.
		if j.Phase == "Running" && running.IsZero() {
			running = time.Now()
		}
		if j.Phase != "Running" {
			baseStep = -1
		} else if baseStep < 0 && j.CommittedStep > 0 {
			baseStep, began = j.CommittedStep, time.Now()
		}
		if j.Phase != lastPhase {
			if d.tty && lastPhase != "" {
				fmt.Fprintln(d.out)
			}
			fmt.Fprintf(d.out, "phase %s%s\n", j.Phase, reasonText(j.Reason))
			lastPhase = j.Phase
		}
		if isOver(j.Phase) {
			if d.tty {
				fmt.Fprintln(d.out)
			}
			if !running.IsZero() {
				d.trainWall = time.Since(running)
			}
			return &j, firstLoss, nil
		}
		if d.killAt > 0 && d.kill == nil && j.Phase == "Running" && float64(j.CommittedStep) >= d.killAt*float64(j.Steps) {
			if d.tty {
				fmt.Fprintln(d.out)
			}
			if err := d.killWorker(&j); err != nil {
				return nil, 0, err
			}
			lastDecile = -1
		}
		if j.CommittedStep > 0 && j.Steps > 0 {
			line := progressLine(&j, baseStep, time.Since(began))
			decile := 10 * j.CommittedStep / j.Steps
			switch {
			case d.tty:
				fmt.Fprintf(d.out, "\r\033[K%s", line)
			case decile != lastDecile:
				fmt.Fprintln(d.out, line)
				lastDecile = decile
			}
		}
		select {
		case <-ctx.Done():
			if d.tty {
				fmt.Fprintln(d.out)
			}
			return nil, 0, errors.New("interrupted")
		case <-time.After(pollInterval):
		}
	}
}

func reasonText(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

// progressLine says where the job is; the ETA extrapolates the pace since
// step base was seen, since ago.
func progressLine(j *jobView, base int64, since time.Duration) string {
	line := fmt.Sprintf("step %d/%d (%d%%)", j.CommittedStep, j.Steps, 100*j.CommittedStep/j.Steps)
	if j.LastLoss != nil {
		line += fmt.Sprintf("  loss %.3f", *j.LastLoss)
	}
	if j.TokensPerSecond != nil {
		line += fmt.Sprintf("  %s tokens/s", count(*j.TokensPerSecond))
	}
	if base >= 0 && j.CommittedStep > base {
		per := since / time.Duration(j.CommittedStep-base)
		line += fmt.Sprintf("  ETA %s", (per * time.Duration(j.Steps-j.CommittedStep)).Round(time.Second))
	}
	if j.Restarts > 0 {
		line += fmt.Sprintf("  restarts %d", j.Restarts)
	}
	return line
}

// killed is what --kill-worker-at did.
type killed struct {
	worker string
	pid    int
	step   int64
	at     time.Time
}

// killWorker sends SIGKILL to the worker process running rank 1 (a rank
// of the second pipeline stage, or the second replica), found by its pid
// in `ternctl get workers -o json`, as a machine failing would.
func (d *demo) killWorker(j *jobView) error {
	worker := ""
	for _, r := range j.Ranks {
		if r.Rank == min(1, len(j.Ranks)-1) {
			worker = r.Worker
		}
	}
	out, err := d.quiet("get", "workers", "-o", "json")
	if err != nil {
		return err
	}
	var list struct {
		Items []struct {
			Name string `json:"name"`
			Pid  int    `json:"pid"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return fmt.Errorf("ternctl get workers -o json: %v", err)
	}
	pid := 0
	for _, w := range list.Items {
		if w.Name == worker {
			pid = w.Pid
		}
	}
	if pid <= 0 {
		return fmt.Errorf("no pid for worker %q of rank 1 in ternctl get workers", worker)
	}
	d.step(fmt.Sprintf("A machine fails: kill -9 %s (pid %d), which runs rank 1, at step %d", worker, pid, j.CommittedStep))
	fmt.Fprintf(d.out, "$ kill -9 %d\n", pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 %d: %w", pid, err)
	}
	fmt.Fprintf(d.out, "The supervisor starts %s again; the coordinator restores the job's ranks from the last committed step\n"+
		"(snapshots held in the workers' memory, else the latest checkpoint) and training goes on.\n", worker)
	d.kill = &killed{worker: worker, pid: pid, step: j.CommittedStep, at: time.Now()}
	return nil
}

// planView is the part of `ternctl plan -o json` the demo reads.
type planView struct {
	Optimizer    string `json:"optimizer"`
	Params       int64  `json:"params"`
	Workers      int    `json:"workers"`
	ExchangeSent int64  `json:"exchange_sent_bytes"`
	Exchange     string `json:"exchange"`
	Stages       []struct {
		Params    int64 `json:"params"`
		Optimizer int64 `json:"optimizer_bytes"`
	} `json:"stages"`
	OptimizerBytes int64 `json:"optimizer_bytes"`
}

// ranks is data × pipeline: the plan counts replicas as workers, each
// holding every stage.
func (p *planView) ranks() int { return max(1, p.Workers) * max(1, len(p.Stages)) }

// optimizerState is the optimizer state of one whole replica of the
// model: the sum over its stages.
func (p *planView) optimizerState() int64 {
	if len(p.Stages) == 0 {
		return p.OptimizerBytes
	}
	var n int64
	for _, s := range p.Stages {
		n += s.Optimizer
	}
	return n
}

func (d *demo) plan(extra ...string) (*planView, error) {
	args := append(append([]string{"plan", "-f", d.file, "-o", "json"}, d.setArgs()...), extra...)
	out, err := d.quiet(args...)
	if err != nil {
		return nil, err
	}
	var p planView
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		return nil, fmt.Errorf("ternctl plan -o json: %v", err)
	}
	return &p, nil
}

func (d *demo) summary(j *jobView, firstLoss float64, plan, adamw *planView) {
	s := j.Summary
	w := d.out
	fmt.Fprintf(w, "\n==> Summary\n")
	fmt.Fprintf(w, "  layout       %d data-parallel replicas x %d pipeline stages = %d ranks on %d worker processes\n",
		j.DataParallel, j.PipelineParallel, j.DataParallel*j.PipelineParallel, plan.ranks())
	if s == nil {
		fmt.Fprintf(w, "  (the job reported no summary)\n")
		return
	}
	loss := "-"
	if s.FinalLoss != nil {
		loss = fmt.Sprintf("%.3f", *s.FinalLoss)
		if !math.IsNaN(firstLoss) {
			loss = fmt.Sprintf("%.3f at step 1 -> %.3f at step %d", firstLoss, *s.FinalLoss, s.Steps)
		}
	}
	fmt.Fprintf(w, "  train loss   %s\n", loss)
	if s.FinalEvalLoss != nil {
		fmt.Fprintf(w, "  eval loss    %.3f (held-out Go files)\n", *s.FinalEvalLoss)
	}
	wall := d.trainWall
	if wall == 0 {
		wall = time.Duration(s.WallSeconds * float64(time.Second))
	}
	fmt.Fprintf(w, "  throughput   %s tokens/s, median step %.0f ms, %d steps in %s\n",
		count(s.TokensPerSecond), s.StepMSMedian, s.Steps, wall.Round(time.Second))
	fmt.Fprintf(w, "  on the wire  %s sent, %s received per step by the busiest rank (pipeline activations and DeMo's exchange)\n",
		bytesText(s.BytesSentPerStep), bytesText(s.BytesRecvPerStep))
	if plan.ExchangeSent > 0 && adamw.ExchangeSent > 0 {
		fmt.Fprintf(w, "               gradient exchange %s per rank per step, where AdamW's float32 all-reduce sends %s: %.0fx less (plan)\n",
			bytesText(plan.ExchangeSent), bytesText(adamw.ExchangeSent), float64(adamw.ExchangeSent)/float64(plan.ExchangeSent))
	}
	if k := d.kill; k != nil {
		fmt.Fprintf(w, "  recovery     %s killed at step %d; the job restarted %d time(s) and finished\n", k.worker, k.step, j.Restarts)
		for _, ev := range j.Events {
			if ev.Reason == "TrainingResumed" {
				fmt.Fprintf(w, "               %s\n", ev.Message)
			}
		}
	}
	ours, theirs := plan.optimizerState(), adamw.optimizerState()
	if ours > 0 && theirs > 0 {
		fmt.Fprintf(w, "  optimizer    %s state %s per replica, AdamW %s: %s saved (%.0f%%) (plan; measured %s on the largest rank)\n",
			plan.Optimizer, bytesText(ours), bytesText(theirs), bytesText(theirs-ours), 100*float64(theirs-ours)/float64(theirs), bytesText(s.OptimizerStateBytes))
	}
}

// jobName reads metadata.name as plan sees it (overrides applied).
func (d *demo) jobName() (string, error) {
	out, err := d.quiet(append([]string{"plan", "-f", d.file, "-o", "json"}, d.setArgs()...)...)
	if err != nil {
		return "", err
	}
	var p struct {
		Job string `json:"job"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Job == "" {
		return "", fmt.Errorf("no job name in the plan of %s", d.file)
	}
	return p.Job, nil
}

func (d *demo) setArgs() []string {
	var a []string
	for _, s := range d.sets {
		a = append(a, "--set", s)
	}
	return a
}

func (d *demo) step(what string) { fmt.Fprintf(d.out, "\n==> %s\n", what) }

func (d *demo) ternctlPath() string { return filepath.Join(d.bin, "ternctl") }

// ternctl runs ternctl with its output shown, echoing the command first;
// with capture, stdout is returned instead of shown.
func (d *demo) ternctl(capture bool, args ...string) ([]byte, error) {
	return d.ternctlCtx(context.Background(), capture, args...)
}

func (d *demo) ternctlCtx(ctx context.Context, capture bool, args ...string) ([]byte, error) {
	fmt.Fprintf(d.out, "$ ternctl %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, d.ternctlPath(), args...)
	cmd.Env = d.env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if capture {
		cmd.Stdout = &out
	}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("ternctl %s: %v", args[0], err)
	}
	return out.Bytes(), nil
}

// quiet runs ternctl without echoing it, returning its stdout; its stderr
// comes with the error when it fails.
func (d *demo) quiet(args ...string) (string, error) {
	cmd := exec.Command(d.ternctlPath(), args...)
	cmd.Env = d.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if args[0] == "config" {
			return "", err // no current context, say
		}
		return "", fmt.Errorf("ternctl %s: %v\n%s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// env points ternctl at the demo's coordinator once it is up, whatever
// TERN_COORDINATOR says.
func (d *demo) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TERN_COORDINATOR=") {
			env = append(env, kv)
		}
	}
	if d.addr != "" {
		env = append(env, "TERN_COORDINATOR="+d.addr)
	}
	return env
}

func count(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e3:
		return fmt.Sprintf("%.2fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

func bytesText(b int64) string {
	const k = 1024
	switch {
	case b >= k*k:
		return fmt.Sprintf("%.2f MiB", float64(b)/(k*k))
	case b >= k:
		return fmt.Sprintf("%.1f KiB", float64(b)/k)
	}
	return fmt.Sprintf("%d B", b)
}

func isTerminal(f *os.File) bool {
	if os.Getenv("TERM") == "dumb" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func firstLine(err error) string {
	l, _, _ := strings.Cut(err.Error(), "\n")
	return l
}
