package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

type logsFlags struct {
	follow     bool
	rank       int
	attempt    int
	tail       int64
	since      time.Duration
	timestamps bool
}

func newLogsCmd(e *env, cf *clusterFlags) *cobra.Command {
	var f logsFlags
	c := &cobra.Command{
		Use:   "logs NAME [-f] [--rank R] [--attempt N] [--tail N] [--since D]",
		Short: "Print a job's logs: its ranks' messages and one line per training step",
		Long: "Print the lines a job's ranks logged, as their workers shipped them to the\n" +
			"coordinator (which keeps them on its disk). Without --rank every rank's lines\n" +
			"are merged in time order, each prefixed with [attempt A rank R]. The latest\n" +
			"attempt is shown unless --attempt names another.\n\n" +
			"-f follows the attempt until it ends (the job finishes, fails, is paused, or\n" +
			"relaunches as a new attempt). Ctrl-C stops following; the job goes on.",
		Example:           "  ternctl logs tiny\n  ternctl logs tiny -f --rank 0\n  ternctl logs tiny --attempt 1 --tail 20\n  ternctl logs tiny --since 5m",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: jobNameCompletion(cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case f.rank < -1:
				return usagef("--rank %d: ranks count from 0", f.rank)
			case f.attempt < 0:
				return usagef("--attempt %d: attempts count from 1 (0 means the latest)", f.attempt)
			case f.tail < -1:
				return usagef("--tail %d: give a number of lines, or -1 for all", f.tail)
			case f.since < 0:
				return usagef("--since %v is negative: give how far back to start, e.g. 10m", f.since)
			}
			return logsRun(cmd.Context(), e, cf, args[0], f)
		},
	}
	c.Flags().BoolVarP(&f.follow, "follow", "f", false, "keep printing new lines until the attempt ends")
	c.Flags().IntVar(&f.rank, "rank", -1, "only this rank's lines (default: every rank, merged)")
	c.Flags().IntVar(&f.attempt, "attempt", 0, "the attempt to show (default: the latest)")
	c.Flags().Int64Var(&f.tail, "tail", -1, "only the last N lines of each rank (-1: all)")
	c.Flags().DurationVar(&f.since, "since", 0, "only lines newer than this, e.g. 30s, 10m (0: all)")
	c.Flags().BoolVar(&f.timestamps, "timestamps", false, "begin each line with its time (RFC 3339)")
	return c
}

func logsRun(ctx context.Context, e *env, cf *clusterFlags, name string, f logsFlags) error {
	client, closeConn, err := connect(ctx, cf)
	if err != nil {
		return err
	}
	defer closeConn()
	req := &ternv1.GetLogsRequest{Name: name, Attempt: int32(f.attempt), Follow: f.follow}
	if f.rank >= 0 {
		r := int32(f.rank)
		req.Rank = &r
	}
	if f.tail >= 0 {
		if f.tail == 0 {
			return nil // kubectl's --tail 0: nothing
		}
		req.Tail = f.tail
	}
	if f.since > 0 {
		req.Since = timestamppb.New(e.now().Add(-f.since))
	}
	stream, err := client.GetLogs(ctx, req)
	if err != nil {
		return rpcErr(cf.addr, "logs of job "+name, err)
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C stops following; the job goes on
			}
			return rpcErr(cf.addr, "logs of job "+name, err)
		}
		for _, l := range resp.Lines {
			fmt.Fprintln(e.stdout, logLine(l, req.Rank == nil, f.timestamps))
		}
	}
	if f.follow {
		// Say why following stopped, and where the job went.
		if resp, err := client.GetJob(ctx, &ternv1.GetJobRequest{Name: name}); err == nil {
			j := resp.Job
			msg := fmt.Sprintf("job/%s is %s", name, phaseName(j.Phase))
			if f.attempt == 0 || int32(f.attempt) == j.Attempt {
				if live(j.Phase) && j.Attempt > 0 {
					msg += fmt.Sprintf("; attempt %d: follow it with `ternctl logs %s -f`", j.Attempt, name)
				}
			}
			fmt.Fprintln(e.stderr, msg)
		}
	}
	return nil
}

// live reports whether a job's ranks may be running.
func live(p ternv1.JobPhase) bool {
	switch p {
	case ternv1.JobPhase_JOB_PHASE_SCHEDULING, ternv1.JobPhase_JOB_PHASE_RUNNING, ternv1.JobPhase_JOB_PHASE_RECOVERING:
		return true
	}
	return false
}

// logLine formats a line: with prefix (several ranks merged) it names its
// attempt and rank, as `kubectl logs --prefix` names pod and container.
func logLine(l *ternv1.LogLine, prefix, timestamps bool) string {
	s := l.Text
	if prefix {
		s = fmt.Sprintf("[attempt %d rank %d] %s", l.Attempt, l.Rank, s)
	}
	if timestamps {
		s = l.Time.AsTime().UTC().Format(time.RFC3339Nano) + " " + s
	}
	return s
}
