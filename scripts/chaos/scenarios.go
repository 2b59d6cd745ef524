package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/ternml/tern/pkg/localcluster"
	"github.com/ternml/tern/pkg/snapshot"
)

// invariants checks, on every job status the driver reads, the
// invariants of research fault-tolerance.md §9.1 that a client of the
// coordinator can observe:
//
//   - §9.1.1: the committed snapshot step never goes back, across
//     recoveries and coordinator restarts;
//   - §9.1.3/§9.1.4: every rank of a recovered attempt restores the same
//     step, and that step is one the job had shown committed (or the
//     checkpoint's/initial state): never a step that was staged but not
//     committed;
//   - §9.1.6: training resumes after each fault (waitFor's deadline).
//
// Violations are collected and fail the run at the end.
type invariants struct {
	committed  []int64 // every distinct snapshot_step seen, in order
	checked    map[int32]bool
	violations []string
	// attempts whose restores were checked, and how many
	restoresChecked int
}

func (v *invariants) observe(j *jobView) {
	if v.checked == nil {
		v.checked = map[int32]bool{}
	}
	if j.SnapshotStep != nil {
		s := *j.SnapshotStep
		if n := len(v.committed); n > 0 && s < v.committed[n-1] {
			v.violations = append(v.violations, fmt.Sprintf("committed snapshot step went back from %d to %d (§9.1.1)", v.committed[n-1], s))
		}
		if n := len(v.committed); n == 0 || s != v.committed[n-1] {
			v.committed = append(v.committed, s)
		}
	}
	// The restores of an attempt are complete once it is running.
	byAttempt := map[int32][]restoreView{}
	for _, r := range j.Restores {
		byAttempt[r.Attempt] = append(byAttempt[r.Attempt], r)
	}
	world := len(j.Ranks)
	for a, rs := range byAttempt {
		if v.checked[a] || (a == j.Attempt && !j.allRunning()) || len(rs) < world {
			continue
		}
		v.checked[a] = true
		v.restoresChecked++
		step := rs[0].Step
		for _, r := range rs {
			if r.Step != step {
				v.violations = append(v.violations, fmt.Sprintf("attempt %d: rank %d restored step %d, rank %d step %d (§9.1.3)", a, rs[0].Rank, step, r.Rank, r.Step))
			}
			if (r.Source == "local" || r.Source == "peers") && !slices.Contains(v.committed, r.Step) {
				v.violations = append(v.violations, fmt.Sprintf("attempt %d: rank %d restored step %d from %s, never seen committed (committed steps seen: %v) (§9.1.4)", a, r.Rank, r.Step, r.Source, v.committed))
			}
		}
	}
}

// err fails the run on any violation.
func (v *invariants) err() error {
	if len(v.violations) == 0 {
		return nil
	}
	return fmt.Errorf("%d invariant violations:\n  %s", len(v.violations), strings.Join(v.violations, "\n  "))
}

func (v *invariants) summary(name string, ok bool, extra string) string {
	verdict := "PASS"
	if !ok || len(v.violations) > 0 {
		verdict = "FAIL"
	}
	return fmt.Sprintf("SUMMARY %s %s: invariants §9.1.1 (committed step monotonic, %d values seen), §9.1.3/4 (%d recovered attempts: one step, a committed one), §9.1.6 (resumed): %d violations; %s",
		name, verdict, len(v.committed), v.restoresChecked, len(v.violations), extra)
}

// restoreView is the part of a status's restores the driver reads.
type restoreView struct {
	Attempt int32  `json:"attempt"`
	Rank    int32  `json:"rank"`
	Source  string `json:"source"`
	Step    int64  `json:"step"`
}

// applyJob submits the chaos job with the given extra overrides.
func (d *driver) applyJob(ctx context.Context, extra ...string) error {
	args := []string{"apply", "-f", d.file, "--set", "metadata.name=" + jobName, "--set", fmt.Sprintf("steps=%d", d.steps),
		"--set", "eval.everySteps=0", "--set", "restartPolicy.maxRestarts=20"}
	for _, s := range append(extra, d.sets...) {
		args = append(args, "--set", s)
	}
	_, err := d.ternctl(ctx, args...)
	return err
}

// killWorker SIGKILLs one random worker running a rank and waits for the
// job to train again past its restored step.
func (d *driver) killWorker(ctx context.Context, cluster string) (result, error) {
	j, err := d.waitFor(ctx, "every rank running", func(j *jobView) bool { return j.Phase == "Running" && j.allRunning() })
	if err != nil {
		return result{}, err
	}
	return d.fault(ctx, cluster, j, "SIGKILL one worker", 1, false)
}

// endJob waits for the job's end and reports whether it succeeded.
func (d *driver) endJob(ctx context.Context) (bool, error) {
	end, err := d.waitFor(ctx, "the job's end", func(j *jobView) bool { return j.Phase == "Succeeded" || j.Phase == "Failed" || j.Phase == "Cancelled" })
	if err != nil {
		return false, err
	}
	fmt.Fprintf(d.out, "chaos: job %s\n", end.Phase)
	if end.Phase != "Succeeded" {
		d.inv.violations = append(d.inv.violations, fmt.Sprintf("the job ended %s: %s", end.Phase, end.Reason))
	}
	return end.Phase == "Succeeded", nil
}

// runCoordinatorKill SIGKILLs the coordinator while a snapshot commit is
// in flight: every rank has completed a peer snapshot step s (so its
// fragments are out or on their way and its report is due) while the
// committed step is still older. The supervisor restarts the
// coordinator; the job must go on, the committed step must not go back,
// and a worker killed next must restore a step the job showed committed,
// not the step whose commit was cut short unless it was committed after
// all (the new coordinator reads the commit from etcd or not at all).
func (d *driver) runCoordinatorKill(ctx context.Context, cluster string, inv *invariants) error {
	const peerEvery = 5
	if err := d.applyJob(ctx, fmt.Sprintf("snapshot.peerEverySteps=%d", peerEvery), "snapshot.everySteps=1"); err != nil {
		return err
	}
	var inFlight int64
	j, err := d.waitFor(ctx, "a snapshot commit in flight", func(j *jobView) bool {
		if j.Phase != "Running" || !j.allRunning() || j.SnapshotStep == nil || j.CommittedStep < 3*peerEvery {
			return false
		}
		inFlight = j.CommittedStep / peerEvery * peerEvery
		return inFlight > *j.SnapshotStep
	})
	if err != nil {
		return err
	}
	before := *j.SnapshotStep
	st, err := localcluster.ReadState(cluster)
	if err != nil {
		return err
	}
	p, ok := st.Proc(localcluster.RoleCoordinator)
	if !ok || p.PID == 0 {
		return fmt.Errorf("no running coordinator in %s", cluster)
	}
	t0 := time.Now()
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "chaos: SIGKILLed the coordinator (pid %d) with step %d completed by every rank, committed %d: commit of %d in flight\n", p.PID, j.CommittedStep, before, inFlight)
	back, err := d.waitFor(ctx, "the coordinator back", func(j *jobView) bool { return true })
	if err != nil {
		return err
	}
	after := int64(-1)
	if back.SnapshotStep != nil {
		after = *back.SnapshotStep
	}
	verdict := "not committed when the new coordinator answered (it commits only once the ranks report the step to it again)"
	if after >= inFlight {
		verdict = "committed after all (the transaction went through before the kill)"
	}
	fmt.Fprintf(d.out, "chaos: coordinator answering again %.2f s after the kill; committed step %d (was %d), step %d %s\n", time.Since(t0).Seconds(), after, before, inFlight, verdict)
	if after < before {
		inv.violations = append(inv.violations, fmt.Sprintf("committed step %d after the coordinator restart, %d before", after, before))
	}
	// The job must train on: a new step completed after the restart.
	mark := back.CommittedStep
	if _, err := d.waitFor(ctx, "training after the coordinator restart", func(j *jobView) bool {
		return j.Phase == "Succeeded" || (j.Phase == "Running" && j.CommittedStep > mark)
	}); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "chaos: training again %.2f s after the coordinator kill\n", time.Since(t0).Seconds())
	// Now lose a worker: the restore must use a committed step.
	res, err := d.killWorker(ctx, cluster)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "chaos: then %v killed at step %d: restored step %d from %s (%s), %.2f s to training again\n", res.victims, res.atStep, res.restored, res.from, res.sources, res.recoverS)
	if res.from != "memory" {
		inv.violations = append(inv.violations, fmt.Sprintf("the worker loss after the coordinator restart restored from %q, not memory", res.from))
	}
	done, err := d.endJob(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(d.out, inv.summary("coordinator-kill-during-commit", done,
		fmt.Sprintf("commit of step %d in flight at the kill: %s; worker loss afterwards restored step %d from %s", inFlight, verdict, res.restored, res.from)))
	return nil
}

// runCorrupt turns on the fragment corruption test hook
// (snapshot.EnvTestCorruptFragment=0: every holder damages the fragment
// of index 0 it holds, in memory) and loses a worker: its rank, moved to
// another worker, must find fragment 0 damaged by its CRC, fetch another
// (tolerate 2: any 2 of 3 fragments rebuild the state) and restore from
// peers, never from a damaged state.
func (d *driver) runCorrupt(ctx context.Context, cluster string, inv *invariants) error {
	if err := d.applyJob(ctx, "snapshot.everySteps=1", "snapshot.peerEverySteps=2", "snapshot.tolerate=2", "snapshot.dataShards=2"); err != nil {
		return err
	}
	if _, err := d.waitFor(ctx, "step 15", func(j *jobView) bool {
		return j.Phase == "Running" && j.allRunning() && j.CommittedStep >= 15 && j.SnapshotStep != nil && *j.SnapshotStep >= 10
	}); err != nil {
		return err
	}
	res, err := d.killWorker(ctx, cluster)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "chaos: %v killed at step %d: restored step %d from %s (%s), %.2f s to training again\n", res.victims, res.atStep, res.restored, res.from, res.sources, res.recoverS)
	// The holders must have damaged fragment 0 of the restored step for
	// the restore to have had to route around it.
	damaged := 0
	logs, _ := filepath.Glob(filepath.Join(cluster, "logs", "*.log"))
	needle := fmt.Sprintf("step %d\n", res.restored)
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		for _, line := range strings.SplitAfter(string(b), "\n") {
			if strings.Contains(line, "test hook damaged held fragment 0") && strings.HasSuffix(line, needle) {
				damaged++
			}
		}
	}
	fmt.Fprintf(d.out, "chaos: the holders damaged %d fragments of index 0 of step %d in memory\n", damaged, res.restored)
	if !strings.Contains(res.sources, "peers") {
		inv.violations = append(inv.violations, fmt.Sprintf("no rank restored from peers (%s): the hook was not exercised", res.sources))
	}
	if damaged == 0 {
		inv.violations = append(inv.violations, fmt.Sprintf("no holder logged damaging a fragment of step %d: is %s reaching the workers?", res.restored, snapshot.EnvTestCorruptFragment))
	}
	if res.from != "memory" {
		inv.violations = append(inv.violations, fmt.Sprintf("restored from %q: a damaged fragment should cost a fetch, not the restore", res.from))
	}
	ok, err := d.endJob(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(d.out, inv.summary("corrupt-fragment", ok,
		fmt.Sprintf("%d damaged fragments of step %d held; restored from %s (%s)", damaged, res.restored, res.from, res.sources)))
	return nil
}

// netnsUsable says why a network-namespace partition cannot run here, ""
// when it can.
func netnsUsable() string {
	if os.Geteuid() != 0 {
		return "not running as root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "no ip(8) on PATH"
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		return fmt.Sprintf("ip netns does not work here: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return ""
}
