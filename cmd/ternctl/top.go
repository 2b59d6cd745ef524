package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// topInterval is how often `top -w` redraws.
const topInterval = 2 * time.Second

// Plot size bounds.
const (
	minPlotWidth, maxPlotWidth   = 10, 400
	minPlotHeight, maxPlotHeight = 3, 100
)

func newTopCmd(e *env, cf *clusterFlags) *cobra.Command {
	var watch bool
	var width, height int
	c := &cobra.Command{
		Use:   "top NAME [-w]",
		Short: "Show a job's progress and its loss curve in the terminal",
		Long: "Show a job's phase, progress, loss, throughput and ETA, and plot its training\n" +
			"loss over the steps so far (the latest attempt's value where a restart ran a\n" +
			"step again). -w redraws every 2s until the job is over; Ctrl-C stops watching,\n" +
			"never the job.",
		Example:           "  ternctl top tiny\n  ternctl top tiny -w --width 100 --height 25",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: jobNameCompletion(cf),
		RunE: func(cmd *cobra.Command, args []string) error {
			if width < minPlotWidth || width > maxPlotWidth || height < minPlotHeight || height > maxPlotHeight {
				return usagef("--width %d --height %d: allowed widths %d to %d, heights %d to %d", width, height, minPlotWidth, maxPlotWidth, minPlotHeight, maxPlotHeight)
			}
			return topRun(cmd.Context(), e, cf, args[0], watch, width, height)
		},
	}
	c.Flags().BoolVarP(&watch, "watch", "w", false, "redraw until the job is over")
	c.Flags().IntVar(&width, "width", 60, "plot width in columns")
	c.Flags().IntVar(&height, "height", 15, "plot height in rows")
	return c
}

func topRun(ctx context.Context, e *env, cf *clusterFlags, name string, watch bool, width, height int) error {
	client, closeConn, err := connect(ctx, cf)
	if err != nil {
		return err
	}
	defer closeConn()
	tty := e.isTerminal(e.stdout)
	var points []*ternv1.StepMetrics
	for {
		resp, err := client.GetJob(ctx, &ternv1.GetJobRequest{Name: name})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return rpcErr(cf.addr, "get job "+name, err)
		}
		j := resp.Job
		// Fetch only what is new: the points after the last step held,
		// or all of them again when a new attempt went back in steps.
		after := int64(0)
		if n := len(points); n > 0 && points[n-1].Attempt == j.Attempt {
			after = points[n-1].Step
		}
		m, err := client.GetJobMetrics(ctx, &ternv1.GetJobMetricsRequest{Name: name, AfterStep: after})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return rpcErr(cf.addr, "metrics of job "+name, err)
		}
		if after == 0 {
			points = m.Points
		} else {
			points = append(points, m.Points...)
		}
		var frame strings.Builder
		if watch && tty {
			frame.WriteString("\x1b[H\x1b[2J") // home and clear: redraw in place
		}
		topFrame(&frame, j, points, e.now(), width, height)
		if _, err := io.WriteString(e.stdout, frame.String()); err != nil {
			return err
		}
		if !watch || Terminal(j.Phase) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // Ctrl-C stops watching; the job goes on
		case <-time.After(topInterval):
		}
		if !tty {
			fmt.Fprintln(e.stdout)
		}
	}
}

// Terminal reports whether a job phase is final.
func Terminal(p ternv1.JobPhase) bool {
	_, over := terminalExit(p)
	return over
}

// topFrame writes one screen of `top`: a status header and the plot.
func topFrame(w io.Writer, j *ternv1.Job, points []*ternv1.StepMetrics, now time.Time, width, height int) {
	fmt.Fprintf(w, "job/%s  %s  attempt %d  restarts %d/%d\n", j.Name, phaseName(j.Phase), j.Attempt, j.Restarts, j.MaxRestarts)
	fmt.Fprintf(w, "step %s  loss %s  tokens/s %s  ETA %s  age %s\n", progressText(j), lossText(j), rateText(j), etaText(j), ageText(j.Created, now))
	if j.Reason != "" {
		fmt.Fprintf(w, "%s\n", oneLine(j.Reason))
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, lossPlot(points, width, height))
}

// lossPlot draws the training loss against the step as text: height rows
// of width columns, each column the mean loss of an equal share of the
// step range, a y axis labelled with the loss at the top, middle and
// bottom, and the first and last step under the x axis. Where a step was
// run more than once (a restart from an earlier checkpoint), the latest
// value counts.
func lossPlot(points []*ternv1.StepMetrics, width, height int) string {
	latest := map[int64]float64{}
	for _, p := range points {
		if !math.IsNaN(p.Loss) && !math.IsInf(p.Loss, 0) {
			latest[p.Step] = p.Loss
		}
	}
	if len(latest) == 0 {
		return "(no steps reported yet)\n"
	}
	steps := make([]int64, 0, len(latest))
	for s := range latest {
		steps = append(steps, s)
	}
	slices.Sort(steps)
	first, last := steps[0], steps[len(steps)-1]
	cols := min(width, len(steps))
	sum := make([]float64, cols)
	cnt := make([]int, cols)
	for _, s := range steps {
		c := 0
		if last > first {
			c = int((s - first) * int64(cols-1) / (last - first))
		}
		sum[c] += latest[s]
		cnt[c]++
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for c := range cols {
		if cnt[c] > 0 {
			sum[c] /= float64(cnt[c])
			lo, hi = min(lo, sum[c]), max(hi, sum[c])
		}
	}
	grid := make([][]byte, height)
	for r := range grid {
		grid[r] = []byte(strings.Repeat(" ", cols))
	}
	for c := range cols {
		if cnt[c] == 0 {
			continue
		}
		r := height - 1
		if hi > lo {
			r = int(math.Round((hi - sum[c]) / (hi - lo) * float64(height-1)))
		}
		grid[r][c] = '*'
	}
	labels := make([]string, height)
	labels[0] = fmt.Sprintf("%.4f", hi)
	labels[height-1] = fmt.Sprintf("%.4f", lo)
	if height > 2 {
		labels[(height-1)/2] = fmt.Sprintf("%.4f", hi-(hi-lo)*float64((height-1)/2)/float64(height-1))
	}
	lw := 0
	for _, l := range labels {
		lw = max(lw, len(l))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%*s loss\n", lw, "")
	for r := range height {
		fmt.Fprintf(&b, "%*s |%s\n", lw, labels[r], strings.TrimRight(string(grid[r]), " "))
	}
	fmt.Fprintf(&b, "%*s +%s\n", lw, "", strings.Repeat("-", cols))
	left, right := fmt.Sprint(first), fmt.Sprint(last)
	gap := max(1, cols-len(left)-len(right))
	fmt.Fprintf(&b, "%*s  %s%s%s  step\n", lw, "", left, strings.Repeat(" ", gap), right)
	return b.String()
}
