package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
)

const testJob = `apiVersion: tern/v1
kind: TrainingJob
metadata: {name: unit}
spec:
  steps: 30
  model: {preset: tiny}
  eval: {everySteps: 10, batches: 1}
`

// fakeTraining stands in for the training loop: it reports steps with a
// falling loss, an eval every spec.eval.everySteps, and stops early (as the
// loop does) when ctx is cancelled, cancelling it itself after cancelAt steps.
func fakeTraining(cancelAt int, cancel func()) func(context.Context, *spec.TrainingJob, train.Options) (*train.Summary, error) {
	return func(ctx context.Context, job *spec.TrainingJob, o train.Options) (*train.Summary, error) {
		n := job.Spec.Steps
		const stateBytes = 1536
		o.Observer.Started(train.RunInfo{Job: job.Metadata.Name, Optimizer: job.Spec.Optimizer.Name, OptimizerStateBytes: stateBytes,
			Params: 1234, Steps: n, TokensPerStep: job.TokensPerStep(), TrainTokens: 1_500_000, ValTokens: 15_000})
		o.Observer.Log("loaded corpus")
		sum := &train.Summary{Job: job.Metadata.Name, Optimizer: job.Spec.Optimizer.Name, OptimizerStateBytes: stateBytes,
			Params: 1234, FinalEvalLoss: nan(), Checkpoint: o.CheckpointDir}
		for s := 1; s <= n; s++ {
			if ctx.Err() != nil {
				sum.Stopped = true
				break
			}
			r := train.StepReport{Step: s, Steps: n, Loss: 5.0 / float64(s), LR: 1e-3, TokensPerS: 12000, StepMS: 150, GradNorm: 0.5, OptimizerStateBytes: stateBytes}
			if ev := job.Spec.Eval.EverySteps; ev > 0 && s%ev == 0 {
				l := 6.0 / float64(s)
				r.EvalLoss = &l
				sum.FinalEvalLoss = l
			}
			o.Observer.Step(r)
			sum.Steps, sum.FinalLoss = s, r.Loss
			if s == cancelAt {
				cancel()
			}
		}
		sum.TokensPerS, sum.StepMSMedian, sum.WallS, sum.PeakRSSBytes = 12000, 150, 4.5, 300<<20
		return sum, nil
	}
}

func nan() float64 { return math.NaN() }

func withFake(t *testing.T, f func(context.Context, *spec.TrainingJob, train.Options) (*train.Summary, error)) {
	old := runTraining
	runTraining = f
	t.Cleanup(func() { runTraining = old })
}

func writeJob(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, tty bool, args ...string) result {
	t.Helper()
	return runCLICtx(context.Background(), tty, args...)
}

func runCLICtx(ctx context.Context, tty bool, args ...string) result {
	return runWith(ctx, &env{isTerminal: func(io.Writer) bool { return tty }, now: time.Now}, args...)
}

func runWith(ctx context.Context, e *env, args ...string) result {
	var out, errb bytes.Buffer
	e.stdout, e.stderr = &out, &errb
	if e.stdin == nil {
		e.stdin = strings.NewReader("")
	}
	code := runEnv(ctx, args, e)
	return result{code, out.String(), errb.String()}
}

func TestTrainJSONIsOneObjectOnStdout(t *testing.T) {
	withFake(t, fakeTraining(0, nil))
	r := runCLI(t, false, "train", "-f", writeJob(t, testJob), "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	var sum map[string]any
	if err := dec.Decode(&sum); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("stdout has more than one JSON value:\n%s", r.stdout)
	}
	if sum["job"] != "unit" || sum["steps"] != 30.0 || sum["stopped"] != false || sum["final_eval_loss"] != 0.2 ||
		sum["optimizer"] != "adamw" || sum["optimizer_state_bytes"] != 1536.0 {
		t.Fatalf("summary = %v", sum)
	}
	// Progress and the header went to stderr.
	for _, w := range []string{"job unit: model tiny", "step 30/30", "eval step 10: loss 0.6", "loaded corpus", "1.50M training tokens", "optimizer: adamw, 1.50 KiB of state"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
}

func TestTrainJSONWithoutEvalWritesNull(t *testing.T) {
	withFake(t, fakeTraining(0, nil))
	r := runCLI(t, false, "train", "-f", writeJob(t, testJob), "-o", "json", "--set", "eval.everySteps=0")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	var sum map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
		t.Fatal(err)
	}
	if v, ok := sum["final_eval_loss"]; !ok || v != nil {
		t.Fatalf("final_eval_loss = %v (present %t), want null for a run without evaluation", v, ok)
	}
}

func TestTrainTextSummaryAndPlainProgress(t *testing.T) {
	withFake(t, fakeTraining(0, nil))
	r := runCLI(t, false, "train", "-f", writeJob(t, testJob), "--checkpoint-dir", "/tmp/ck")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	for _, w := range []string{"job unit finished: 30 steps", "loss        5 -> 0.1667", "eval loss   0.2", "12.0k tok/s, median 150 ms/step", "peak RSS    300 MiB", "optimizer   adamw, 1.50 KiB of state", "checkpoint  /tmp/ck", "█"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("summary lacks %q:\n%s", w, r.stdout)
		}
	}
	// Not a terminal: whole lines, no carriage returns, at steps 1, 10, 20, 30.
	if strings.Contains(r.stderr, "\r") {
		t.Errorf("non-terminal stderr has carriage returns:\n%q", r.stderr)
	}
	var steps []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "step ") {
			steps = append(steps, strings.Fields(l)[1])
		}
	}
	if strings.Join(steps, " ") != "1/30 10/30 20/30 30/30" {
		t.Errorf("progress lines at %v, want 1/30 10/30 20/30 30/30:\n%s", steps, r.stderr)
	}
	if !strings.Contains(r.stderr, "step 10/30  loss 0.5  lr 1.0e-03  12.0k tok/s  150 ms/step  ETA 3.0s") {
		t.Errorf("progress line format changed:\n%s", r.stderr)
	}
}

func TestTrainTerminalRedrawAndQuiet(t *testing.T) {
	withFake(t, fakeTraining(0, nil))
	job := writeJob(t, testJob)
	r := runCLI(t, true, "train", "-f", job)
	if r.code != 0 || !strings.Contains(r.stderr, "\rstep 30/30") || !strings.Contains(r.stderr, "\x1b[K") {
		t.Fatalf("terminal run: exit %d, stderr %q", r.code, r.stderr)
	}
	// An eval line scrolls up and the line under it shows the eval's step.
	if !strings.Contains(r.stderr, "\r\x1b[Keval step 10: loss 0.6\nstep 10/30 ") {
		t.Fatalf("eval line not followed by its step's progress line: %q", r.stderr)
	}
	q := runCLI(t, true, "train", "-f", job, "--quiet")
	if q.code != 0 || strings.Contains(q.stderr, "step 30/30") {
		t.Fatalf("--quiet still draws progress: %q", q.stderr)
	}
	if !strings.Contains(q.stderr, "eval step 30") {
		t.Fatalf("--quiet dropped eval lines: %q", q.stderr)
	}
}

func TestMetricsOut(t *testing.T) {
	withFake(t, fakeTraining(0, nil))
	mpath := filepath.Join(t.TempDir(), "m.jsonl")
	r := runCLI(t, false, "train", "-f", writeJob(t, testJob), "--metrics-out", mpath, "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	f, err := os.Open(mpath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n, evals := 0, 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", n+1, err, sc.Text())
		}
		n++
		if m["step"] != float64(n) {
			t.Fatalf("line %d has step %v", n, m["step"])
		}
		for _, k := range []string{"loss", "lr", "tokens_per_s", "step_ms", "grad_norm", "optimizer_state_bytes"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("line %d lacks %s: %s", n, k, sc.Text())
			}
		}
		if _, ok := m["eval_loss"]; ok {
			evals++
		}
	}
	if n != 30 || evals != 3 {
		t.Fatalf("%d lines with %d evals, want 30 and 3", n, evals)
	}
}

func TestMetricsOutBadPathFailsBeforeTraining(t *testing.T) {
	called := false
	withFake(t, func(context.Context, *spec.TrainingJob, train.Options) (*train.Summary, error) {
		called = true
		return &train.Summary{}, nil
	})
	r := runCLI(t, false, "train", "-f", writeJob(t, testJob), "--metrics-out", filepath.Join(t.TempDir(), "no", "such", "m.jsonl"))
	if r.code != 1 || called || !strings.Contains(r.stderr, "error: --metrics-out:") {
		t.Fatalf("exit %d, trained %t, stderr %q", r.code, called, r.stderr)
	}
}

func TestBadSpecListsFields(t *testing.T) {
	withFake(t, fakeTraining(0, nil))
	job := writeJob(t, strings.Replace(testJob, "steps: 30", "steps: 0\n  optimizer: {name: adam, lrr: 1}", 1))
	r := runCLI(t, false, "train", "-f", job, "-o", "json")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1", r.code)
	}
	if r.stdout != "" {
		t.Fatalf("stdout not empty on error: %q", r.stdout)
	}
	for _, w := range []string{"error: " + job + ": 3 problems:\n", "  spec.optimizer.lrr: unknown field", "  spec.optimizer.name: \"adam\" is not supported (allowed: adamw, adafactor, came, adam-mini, galore, apollo, apollo-mini, microadam, grass, demo)\n", "  spec.steps: must be >= 1, got 0\n"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	r = runCLI(t, false, "train", "-f", writeJob(t, testJob), "--set", "optimizer.lr=fast")
	if r.code != 1 || !strings.Contains(r.stderr, "spec.optimizer.lr: must be a number, got string \"fast\" (from --set optimizer.lr=fast)") {
		t.Fatalf("bad --set: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runCLI(t, false, "train", "-f", filepath.Join(t.TempDir(), "missing.yaml"))
	if r.code != 1 || !strings.HasPrefix(r.stderr, "error: read job spec:") {
		t.Fatalf("missing file: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestTrainingFailure(t *testing.T) {
	withFake(t, func(context.Context, *spec.TrainingJob, train.Options) (*train.Summary, error) {
		return nil, errors.New("corpus /nope: no such directory")
	})
	r := runCLI(t, false, "train", "-f", writeJob(t, testJob))
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "error: train unit: corpus /nope: no such directory\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestInterruptStopsCleanly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	withFake(t, fakeTraining(12, cancel))
	r := runCLICtx(ctx, false, "train", "-f", writeJob(t, testJob), "-o", "json")
	if r.code != exitInterrupted {
		t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, exitInterrupted, r.stderr)
	}
	var sum train.Summary
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || !sum.Stopped || sum.Steps != 12 {
		t.Fatalf("summary %+v, %v; want stopped at 12", sum, err)
	}
}

func TestUsageErrors(t *testing.T) {
	withFake(t, fakeTraining(0, nil))
	job := writeJob(t, testJob)
	for _, args := range [][]string{
		{"train", "-f", job, "--no-such-flag"},
		{"train"}, // -f is required
		{"train", "-f", job, "-o", "yaml"},
		{"train", "-f", job, "extra"},
		{"trian"},
		{"explain", "a", "b"},
		{"completion", "powershell"},
		{"completion"},
	} {
		r := runCLI(t, false, args...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2; stderr %q", args, r.code, r.stderr)
		}
		if !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, "--help' for usage.") || r.stdout != "" {
			t.Errorf("%v: stdout %q stderr %q", args, r.stdout, r.stderr)
		}
	}
	if r := runCLI(t, false, "trian"); !strings.Contains(r.stderr, `did you mean "train"?`) {
		t.Errorf("no suggestion for a misspelt command: %q", r.stderr)
	}
}

func TestExplain(t *testing.T) {
	r := runCLI(t, false, "explain", "optimizer.schedule")
	if r.code != 0 || !strings.Contains(r.stdout, "FIELD:    spec.optimizer.schedule <string>") || !strings.Contains(r.stdout, "ALLOWED:  cosine, linear, constant") || r.stderr != "" {
		t.Fatalf("explain: %+v", r)
	}
	r = runCLI(t, false, "explain")
	if r.code != 0 || !strings.Contains(r.stdout, "KIND:     TrainingJob") {
		t.Fatalf("explain root: %+v", r)
	}
	r = runCLI(t, false, "explain", "spec", "--recursive")
	if r.code != 0 || !strings.Contains(r.stdout, "    microBatchSize <integer>\n") {
		t.Fatalf("explain --recursive: %+v", r)
	}
	r = runCLI(t, false, "explain", "spec.optimiser")
	if r.code != 1 || !strings.Contains(r.stderr, `did you mean "optimizer"?`) {
		t.Fatalf("explain unknown field: %+v", r)
	}
}

func TestVersion(t *testing.T) {
	r := runCLI(t, false, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ternctl dev") {
		t.Fatalf("version: %+v", r)
	}
	r = runCLI(t, false, "version", "-o", "json")
	var v versionInfo
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || v.Version != "dev" || v.Go == "" {
		t.Fatalf("version -o json: %+v", r)
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := runCLI(t, false, "completion", sh)
		if r.code != 0 || !strings.Contains(r.stdout, "ternctl") || len(r.stdout) < 500 {
			t.Errorf("completion %s: exit %d, %d bytes", sh, r.code, len(r.stdout))
		}
	}
	// Dynamic completion of explain's FIELD argument through cobra's hidden command.
	r := runCLI(t, false, "__complete", "explain", "spec.optim")
	if r.code != 0 || !strings.Contains(r.stdout, "spec.optimizer.lr\n") {
		t.Fatalf("field completion: %+v", r)
	}
}

func TestHelpGoesToStdout(t *testing.T) {
	r := runCLI(t, false)
	if r.code != 0 || !strings.Contains(r.stdout, "train") || !strings.Contains(r.stdout, "explain") {
		t.Fatalf("no-args help: %+v", r)
	}
	r = runCLI(t, false, "train", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--metrics-out") {
		t.Fatalf("train --help: %+v", r)
	}
}

func TestNotifyContextStopsOnFinish(t *testing.T) {
	var buf bytes.Buffer
	ctx, stop := notifyContext(context.Background(), &buf)
	stop()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not cancelled by stop")
	}
}

func TestSlowStepsPrintEveryFewSeconds(t *testing.T) {
	withFake(t, fakeTraining(0, nil))
	// A clock that moves 2 s per reading: each step outlasts nothing on its
	// own, but lines appear whenever 5 s have passed since the last.
	var clock time.Time
	now := func() time.Time { clock = clock.Add(2 * time.Second); return clock }
	r := runWith(context.Background(), &env{isTerminal: func(io.Writer) bool { return false }, now: now}, "train", "-f", writeJob(t, testJob))
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var steps []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "step ") {
			steps = append(steps, strings.TrimSuffix(strings.Fields(l)[1], "/30"))
		}
	}
	if got := strings.Join(steps, " "); got != "1 4 7 10 13 16 19 20 23 26 29 30" {
		t.Fatalf("progress lines at steps %s", got)
	}
}

func TestSpecFromStdin(t *testing.T) {
	withFake(t, fakeTraining(0, nil))
	r := runWith(context.Background(), &env{stdin: strings.NewReader(testJob), isTerminal: func(io.Writer) bool { return false }, now: time.Now}, "train", "-f", "-", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"job":"unit"`) {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = runWith(context.Background(), &env{stdin: strings.NewReader("kind: Nope\n"), isTerminal: func(io.Writer) bool { return false }, now: time.Now}, "train", "-f", "-")
	if r.code != 1 || !strings.Contains(r.stderr, "error: <stdin>: ") || !strings.Contains(r.stderr, "  kind: \"Nope\" is not supported") {
		t.Fatalf("bad stdin spec: exit %d, stderr %q", r.code, r.stderr)
	}
}
