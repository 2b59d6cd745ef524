package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// runGoodput measures goodput under repeated worker loss. Definitions:
//
//   - r_ref, the uninterrupted step rate: steps completed by every rank
//     (the job's committed_step) per second over --ref without faults,
//     measured just before the window and again just after it, averaged
//     (the two bracket the window, so a change of the machine's load
//     during the run shows as a gap between them, which is printed);
//   - the window W (--goodput): a worker running a rank is SIGKILLed at
//     W/2n, 3W/2n, ... (every --kill-every, first one half an interval
//     in), and its supervisor restarts it;
//   - goodput G = (committed_step at the end of W − at its start) / (W ·
//     r_ref): the fraction of the window's time that, at the
//     uninterrupted rate, the useful progress would have taken. Steps
//     redone after a restore are not progress, detection, relaunch and
//     restore are time without progress, so all three lower G.
//
// It also prints, per kill, the time from the signal to every rank
// training past its restored step and the steps redone.
func (d *driver) runGoodput(ctx context.Context, cluster string) error {
	args := []string{"apply", "-f", d.file, "--set", "metadata.name=" + jobName, "--set", fmt.Sprintf("steps=%d", d.steps),
		"--set", "eval.everySteps=0", "--set", "restartPolicy.maxRestarts=1000"}
	for _, s := range d.sets {
		args = append(args, "--set", s)
	}
	if _, err := d.ternctl(ctx, args...); err != nil {
		return err
	}
	// Warm up: past the first steps (allocation, first restore point).
	if _, err := d.waitFor(ctx, "step 5", func(j *jobView) bool { return j.Phase == "Running" && j.allRunning() && j.CommittedStep >= 5 }); err != nil {
		return err
	}
	before, err := d.rate(ctx, d.refFor)
	if err != nil {
		return err
	}
	n := int(d.goodput / d.killEvery)
	s0, t0, err := d.progress(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "chaos: goodput window of %v from step %d, %d kills, fault-free rate before: %.4f steps/s\n", d.goodput, s0, n, before)
	var results []result
	for i := range n {
		at := t0.Add(d.killEvery/2 + time.Duration(i)*d.killEvery)
		if err := sleepUntil(ctx, at); err != nil {
			return err
		}
		j, err := d.waitFor(ctx, "every rank running", func(j *jobView) bool { return j.Phase == "Running" && j.allRunning() })
		if err != nil {
			return err
		}
		res, err := d.fault(ctx, cluster, j, "SIGKILL one worker", 1, false)
		if err != nil {
			return err
		}
		results = append(results, res)
		fmt.Fprintf(d.out, "chaos: kill %d at %.0f s: %v at step %d; training again %.2f s after the signal from step %d (%d redone), from %s: %s\n",
			i+1, time.Since(t0).Seconds(), res.victims, res.atStep, res.recoverS, res.restored, res.atStep-res.restored, res.from, res.sources)
	}
	if err := sleepUntil(ctx, t0.Add(d.goodput)); err != nil {
		return err
	}
	s1, t1, err := d.progress(ctx)
	if err != nil {
		return err
	}
	after, err := d.rate(ctx, d.refFor)
	if err != nil {
		return err
	}
	if _, err := d.ternctl(ctx, "cancel", jobName); err != nil {
		fmt.Fprintln(d.out, "chaos: cancelling the job:", err)
	}
	ref := (before + after) / 2
	w := t1.Sub(t0).Seconds()
	g := float64(s1-s0) / (w * ref)
	var down, redone float64
	var fromMem int
	var recs []float64
	for _, r := range results {
		down += r.recoverS
		redone += float64(r.atStep - r.restored)
		recs = append(recs, r.recoverS)
		if r.from == "memory" {
			fromMem++
		}
	}
	slices.Sort(recs)
	med := 0.0
	if len(recs) > 0 {
		med = recs[len(recs)/2]
	}
	fmt.Fprintf(d.out, "chaos: goodput: %d steps in %.1f s with %d kills; fault-free rate %.4f steps/s (before %.4f, after %.4f); G = %.1f%%\n",
		s1-s0, w, len(results), ref, before, after, 100*g)
	fmt.Fprintf(d.out, "chaos: per kill: signal -> training again median %.2f s (max %.2f), %.1f steps redone on average; %d of %d restored from memory\n",
		med, slices.Max(append(recs, 0)), redone/float64(max(len(results), 1)), fromMem, len(results))
	fmt.Fprintf(d.out, "SUMMARY goodput window=%.0fs kills=%d G=%.3f ref_steps_per_s=%.4f recover_median_s=%.2f redone_mean=%.1f from_memory=%d/%d\n",
		w, len(results), g, ref, med, redone/float64(max(len(results), 1)), fromMem, len(results))
	fmt.Fprintln(d.out, d.inv.summary("goodput", fromMem == len(results), fmt.Sprintf("G=%.3f over %d kills", g, len(results))))
	if fromMem != len(results) {
		return fmt.Errorf("%d of %d kills were not recovered from memory", len(results)-fromMem, len(results))
	}
	return d.inv.err()
}

// progress is the job's committed step and when it was read.
func (d *driver) progress(ctx context.Context) (int64, time.Time, error) {
	j, err := d.waitFor(ctx, "the job", func(j *jobView) bool { return j.Phase == "Running" })
	if err != nil {
		return 0, time.Time{}, err
	}
	return j.CommittedStep, time.Now(), nil
}

// rate measures the fault-free step rate over about dur.
func (d *driver) rate(ctx context.Context, dur time.Duration) (float64, error) {
	s0, t0, err := d.progress(ctx)
	if err != nil {
		return 0, err
	}
	if err := sleepUntil(ctx, t0.Add(dur)); err != nil {
		return 0, err
	}
	s1, t1, err := d.progress(ctx)
	if err != nil {
		return 0, err
	}
	if s1 <= s0 {
		return 0, fmt.Errorf("no progress in %v (step %d to %d): the job is not training", dur, s0, s1)
	}
	return float64(s1-s0) / t1.Sub(t0).Seconds(), nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}
