package train

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/spec"
)

// tinyJob is examples/tiny.yaml with the cache in a temp dir and the given
// number of steps.
func tinyJob(t *testing.T, steps int, sets ...string) *spec.TrainingJob {
	t.Helper()
	text, err := filepath.Abs("../../examples/tiny.txt")
	if err != nil {
		t.Fatal(err)
	}
	sets = append([]string{
		"data.path=" + text,
		"data.cacheDir=" + t.TempDir(),
		"steps=" + strconv.Itoa(steps),
	}, sets...)
	job, err := spec.Load("../../examples/tiny.yaml", sets)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

type recorder struct {
	losses []float64
	evals  []float64
}

func (r *recorder) Started(RunInfo) {}
func (r *recorder) Step(s StepReport) {
	r.losses = append(r.losses, s.Loss)
	if s.EvalLoss != nil {
		r.evals = append(r.evals, *s.EvalLoss)
	}
}
func (r *recorder) Log(string) {}

// run trains job to the end and returns the per-step losses and final weights.
func run(t *testing.T, job *spec.TrainingJob, opts Options) ([]float64, [][]float32, *Summary) {
	t.Helper()
	r, err := newRunner(context.Background(), job, opts)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	sum, err := r.loop(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	var ws [][]float32
	for _, p := range r.model.Params() {
		ws = append(ws, append([]float32(nil), p.W...))
	}
	return rec.losses, ws, sum
}

func sameRun(t *testing.T, what string, la, lb []float64, wa, wb [][]float32) {
	t.Helper()
	if len(la) != len(lb) {
		t.Fatalf("%s: %d vs %d losses", what, len(la), len(lb))
	}
	for i := range la {
		if math.Float64bits(la[i]) != math.Float64bits(lb[i]) {
			t.Fatalf("%s: loss at step %d differs: %v vs %v", what, i+1, la[i], lb[i])
		}
	}
	for i := range wa {
		for j := range wa[i] {
			if math.Float32bits(wa[i][j]) != math.Float32bits(wb[i][j]) {
				t.Fatalf("%s: weight %d[%d] differs: %v vs %v", what, i, j, wa[i][j], wb[i][j])
			}
		}
	}
}

func TestTinyMemorisesText(t *testing.T) {
	if testing.Short() {
		t.Skip("300 training steps: too slow under the race detector; make test runs it in the full pass")
	}
	job := tinyJob(t, 300)
	losses, _, sum := run(t, job, Options{})
	first, last := losses[0], losses[len(losses)-1]
	t.Logf("loss %.3f -> %.4f over %d steps, eval %.4f", first, last, len(losses), sum.FinalEvalLoss)
	if math.Abs(first-math.Log(256)) > 0.5 {
		t.Errorf("initial loss %.3f, want about ln(256) = %.3f", first, math.Log(256))
	}
	if last >= 0.1 {
		t.Errorf("final train loss %.4f, want < 0.1 (the text should be memorised)", last)
	}
}

func TestDeterministicAcrossRunsAndCores(t *testing.T) {
	la, wa, _ := run(t, tinyJob(t, 12), Options{})
	lb, wb, _ := run(t, tinyJob(t, 12), Options{})
	sameRun(t, "two runs", la, lb, wa, wb)
	prev := runtime.GOMAXPROCS(1)
	lc, wc, _ := run(t, tinyJob(t, 12), Options{})
	runtime.GOMAXPROCS(prev)
	sameRun(t, "GOMAXPROCS=1 vs default", la, lc, wa, wc)
	if prev < 2 {
		t.Logf("machine has GOMAXPROCS=%d: the core-count comparison is weaker", prev)
	}
}

func TestResumeEqualsUninterrupted(t *testing.T) {
	const steps, stopAt = 20, 8
	full, wFull, _ := run(t, tinyJob(t, steps, "batch.microBatches=2"), Options{})

	dir := t.TempDir()
	// First half: a run whose context is cancelled after stopAt steps writes a
	// checkpoint at the step it stopped.
	job := tinyJob(t, steps, "batch.microBatches=2")
	r, err := newRunner(context.Background(), job, Options{CheckpointDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := &stopAfter{n: stopAt, cancel: cancel}
	sum, err := r.loop(ctx, stop)
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Stopped || sum.Steps != stopAt || sum.Checkpoint == "" {
		t.Fatalf("interrupted run: stopped=%v steps=%d checkpoint=%q", sum.Stopped, sum.Steps, sum.Checkpoint)
	}
	// Second half: resume from the root and train to the end.
	rest, wRest, _ := run(t, tinyJob(t, steps, "batch.microBatches=2"), Options{Resume: dir})
	sameRun(t, "resumed vs uninterrupted", full, append(append([]float64(nil), stop.losses...), rest...), wFull, wRest)
}

type stopAfter struct {
	recorder
	n      int
	cancel func()
}

func (s *stopAfter) Step(r StepReport) {
	s.recorder.Step(r)
	if r.Step == s.n {
		s.cancel()
	}
}

func TestResumeRejectsDifferentJob(t *testing.T) {
	dir := t.TempDir()
	run(t, tinyJob(t, 3, "checkpoint.everySteps=3"), Options{CheckpointDir: dir})
	_, err := newRunner(context.Background(), tinyJob(t, 6, "optimizer.lr=0.02"), Options{Resume: dir})
	if err == nil || !strings.Contains(err.Error(), "spec.optimizer") {
		t.Fatalf("resume with another lr: got %v, want an error naming spec.optimizer", err)
	}
	// Longer training from the same checkpoint is allowed.
	if _, err := newRunner(context.Background(), tinyJob(t, 6), Options{Resume: dir}); err != nil {
		t.Fatalf("resume with more steps: %v", err)
	}
	if _, err := newRunner(context.Background(), tinyJob(t, 6), Options{Resume: filepath.Join(dir, "nope")}); err == nil {
		t.Fatal("resume from a missing path: no error")
	}
	if _, err := os.Stat(filepath.Join(dir, "step-00000003", "manifest.json")); err != nil {
		t.Fatalf("final checkpoint not written: %v", err)
	}
}
