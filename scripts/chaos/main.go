// Command chaos plays machine failures against a real local cluster and
// reports how long each recovery took and what it cost. It starts a
// cluster with `ternctl up` (4 workers and 2 spares, each a process of its
// own, restarted by the cluster's supervisor when killed), applies a
// DP=2 × PP=2 job with in-memory snapshots, and while it trains:
//
//  1. SIGKILLs a random worker running a rank, at a random step;
//  2. SIGSTOPs another for longer than its lease, then SIGCONTs it: the
//     coordinator has counted it lost and relaunched without it, and the
//     worker, waking up, finds itself fenced (its registration is gone,
//     its attempt superseded) and stops its ranks;
//  3. SIGKILLs two workers at once, which spec.snapshot.tolerate=2 covers.
//
// After each fault it polls `ternctl get jobs -o json` every 100 ms and
// measures the time from the signal to the new attempt training again
// (every rank past the step it restored), the steps lost (the last step
// every rank had completed, less the restored one), and where the ranks'
// state came from (the coordinator's RestoreFromMemory and
// TrainingResumed events). It prints a table and, at the end, `ternctl
// describe` of the job, and stops the cluster (unless --keep).
//
//	go run ./scripts/chaos [--bin bin] [-f examples/demo.yaml] [--steps 90] [--seed N] [--set k=v]... [--keep]
//
// Other scenarios (--scenario, scenarios.go):
//
//   - coordinator: SIGKILL the coordinator while a snapshot commit is in
//     flight (every rank has completed a peer step newer than the
//     committed one); the supervisor restarts it, and the job must go on
//     without the committed step going back, and a worker lost next must
//     restore a step the job showed committed;
//   - corrupt: the test-only hook snapshot.EnvTestCorruptFragment makes
//     every holder damage the fragments of index 0 it holds; a lost
//     worker's rank must still restore from peers, routing around them;
//   - partition: network namespaces; not supported by the local cluster
//     yet, and says so.
//
// --goodput 15m (goodput.go) instead kills a worker every --kill-every
// for that long with the job's snapshot settings and reports the goodput
// against the fault-free step rate measured around the window.
//
// Every run checks, on each job status it reads, the research
// fault-tolerance.md §9.1 invariants a client can observe (committed step
// monotonic; one committed step restored by every rank of a recovered
// attempt; training resumes) and prints a SUMMARY line. It exits non-zero
// when a fault is not recovered from memory, an invariant is violated or
// the job does not succeed. The cluster and its contexts live in a directory of
// their own (--dir, default a fresh temporary one), so it leaves any other
// cluster and the user's ternctl contexts alone.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ternml/tern/pkg/localcluster"
	"github.com/ternml/tern/pkg/snapshot"
)

// pollEvery paces the job polls; recoveryLimit bounds the wait for one
// recovery before the run gives up.
const (
	pollEvery     = 100 * time.Millisecond
	recoveryLimit = 3 * time.Minute
	jobName       = "chaos"
)

type sets []string

func (s *sets) String() string     { return strings.Join(*s, ",") }
func (s *sets) Set(v string) error { *s = append(*s, v); return nil }

type driver struct {
	bin, dir, file string
	steps          int
	sets           sets
	rng            *rand.Rand
	out            io.Writer
	env            []string
	// goodput mode (goodput.go)
	goodput, killEvery, refFor time.Duration
	scenario                   string
	inv                        invariants
}

func main() {
	d := &driver{out: os.Stdout}
	flag.StringVar(&d.bin, "bin", "bin", "directory holding ternctl, coordinator and worker (make build)")
	flag.StringVar(&d.file, "f", "examples/demo.yaml", "the job to run (DP=2 x PP=2)")
	flag.StringVar(&d.dir, "dir", "", "the cluster's directory (default: a new temporary one)")
	flag.IntVar(&d.steps, "steps", 90, "spec.steps of the job")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the random choices (which worker, at which step)")
	keep := flag.Bool("keep", false, "leave the cluster running at the end")
	flag.Var(&d.sets, "set", "a further spec override, key=value (repeatable)")
	goodput := flag.Duration("goodput", 0, "instead of the three faults: measure goodput over this long a window (e.g. 15m) with a worker SIGKILLed every --kill-every, snapshot settings left at the job's (defaults unless --set)")
	flag.DurationVar(&d.killEvery, "kill-every", time.Minute, "with --goodput: the time between kills")
	flag.DurationVar(&d.refFor, "ref", time.Minute, "with --goodput: how long to measure the fault-free step rate, before and after the window")
	flag.StringVar(&d.scenario, "scenario", "faults", "faults: the three worker faults; coordinator: SIGKILL the coordinator while a snapshot commit is in flight, then lose a worker; corrupt: damage held fragments in memory (test hook) and lose a worker; partition: cut a worker off with network namespaces (root and ip netns)")
	flag.Parse()
	if !slices.Contains([]string{"faults", "coordinator", "corrupt", "partition"}, d.scenario) {
		fmt.Fprintf(os.Stderr, "chaos: --scenario %q: allowed are faults, coordinator, corrupt, partition\n", d.scenario)
		os.Exit(2)
	}
	if d.scenario == "partition" {
		if why := netnsUsable(); why != "" {
			fmt.Printf("chaos: SKIP partition: %s; a network-namespace partition needs root and a working ip netns\n", why)
			fmt.Println("SUMMARY partition SKIP: " + why)
			return
		}
		fmt.Println("chaos: SKIP partition: the local cluster runs every process on 127.0.0.1 of one namespace; moving a worker into its own namespace needs ternctl up to start it there with a routable address, which it does not do yet")
		fmt.Println("SUMMARY partition SKIP: not supported by the local cluster yet")
		return
	}
	if *goodput < 0 || d.killEvery <= 0 || d.refFor <= 0 {
		fmt.Fprintln(os.Stderr, "chaos: --goodput must be >= 0, --kill-every and --ref > 0")
		os.Exit(2)
	}
	d.goodput = *goodput
	d.rng = rand.New(rand.NewPCG(*seed, 0))
	fmt.Fprintf(d.out, "chaos: seed %d\n", *seed)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := d.run(ctx, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

// result is one fault's recovery.
type result struct {
	fault      string
	victims    []string
	atStep     int64 // the last step every rank had completed at the fault
	restored   int64 // the step the new attempt started from
	recoverS   float64
	from       string // "memory" or "disk"
	sources    string // which ranks restored from where
	coordinate string // the coordinator's TrainingResumed message
}

func (d *driver) run(ctx context.Context, keep bool) (err error) {
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "tern-chaos-"); err != nil {
			return err
		}
	}
	// Contexts go in the run's own TERN_HOME.
	d.env = append(os.Environ(), "TERN_HOME="+filepath.Join(d.dir, "home"))
	if d.scenario == "corrupt" {
		// TEST-ONLY: every holder damages the fragments of index 0 it holds.
		d.env = append(d.env, snapshot.EnvTestCorruptFragment+"=0")
	}
	cluster := filepath.Join(d.dir, "cluster")
	if _, err := d.ternctl(ctx, "up", "--dir", cluster, "--workers", "4", "--spares", "2", "--listen", "127.0.0.1:0", "--context", "chaos"); err != nil {
		return err
	}
	if !keep {
		defer func() {
			if _, derr := d.ternctl(context.Background(), "down", "--dir", cluster); derr != nil && err == nil {
				err = derr
			}
		}()
	}
	switch {
	case d.goodput > 0:
		return d.runGoodput(ctx, cluster)
	case d.scenario == "coordinator":
		if err := d.runCoordinatorKill(ctx, cluster, &d.inv); err != nil {
			return err
		}
		return d.inv.err()
	case d.scenario == "corrupt":
		if err := d.runCorrupt(ctx, cluster, &d.inv); err != nil {
			return err
		}
		return d.inv.err()
	}
	args := []string{"apply", "-f", d.file, "--set", "metadata.name=" + jobName, "--set", fmt.Sprintf("steps=%d", d.steps),
		"--set", "eval.everySteps=0", "--set", "snapshot.everySteps=1", "--set", "snapshot.peerEverySteps=2",
		"--set", "snapshot.tolerate=2", "--set", "restartPolicy.maxRestarts=10"}
	for _, s := range d.sets {
		args = append(args, "--set", s)
	}
	if _, err := d.ternctl(ctx, args...); err != nil {
		return err
	}
	var results []result
	faults := []struct {
		name     string
		from, to float64 // the fault comes at a random fraction of the steps in [from, to)
		victims  int
		pause    bool
	}{
		{"SIGKILL one worker", 0.10, 0.25, 1, false},
		{"SIGSTOP one worker, SIGCONT after its lease", 0.35, 0.45, 1, true},
		{"SIGKILL two workers at once (tolerate 2)", 0.60, 0.70, 2, false},
	}
	for _, f := range faults {
		at := int64(float64(d.steps) * (f.from + (f.to-f.from)*d.rng.Float64()))
		j, err := d.waitFor(ctx, fmt.Sprintf("step %d", at), func(j *jobView) bool { return j.Phase == "Running" && j.allRunning() && j.CommittedStep >= at })
		if err != nil {
			return err
		}
		res, err := d.fault(ctx, cluster, j, f.name, f.victims, f.pause)
		if err != nil {
			return err
		}
		results = append(results, res)
		fmt.Fprintf(d.out, "chaos: %s: %v at step %d; training again %.2f s after the signal, from step %d (%d steps lost) restored from %s: %s\n",
			res.fault, res.victims, res.atStep, res.recoverS, res.restored, res.atStep-res.restored, res.from, res.coordinate)
	}
	end, err := d.waitFor(ctx, "the job's end", func(j *jobView) bool { return j.Phase == "Succeeded" || j.Phase == "Failed" || j.Phase == "Cancelled" })
	if err != nil {
		return err
	}
	out, _ := d.ternctl(ctx, "describe", "job", jobName)
	fmt.Fprintln(d.out, out)
	fmt.Fprintln(d.out, "| fault | workers | at step | restored step | steps lost | signal → training again (s) | state from |")
	fmt.Fprintln(d.out, "|---|---|---|---|---|---|---|")
	bad := end.Phase != "Succeeded"
	for _, r := range results {
		fmt.Fprintf(d.out, "| %s | %s | %d | %d | %d | %.2f | %s: %s |\n", r.fault, strings.Join(r.victims, ", "), r.atStep, r.restored, r.atStep-r.restored, r.recoverS, r.from, r.sources)
		bad = bad || r.from != "memory"
	}
	fmt.Fprintln(d.out, d.inv.summary("faults", !bad, fmt.Sprintf("%d faults, job %s", len(results), end.Phase)))
	if bad {
		return fmt.Errorf("job %s ended %s; every fault must be recovered from memory", jobName, end.Phase)
	}
	return d.inv.err()
}

// fault signals victims workers running ranks of the job and waits for
// the job to train again.
func (d *driver) fault(ctx context.Context, cluster string, j *jobView, name string, n int, pause bool) (result, error) {
	st, err := localcluster.ReadState(cluster)
	if err != nil {
		return result{}, err
	}
	var ws []string
	for _, r := range j.Ranks {
		if !slices.Contains(ws, r.Worker) {
			ws = append(ws, r.Worker)
		}
	}
	d.rng.Shuffle(len(ws), func(a, b int) { ws[a], ws[b] = ws[b], ws[a] })
	victims := ws[:n]
	res := result{fault: name, victims: victims, atStep: j.CommittedStep}
	var pids []int
	for _, v := range victims {
		p, ok := st.Proc(v)
		if !ok || p.PID == 0 {
			return result{}, fmt.Errorf("worker %s has no running process in %s", v, cluster)
		}
		pids = append(pids, p.PID)
	}
	sig := syscall.SIGKILL
	if pause {
		sig = syscall.SIGSTOP
	}
	t0 := time.Now()
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil {
			return result{}, fmt.Errorf("signal %v to pid %d: %w", sig, pid, err)
		}
	}
	attempt := j.Attempt
	if pause {
		// Keep it stopped until the coordinator has relaunched the job
		// without it, then let it wake up into a world that moved on.
		if _, err := d.waitFor(ctx, "the relaunch", func(j *jobView) bool { return j.Attempt > attempt }); err != nil {
			return result{}, err
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				return result{}, err
			}
		}
	}
	back, err := d.waitFor(ctx, "training again", func(j *jobView) bool {
		if j.Attempt <= attempt || len(j.Attempts) == 0 || !j.allRunning() {
			return j.Phase == "Succeeded"
		}
		start := j.Attempts[len(j.Attempts)-1].StartStep
		for _, r := range j.Ranks {
			if r.Step <= start {
				return false
			}
		}
		return true
	})
	if err != nil {
		return result{}, err
	}
	res.recoverS = time.Since(t0).Seconds()
	if n := len(back.Attempts); n > 0 {
		res.restored = back.Attempts[n-1].StartStep
	}
	for _, ev := range back.Events {
		if ev.Time.Before(t0) {
			continue
		}
		switch ev.Reason {
		case "RestoreFromMemory":
			res.from = "memory"
		case "SnapshotUnrecoverable", "RestoreFromCheckpoint":
			res.from = "disk"
		case "TrainingResumed":
			res.coordinate = ev.Message
			// "... restored step N (local [0 2], peers [1]), ..."
			if k := strings.Index(ev.Message, "restored step"); k >= 0 {
				m := ev.Message[k:]
				if i := strings.Index(m, " ("); i >= 0 {
					if j := strings.Index(m[i:], ")"); j >= 0 {
						res.sources = m[i+2 : i+j]
					}
				}
			}
		}
	}
	if pause {
		if err := d.checkFenced(ctx, cluster, victims[0], t0); err != nil {
			return result{}, err
		}
	}
	return res, nil
}

// checkFenced waits for the paused worker's log to say, after it woke
// up, that the coordinator had given up its session and that its rank
// ended: stopped by the agent, or failed on its own because its peers
// had moved on to a newer attempt (whichever came first).
func (d *driver) checkFenced(ctx context.Context, cluster, worker string, since time.Time) error {
	path := filepath.Join(cluster, "logs", worker+".log")
	deadline := time.Now().Add(recoveryLimit)
	for time.Now().Before(deadline) {
		var fenced, ended bool
		b, err := os.ReadFile(path)
		for _, line := range strings.Split(string(b), "\n") {
			t, ok := logTime(line)
			if err != nil || !ok || t.Before(since) {
				continue
			}
			fenced = fenced || strings.Contains(line, "registering again") || strings.Contains(line, "no contact with the coordinator")
			ended = ended || strings.Contains(line, `msg="stopping rank"`) || strings.Contains(line, `msg="rank failed"`)
		}
		if fenced && ended {
			fmt.Fprintf(d.out, "chaos: %s woke up fenced: its session was gone and its rank ended (%s)\n", worker, path)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
	return fmt.Errorf("worker %s did not log that it stopped its ranks after waking up (%s)", worker, path)
}

// jobView is the part of `ternctl get jobs -o json` the driver reads.
type jobView struct {
	Phase         string        `json:"phase"`
	Reason        string        `json:"reason"`
	CommittedStep int64         `json:"committed_step"`
	SnapshotStep  *int64        `json:"snapshot_step"`
	Restores      []restoreView `json:"restores"`
	Attempt       int32         `json:"attempt"`
	Attempts      []struct {
		StartStep int64 `json:"start_step"`
	} `json:"attempts"`
	Ranks []struct {
		Worker string `json:"worker"`
		Phase  string `json:"phase"`
		Step   int64  `json:"step"`
	} `json:"ranks"`
	Events []struct {
		Time    time.Time `json:"time"`
		Reason  string    `json:"reason"`
		Message string    `json:"message"`
	} `json:"events"`
}

func (j *jobView) allRunning() bool {
	if len(j.Ranks) == 0 {
		return false
	}
	for _, r := range j.Ranks {
		if r.Phase != "Running" {
			return false
		}
	}
	return true
}

// waitFor polls the job until cond holds.
func (d *driver) waitFor(ctx context.Context, what string, cond func(*jobView) bool) (*jobView, error) {
	deadline := time.Now().Add(recoveryLimit)
	var last error
	for time.Now().Before(deadline) {
		out, err := d.quiet(ctx, "get", "jobs", jobName, "-o", "json")
		if err == nil {
			var j jobView
			if err = json.Unmarshal([]byte(out), &j); err == nil {
				d.inv.observe(&j)
				if cond(&j) {
					return &j, nil
				}
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, errors.New("interrupted")
		case <-time.After(pollEvery):
		}
	}
	return nil, fmt.Errorf("waiting for %s: gave up after %v (last error: %v)", what, recoveryLimit, last)
}

// ternctl runs ternctl, echoing the command and its output.
func (d *driver) ternctl(ctx context.Context, args ...string) (string, error) {
	fmt.Fprintf(d.out, "$ ternctl %s\n", strings.Join(args, " "))
	out, err := d.quiet(ctx, args...)
	fmt.Fprint(d.out, out)
	return out, err
}

func (d *driver) quiet(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "ternctl"), args...)
	cmd.Env = d.env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("ternctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// logTime reads the time of a worker's log line (slog's text format).
func logTime(line string) (time.Time, bool) {
	v, ok := strings.CutPrefix(line, "time=")
	if !ok {
		return time.Time{}, false
	}
	v, _, _ = strings.Cut(v, " ")
	t, err := time.Parse(time.RFC3339Nano, v)
	return t, err == nil
}
