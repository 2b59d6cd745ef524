package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/spec"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Exit codes of `wait`, as scripts branch on them: 0 succeeded,
// exitError failed, exitCancelled cancelled, exitConnection usage or
// connection error, exitTimeout when --timeout passed first (as timeout(1)).
const (
	exitCancelled = 2
	exitTimeout   = 124
)

func newWaitCmd(e *env, cf *clusterFlags) *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "wait NAME",
		Short: "Wait until a job is over",
		Long: "Wait until a job succeeds, fails or is cancelled, and say which on stderr.\n\n" +
			"Exit codes: 0 succeeded, 1 failed, 2 cancelled, 3 usage or connection error,\n" +
			"124 --timeout passed first. Ctrl-C stops waiting and never touches the job.",
		Example: "  ternctl wait tiny\n  ternctl wait tiny --timeout 10m || echo not done",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &codedError{fmt.Errorf("wait takes one job name, got %d arguments", len(args)), exitConnection}
			}
			return nil
		},
		ValidArgsFunction: jobNameCompletion(cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return &codedError{fmt.Errorf("--timeout %v is negative", timeout), exitConnection}
			}
			return waitRun(cmd.Context(), e, cf, args[0], timeout)
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (e.g. 30s, 10m) and exit 124; 0 waits for ever")
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &codedError{err, exitConnection} })
	return c
}

func waitRun(ctx context.Context, e *env, cf *clusterFlags, name string, timeout time.Duration) error {
	client, closeConn, err := connect(ctx, cf)
	if err != nil {
		return err
	}
	defer closeConn()
	// The timeout stays on this side: a deadline on the context would go
	// to the coordinator too, which may then end the stream a moment
	// before the deadline passes here, and the stream's error would read
	// as a broken connection rather than a timeout.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	if timeout > 0 {
		t := time.AfterFunc(timeout, func() { timedOut.Store(true); cancel() })
		defer t.Stop()
	}
	var last *ternv1.Job
	for {
		// WatchJob ends after a terminal phase; a stream that ends sooner
		// (a coordinator handing over) is opened again.
		stream, err := client.WatchJob(wctx, &ternv1.WatchJobRequest{Name: name})
		if err == nil {
			for {
				var resp *ternv1.WatchJobResponse
				resp, err = stream.Recv()
				if err != nil {
					break
				}
				last = resp.Job
				if code, over := terminalExit(last.Phase); over {
					msg := fmt.Sprintf("job/%s %s", name, strings.ToLower(phaseName(last.Phase)))
					if code != exitOK && last.Reason != "" {
						msg += ": " + oneLine(last.Reason)
					}
					fmt.Fprintln(e.stderr, msg)
					if code == exitOK {
						return nil
					}
					return &exitCodeError{code}
				}
			}
		}
		switch {
		case ctx.Err() != nil:
			fmt.Fprintf(e.stderr, "stopped waiting for job/%s; it goes on\n", name)
			return &exitCodeError{exitInterrupted}
		case timedOut.Load():
			msg := fmt.Sprintf("timed out after %v waiting for job/%s", timeout, name)
			if last != nil {
				msg += fmt.Sprintf(": phase %s, step %d/%d", phaseName(last.Phase), last.CommittedStep, last.Steps)
				if last.Reason != "" {
					msg += ": " + oneLine(last.Reason)
				}
			}
			fmt.Fprintln(e.stderr, msg)
			return &exitCodeError{exitTimeout}
		case err != nil && !errors.Is(err, io.EOF):
			rerr := rpcErr(cf.addr, "wait for job "+name, err)
			var ce *codedError
			if !errors.As(rerr, &ce) {
				// Not found and the like: a wrong name is a usage error here.
				rerr = &codedError{rerr, exitConnection}
			}
			return rerr
		}
		// The stream ended before the job did: open it again, unhurried.
		select {
		case <-wctx.Done():
		case <-time.After(reconnectPause):
		}
	}
}

// reconnectPause spaces the watches wait opens again after one ends early.
const reconnectPause = 200 * time.Millisecond

// terminalExit maps a phase that ends a job to wait's exit code.
func terminalExit(p ternv1.JobPhase) (int, bool) {
	switch p {
	case ternv1.JobPhase_JOB_PHASE_SUCCEEDED:
		return exitOK, true
	case ternv1.JobPhase_JOB_PHASE_FAILED:
		return exitError, true
	case ternv1.JobPhase_JOB_PHASE_CANCELLED:
		return exitCancelled, true
	}
	return 0, false
}

func newCancelCmd(e *env, cf *clusterFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "cancel NAME",
		Short:             "Stop a job's ranks and end it Cancelled",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: jobNameCompletion(cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, closeConn, err := connect(cmd.Context(), cf)
			if err != nil {
				return err
			}
			defer closeConn()
			if _, err := client.CancelJob(cmd.Context(), &ternv1.CancelJobRequest{Name: args[0]}); err != nil {
				return rpcErr(cf.addr, "cancel job "+args[0], err)
			}
			fmt.Fprintf(e.stdout, "job/%s cancelled\n", args[0])
			return nil
		},
	}
}

func newDeleteCmd(e *env, cf *clusterFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete job NAME...",
		Short: "Remove jobs that are over, freeing their names",
		Long:  "Remove jobs that are over (succeeded, failed or cancelled). A job still\nrunning must be cancelled first.",
		Args:  cobra.MinimumNArgs(2),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return []string{"job"}, cobra.ShellCompDirectiveNoFileComp
			}
			return jobNames(cf), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if !isJobsKind(args[0]) {
				return usagef("cannot delete %q (allowed: job)", args[0])
			}
			client, closeConn, err := connect(cmd.Context(), cf)
			if err != nil {
				return err
			}
			defer closeConn()
			for _, name := range args[1:] {
				if _, err := client.DeleteJob(cmd.Context(), &ternv1.DeleteJobRequest{Name: name}); err != nil {
					return rpcErr(cf.addr, "delete job "+name, err)
				}
				fmt.Fprintf(e.stdout, "job/%s deleted\n", name)
			}
			return nil
		},
	}
}

func newDescribeCmd(e *env, cf *clusterFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "describe job NAME",
		Short: "Show a job in detail: spec, progress, ranks, summary, events",
		Args:  cobra.ExactArgs(2),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return []string{"job"}, cobra.ShellCompDirectiveNoFileComp
			}
			return jobNameCompletion(cf)(nil, args[1:], "")
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if !isJobsKind(args[0]) {
				return usagef("cannot describe %q (allowed: job)", args[0])
			}
			client, closeConn, err := connect(cmd.Context(), cf)
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := client.GetJob(cmd.Context(), &ternv1.GetJobRequest{Name: args[1]})
			if err != nil {
				return rpcErr(cf.addr, "get job "+args[1], err)
			}
			return describeJob(e.stdout, resp.Job, e.now())
		},
	}
}

// fmtTime shows a time in UTC, to the second.
func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }

func describeJob(w io.Writer, j *ternv1.Job, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", j.Name)
	fmt.Fprintf(tw, "Phase:\t%s\n", phaseName(j.Phase))
	if j.Reason != "" {
		fmt.Fprintf(tw, "Reason:\t%s\n", oneLine(j.Reason))
	}
	var js spec.TrainingJob
	if err := json.Unmarshal(j.SpecJson, &js); err == nil {
		preset := js.Spec.Model.Preset
		if preset == "" {
			preset = "custom"
		}
		fmt.Fprintf(tw, "Model:\t%s\n", preset)
		o := js.Spec.Optimizer
		fmt.Fprintf(tw, "Optimizer:\t%s, lr %.1e -> %.1e %s, warmup %d\n", o.Name, o.LR, o.MinLR, o.Schedule, o.WarmupSteps)
		fmt.Fprintf(tw, "Data:\t%s %s\n", js.Spec.Data.Kind, js.Spec.Data.Path)
		fmt.Fprintf(tw, "Tokens/step:\t%s\n", fmtCount(float64(js.TokensPerStep())))
	}
	ranks := "ranks"
	if j.DataParallel*j.PipelineParallel == 1 {
		ranks = "rank"
	}
	fmt.Fprintf(tw, "Layout:\t%d data x %d pipeline = %d %s\n", j.DataParallel, j.PipelineParallel, j.DataParallel*j.PipelineParallel, ranks)
	if j.Created != nil {
		fmt.Fprintf(tw, "Created:\t%s (%s ago)\n", fmtTime(j.Created.AsTime()), fmtDuration(now.Sub(j.Created.AsTime())))
	}
	if j.Started != nil {
		fmt.Fprintf(tw, "Started:\t%s (%s after it was created)\n", fmtTime(j.Started.AsTime()), fmtDuration(j.Started.AsTime().Sub(j.Created.AsTime())))
	}
	if j.Finished != nil {
		end := j.Finished.AsTime()
		ran := "-"
		if j.Started != nil {
			ran = fmtDuration(end.Sub(j.Started.AsTime()))
		}
		fmt.Fprintf(tw, "Finished:\t%s (%s ago; ran %s)\n", fmtTime(end), fmtDuration(now.Sub(end)), ran)
	} else if j.Started != nil {
		fmt.Fprintf(tw, "Running for:\t%s\n", fmtDuration(now.Sub(j.Started.AsTime())))
	}
	fmt.Fprintf(tw, "Progress:\t%s\n", progressText(j))
	fmt.Fprintf(tw, "Last loss:\t%s\n", lossText(j))
	fmt.Fprintf(tw, "Tokens/s:\t%s\n", rateText(j))
	if j.StepMs > 0 {
		fmt.Fprintf(tw, "Step time:\t%.0f ms (median of recent steps)\n", j.StepMs)
	}
	if eta := etaSeconds(j); eta != nil {
		fmt.Fprintf(tw, "ETA:\t%s\n", fmtDuration(seconds(*eta)))
	}
	fmt.Fprintf(tw, "Attempt:\t%d (restarts %d of %d)\n", j.Attempt, j.Restarts, j.MaxRestarts)
	if f := j.LastFailure; f != nil {
		when := ""
		if f.Time != nil {
			when = fmt.Sprintf(" (%s ago)", fmtDuration(now.Sub(f.Time.AsTime())))
		}
		fmt.Fprintf(tw, "Last failure:\tattempt %d%s: %s\n", f.Attempt, when, oneLine(f.Message))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := describeSnapshots(w, j); err != nil {
		return err
	}
	if len(j.Attempts) > 0 {
		fmt.Fprintln(w, "Attempts:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  ATTEMPT\tSTARTED\tDURATION\tFROM STEP\tLAST STEP\tOUTCOME")
		for _, a := range j.Attempts {
			end, outcome := now, "running"
			if a.Ended != nil {
				end, outcome = a.Ended.AsTime(), a.Outcome
			}
			fmt.Fprintf(tw, "  %d\t%s ago\t%s\t%d\t%d\t%s\n", a.Attempt, fmtDuration(now.Sub(a.Started.AsTime())),
				fmtDuration(end.Sub(a.Started.AsTime())), a.StartStep, a.LastStep, oneLine(outcome))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if s := j.Summary; s != nil {
		fmt.Fprintf(w, "Summary:\n  %d steps in %s, %s tokens/s, median step %.0f ms, %s params, optimizer state %s\n",
			s.Steps, fmtDuration(seconds(s.WallSeconds)), fmtCount(s.TokensPerSecond), s.StepMsMedian,
			fmtCount(float64(s.Params)), fmtBytes(s.OptimizerStateBytes))
		line := fmt.Sprintf("  final loss %.4f", s.FinalLoss)
		if finite(s.FinalEvalLoss) != nil {
			line += fmt.Sprintf(", eval loss %.4f", s.FinalEvalLoss)
		}
		if s.BytesSentPerStep+s.BytesRecvPerStep > 0 {
			line += fmt.Sprintf(", %s sent and %s received per step", fmtBytes(s.BytesSentPerStep), fmtBytes(s.BytesRecvPerStep))
		}
		fmt.Fprintln(w, line)
	}
	if len(j.Ranks) > 0 {
		fmt.Fprintln(w, "Ranks:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  RANK\tWORKER\tSLOT\tADDRESS\tPHASE\tSTEP\tERROR")
		for _, r := range j.Ranks {
			addr := r.Address
			if addr == "" {
				addr = "-"
			}
			fmt.Fprintf(tw, "  %d\t%s\t%d\t%s\t%s\t%d\t%s\n", r.Rank, r.Worker, r.Slot, addr,
				enumName(r.Phase.String(), "RANK_PHASE_"), r.Step, oneLine(r.Error))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "Events:")
	if len(j.Events) == 0 {
		fmt.Fprintln(w, "  <none>")
		return nil
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME\tAGE\tTYPE\tREASON\tMESSAGE")
	for _, ev := range j.Events {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", fmtTime(ev.Time.AsTime()), fmtDuration(now.Sub(ev.Time.AsTime())), ev.Severity, ev.Reason, oneLine(ev.Message))
	}
	return tw.Flush()
}

// describeSnapshots shows what the coordinator knows of the job's
// in-memory snapshots: the settings, the committed step (the only step a
// recovery restores), and where each rank got its state in its latest
// restore.
func describeSnapshots(w io.Writer, j *ternv1.Job) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var js spec.TrainingJob
	settings := ""
	if err := json.Unmarshal(j.SpecJson, &js); err == nil {
		c := js.Spec.SnapshotSettings()
		switch {
		case c.EverySteps == 0:
			settings = "off (spec.snapshot.everySteps 0)"
		case c.PeerEverySteps == 0:
			settings = fmt.Sprintf("local copy every %d steps, no peer fragments", c.EverySteps)
		default:
			settings = fmt.Sprintf("local copy every %d steps, peer fragments every %d (tolerate %d)", c.EverySteps, c.PeerEverySteps, c.Tolerate)
		}
	}
	committed := "none yet"
	if j.SnapshotStep >= 0 {
		committed = fmt.Sprintf("step %d (every rank staged it; a recovery restores this step)", j.SnapshotStep)
	}
	if settings != "" {
		fmt.Fprintf(tw, "Snapshots:\t%s\n", settings)
	}
	fmt.Fprintf(tw, "Snapshot committed:\t%s\n", committed)
	if err := tw.Flush(); err != nil {
		return err
	}
	last := lastRestores(j.Restores)
	if len(last) == 0 {
		return nil
	}
	fmt.Fprintln(w, "Last restore per rank:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  RANK\tATTEMPT\tSTEP\tSOURCE\tTOOK\tFROM")
	for _, r := range last {
		fmt.Fprintf(tw, "  %d\t%d\t%d\t%s\t%.0f ms\t%s\n", r.Rank, r.Attempt, r.Step, r.Source, r.RestoreMs,
			restoreFrom(j, r.Source, restoreWorker(j, r)))
	}
	return tw.Flush()
}
