package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
)

type trainFlags struct {
	file          string
	sets          []string
	checkpointDir string
	resume        string
	output        string
	metricsOut    string
	quiet         bool
}

func newTrainCmd(e *env) *cobra.Command {
	var f trainFlags
	c := &cobra.Command{
		Use:   "train -f JOB.yaml",
		Short: "Train a model in this process from a TrainingJob spec",
		Long: "Train a model in this process from a TrainingJob spec.\n\n" +
			"A header, a live progress line and eval lines go to stderr; the summary goes\n" +
			"to stdout (-o json: one JSON object). Ctrl-C stops after the current step,\n" +
			"writing a checkpoint if a checkpoint directory is set, and exits 130; a\n" +
			"second Ctrl-C quits at once.",
		Example: "  ternctl train -f examples/demo.yaml\n" +
			"  ternctl train -f job.yaml --set optimizer.lr=1e-3 --set steps=100 -o json\n" +
			"  ternctl train -f job.yaml --checkpoint-dir ckpt --resume ckpt",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return trainRun(cmd.Context(), e, &f)
		},
	}
	fl := c.Flags()
	fl.StringVarP(&f.file, "filename", "f", "", "job spec file (YAML or JSON); - reads stdin")
	fl.StringArrayVar(&f.sets, "set", nil, "override a spec field, e.g. --set optimizer.lr=1e-3 (repeatable; lists as [a,b])")
	fl.StringVar(&f.checkpointDir, "checkpoint-dir", "", "write checkpoints under DIR (overrides spec.checkpoint.dir)")
	fl.StringVar(&f.resume, "resume", "", "resume from a checkpoint directory (its latest complete step) or one step directory")
	fl.StringVarP(&f.output, "output", "o", "text", "summary format: text or json")
	fl.StringVar(&f.metricsOut, "metrics-out", "", "write one JSON object per step to FILE")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no progress line (eval lines, header and summary still print)")
	_ = c.MarkFlagFilename("filename", "yaml", "yml", "json")
	_ = c.RegisterFlagCompletionFunc("output", fixedCompletion("text", "json"))
	_ = c.RegisterFlagCompletionFunc("set", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, p := range spec.FieldPaths() {
			out = append(out, strings.TrimPrefix(p, "spec.")+"=")
		}
		return out, cobra.ShellCompDirectiveNoSpace
	})
	return c
}

func fixedCompletion(vals ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return vals, cobra.ShellCompDirectiveNoFileComp
	}
}

func trainRun(ctx context.Context, e *env, f *trainFlags) error {
	if err := outputFlag(f.output); err != nil {
		return err
	}
	if f.file == "" {
		return usagef("no job spec: pass -f JOB.yaml (see examples/ for some)")
	}
	job, err := loadJob(e, f.file, f.sets)
	if err != nil {
		return err
	}
	cfg, err := job.Spec.Model.Resolve()
	if err != nil {
		return fmt.Errorf("%s: %w", f.file, err)
	}

	p := newProgress(e.stderr, e.isTerminal(e.stderr), f.quiet, e.now, job.Spec.Steps)
	if f.metricsOut != "" {
		if err := p.openMetrics(f.metricsOut); err != nil {
			return err
		}
	}
	// Close the metrics file on every path; the error matters only if the
	// run itself succeeded.
	defer p.closeMetrics()

	preset := job.Spec.Model.Preset
	if preset == "" {
		preset = "custom"
	}
	b := job.Spec.Batch
	fmt.Fprintf(e.stderr, "job %s: model %s, %s params (dim %d, %d layers, %d heads, seq %d, vocab %d %s)\n",
		job.Metadata.Name, preset, fmtCount(float64(cfg.NumParams())), cfg.Dim, cfg.Layers, cfg.Heads, cfg.SeqLen, cfg.Vocab, cfg.Tokenizer)
	o := job.Spec.Optimizer
	shape := fmt.Sprintf("%d x %d x %d", b.MicroBatchSize, b.MicroBatches, cfg.SeqLen)
	if n := job.Spec.Parallel.Data; n > 1 {
		shape = fmt.Sprintf("%d replicas x %s", n, shape)
	}
	fmt.Fprintf(e.stderr, "%d steps of %s tokens (%s), %s lr %.1e -> %.1e %s, warmup %d\n",
		job.Spec.Steps, fmtCount(float64(job.TokensPerStep())), shape,
		o.Name, o.LR, o.MinLR, o.Schedule, o.WarmupSteps)
	if ps := job.Spec.Parallel; ps.Data*ps.Pipeline > 1 {
		layout := fmt.Sprintf("%d data-parallel replicas, %s gradient exchange", ps.Data, job.Spec.Communication.Exchange)
		if ps.Pipeline > 1 {
			vocab := "vocabulary parallel (algorithm " + fmt.Sprint(ps.VocabAlgorithm) + ")"
			if !ps.VocabParallel {
				vocab = "embedding on the first stage, head on the last"
			}
			layout = fmt.Sprintf("%d replicas x %d pipeline stages (%s, %s)", ps.Data, ps.Pipeline, ps.Schedule, vocab)
			if b.MicroBatches < ps.Pipeline {
				fmt.Fprintf(e.stderr, "warning: %d microbatches for %d stages: most stages idle most of the time; use batch.microBatches >= %d\n", b.MicroBatches, ps.Pipeline, ps.Pipeline)
			}
		}
		fmt.Fprintf(e.stderr, "%d worker processes on this machine: %s\n", ps.Data*ps.Pipeline, layout)
	}

	var dataProgress io.Writer = e.stderr
	if f.quiet {
		dataProgress = io.Discard
	}
	ckptDir := f.checkpointDir
	if ckptDir == "" {
		ckptDir = job.Spec.Checkpoint.Dir
	}
	sum, err := runJob(ctx, e, job, train.Options{CheckpointDir: ckptDir, Resume: f.resume, Observer: p, Progress: dataProgress})
	p.finish()
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			fmt.Fprintln(e.stderr, "interrupted before the first step finished; nothing was saved")
			return &exitCodeError{exitInterrupted}
		}
		return fmt.Errorf("train %s: %w", job.Metadata.Name, err)
	}
	if sum == nil {
		return fmt.Errorf("train %s: the training loop returned no summary", job.Metadata.Name)
	}
	if err := p.closeMetrics(); err != nil {
		return err
	}
	if f.output == "json" {
		out, err := json.Marshal(sum.Portable())
		if err != nil {
			return fmt.Errorf("encode summary: %w", err)
		}
		fmt.Fprintf(e.stdout, "%s\n", out)
	} else {
		fmt.Fprint(e.stdout, summaryText(sum, job.Spec.Steps, p.losses))
	}
	if sum.Stopped {
		return &exitCodeError{exitInterrupted}
	}
	return nil
}

// loadJob reads the spec from a file, or from stdin for "-".
func loadJob(e *env, file string, sets []string) (*spec.TrainingJob, error) {
	if file != "-" {
		return spec.Load(file, sets)
	}
	b, err := io.ReadAll(e.stdin)
	if err != nil {
		return nil, fmt.Errorf("read job spec from stdin: %w", err)
	}
	j, err := spec.Parse(b, sets)
	if err != nil {
		return nil, fmt.Errorf("<stdin>: %w", err)
	}
	return j, nil
}
