package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/ternml/tern/pkg/train"
)

const (
	// redrawInterval limits how often the terminal progress line is redrawn;
	// faster than this only flickers.
	redrawInterval = 100 * time.Millisecond
	// plainInterval is the longest gap between progress lines when stderr
	// is a log file rather than a terminal.
	plainInterval = 5 * time.Second
	// plainLines is about how many step-count-driven progress lines a
	// non-terminal run prints, so that long runs do not flood logs.
	plainLines = 20
	// etaWindow is how many recent steps the fallback ETA averages over.
	etaWindow = 20
)

// progress is the Observer ternctl gives the training loop: it draws the
// progress line, prints eval and log lines, writes --metrics-out, and keeps
// what the summary needs (the loss curve).
type progress struct {
	w       io.Writer // stderr
	tty     bool      // redraw one line in place instead of printing lines
	quiet   bool      // no progress line; eval and log lines still print
	now     func() time.Time
	metrics *bufio.Writer
	mfile   io.Closer

	steps      int
	plainEvery int
	lastDraw   time.Time
	drawn      bool // a progress line is on screen, without its newline
	lastLine   string
	losses     []float64
	recentMS   []float64
	metricsErr error
}

func newProgress(w io.Writer, tty, quiet bool, now func() time.Time, steps int) *progress {
	p := &progress{w: w, tty: tty, quiet: quiet, now: now}
	p.setSteps(steps)
	return p
}

func (p *progress) setSteps(steps int) {
	p.steps = steps
	// Round the step interval up to a multiple of 10 so lines land on
	// round step numbers.
	every := (steps + plainLines - 1) / plainLines
	p.plainEvery = max(10, (every+9)/10*10)
}

// openMetrics starts the --metrics-out file; it is created before training
// so a bad path fails before any work is done.
func (p *progress) openMetrics(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--metrics-out: %w", err)
	}
	p.mfile = f
	p.metrics = bufio.NewWriter(f)
	return nil
}

// closeMetrics flushes and closes the metrics file, returning the first
// error seen while writing it.
func (p *progress) closeMetrics() error {
	if p.metrics == nil {
		return nil
	}
	if err := p.metrics.Flush(); err != nil && p.metricsErr == nil {
		p.metricsErr = err
	}
	if err := p.mfile.Close(); err != nil && p.metricsErr == nil {
		p.metricsErr = err
	}
	p.metrics = nil
	if p.metricsErr != nil {
		return fmt.Errorf("--metrics-out: %w", p.metricsErr)
	}
	return nil
}

func (p *progress) Started(info train.RunInfo) {
	if info.Steps > 0 {
		p.setSteps(info.Steps)
	}
	msg := fmt.Sprintf("data: %s training tokens, %s validation tokens", fmtCount(float64(info.TrainTokens)), fmtCount(float64(info.ValTokens)))
	if info.StartStep > 0 {
		msg += fmt.Sprintf("; starting at step %d of %d", info.StartStep, info.Steps)
	}
	p.println(msg)
	if info.Optimizer != "" {
		p.println(fmt.Sprintf("optimizer: %s, %s of state", info.Optimizer, fmtBytes(info.OptimizerStateBytes)))
	}
}

func (p *progress) Log(msg string) { p.println(msg) }

func (p *progress) Step(r train.StepReport) {
	p.writeMetrics(r)
	if !math.IsNaN(r.Loss) {
		p.losses = append(p.losses, r.Loss)
	}
	p.recentMS = append(p.recentMS, r.StepMS)
	if len(p.recentMS) > etaWindow {
		p.recentMS = p.recentMS[1:]
	}
	if r.Steps > 0 && r.Steps != p.steps {
		p.setSteps(r.Steps)
	}
	var line string
	var now time.Time
	if !p.quiet {
		line, now = p.line(r), p.now()
	}
	if r.EvalLoss != nil {
		if p.tty && p.drawn && !p.quiet {
			// println redraws the progress line under the eval line; make
			// it this step's line rather than a stale one.
			p.lastLine, p.lastDraw = line, now
		}
		p.println(fmt.Sprintf("eval step %d: loss %.4g", r.Step, *r.EvalLoss))
	}
	if p.quiet {
		return
	}
	last := r.Step >= p.steps
	if p.tty {
		if last || !p.drawn || now.Sub(p.lastDraw) >= redrawInterval {
			fmt.Fprintf(p.w, "\r%s\x1b[K", line)
			p.drawn, p.lastDraw, p.lastLine = true, now, line
		}
		return
	}
	if last || r.Step == 1 || r.Step%p.plainEvery == 0 || now.Sub(p.lastDraw) >= plainInterval {
		fmt.Fprintln(p.w, line)
		p.lastDraw = now
	}
}

// line is the progress line for one step, e.g.
// step 120/600  loss 2.314  lr 2.9e-03  11.2k tok/s  183 ms/step  ETA 1m28s
func (p *progress) line(r train.StepReport) string {
	eta := r.ETASeconds
	if eta <= 0 {
		var sum float64
		for _, ms := range p.recentMS {
			sum += ms
		}
		eta = sum / float64(len(p.recentMS)) / 1e3 * float64(p.steps-r.Step)
	}
	return fmt.Sprintf("step %d/%d  loss %.4g  lr %.1e  %s tok/s  %.0f ms/step  ETA %s",
		r.Step, p.steps, r.Loss, r.LR, fmtCount(r.TokensPerS), r.StepMS, fmtDuration(seconds(eta)))
}

// println prints a whole line, moving a progress line that is on screen out
// of the way and redrawing it below.
func (p *progress) println(msg string) {
	if p.tty && p.drawn {
		fmt.Fprintf(p.w, "\r\x1b[K%s\n%s", msg, p.lastLine)
		return
	}
	fmt.Fprintln(p.w, msg)
}

// finish ends the progress line so later output starts on a new line.
func (p *progress) finish() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func (p *progress) writeMetrics(r train.StepReport) {
	if p.metrics == nil || p.metricsErr != nil {
		return
	}
	b, err := json.Marshal(metricsLine(r))
	if err == nil {
		b = append(b, '\n')
		_, err = p.metrics.Write(b)
	}
	if err == nil {
		// Flush per step so `tail -f` and a crash both see every finished step.
		err = p.metrics.Flush()
	}
	p.metricsErr = err
}

// metricsLine is a StepReport as its JSON tags name it, with a non-finite
// number (a diverged loss) written as null, since JSON has no NaN.
func metricsLine(r train.StepReport) any {
	type finite train.StepReport
	if isFinite(r.Loss, r.LR, r.TokensPerS, r.StepMS, r.GradNorm) {
		return finite(r)
	}
	m := map[string]any{"step": r.Step, "optimizer_state_bytes": r.OptimizerStateBytes}
	for k, v := range map[string]float64{"loss": r.Loss, "lr": r.LR, "tokens_per_s": r.TokensPerS, "step_ms": r.StepMS, "grad_norm": r.GradNorm} {
		if isFinite(v) {
			m[k] = v
		} else {
			m[k] = nil
		}
	}
	if r.EvalLoss != nil {
		m["eval_loss"] = *r.EvalLoss
	}
	return m
}

func isFinite(xs ...float64) bool {
	for _, x := range xs {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

// summaryText is the block `ternctl train` prints on stdout at the end.
func summaryText(s *train.Summary, totalSteps int, losses []float64) string {
	var b strings.Builder
	if s.Stopped {
		fmt.Fprintf(&b, "job %s stopped at step %d of %d after %s\n", s.Job, s.Steps, totalSteps, fmtDuration(seconds(s.WallS)))
	} else {
		fmt.Fprintf(&b, "job %s finished: %d steps in %s\n", s.Job, s.Steps, fmtDuration(seconds(s.WallS)))
	}
	row := func(k, format string, args ...any) {
		fmt.Fprintf(&b, "  %-12s%s\n", k, fmt.Sprintf(format, args...))
	}
	if len(losses) > 0 {
		row("loss", "%.4g -> %.4g  %s", losses[0], s.FinalLoss, sparkline(losses, 40))
	} else {
		row("loss", "%.4g", s.FinalLoss)
	}
	if isFinite(s.FinalEvalLoss) && s.FinalEvalLoss != 0 {
		row("eval loss", "%.4g", s.FinalEvalLoss)
	}
	row("throughput", "%s tok/s, median %.0f ms/step, %.1f GFLOP/s", fmtCount(s.TokensPerS), s.StepMSMedian, s.ModelGFLOPS)
	if s.PeakRSSBytes > 0 {
		m := s.Memory
		mib := func(n int64) float64 { return float64(n) / (1 << 20) }
		row("peak RSS", "%.0f MiB (weights %.1f, grads %.1f, optimizer %.1f, activations %.1f, data %.1f MiB)",
			mib(s.PeakRSSBytes), mib(m.Weights), mib(m.Grads), mib(m.Optimizer), mib(m.Activations), mib(m.Data))
	}
	if s.Optimizer != "" {
		row("optimizer", "%s, %s of state", s.Optimizer, fmtBytes(s.OptimizerStateBytes))
	}
	row("params", "%s", fmtCount(float64(s.Params)))
	row("wall time", "%s", fmtDuration(seconds(s.WallS)))
	if s.Checkpoint != "" {
		row("checkpoint", "%s", s.Checkpoint)
	}
	return b.String()
}
