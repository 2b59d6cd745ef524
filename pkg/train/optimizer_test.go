package train

import (
	"context"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/spec"
)

// optimizerJob is examples/optimizers/NAME.yaml, shrunk to a few steps of two
// sequences, with the cache in a temp dir. Each optimizer's periodic
// machinery is made to turn within those steps: GaLore and APOLLO refresh
// their projections every 2 steps and MicroAdam's window wraps after 2, so a
// resume lands between refreshes and in a wrapped window.
func optimizerJob(t *testing.T, name string, steps int) *spec.TrainingJob {
	t.Helper()
	text, err := filepath.Abs("../../examples/tiny.txt")
	if err != nil {
		t.Fatal(err)
	}
	sets := []string{
		"data.path=" + text,
		"data.cacheDir=" + t.TempDir(),
		"steps=" + strconv.Itoa(steps),
		"batch.microBatchSize=2",
	}
	switch name {
	case "galore", "apollo", "apollo-mini":
		sets = append(sets, "optimizer."+name+".updateProjGap=2")
	case "microadam":
		sets = append(sets, "optimizer.microadam.window=2")
	}
	job, err := spec.Load(filepath.Join("../../examples/optimizers", name+".yaml"), sets)
	if err != nil {
		t.Fatal(err)
	}
	if job.Spec.Optimizer.Name != name {
		t.Fatalf("examples/optimizers/%s.yaml trains %s", name, job.Spec.Optimizer.Name)
	}
	return job
}

// TestEveryOptimizerResumesBitwise trains every optimizer the spec accepts
// for a few steps, uninterrupted and stopped-then-resumed from a checkpoint,
// and requires the losses and weights to agree bit for bit: the optimizer's
// whole state (moments, projections, windows, step counters, seeds) must
// travel through the checkpoint. A run on one core must agree as well.
func TestEveryOptimizerResumesBitwise(t *testing.T) {
	// About 1 s, 10 s under the race detector: cheap enough to run in both
	// passes of make test, and the race pass then covers each optimizer
	// inside the loop.
	const steps, stopAt = 6, 3
	for _, name := range spec.OptimizerNames {
		t.Run(name, func(t *testing.T) {
			full, wFull, sum := run(t, optimizerJob(t, name, steps), Options{})
			if sum.Optimizer != name || sum.OptimizerStateBytes <= 0 || sum.OptimizerStateBytes != sum.Memory.Optimizer {
				t.Fatalf("summary: optimizer %q, state %d bytes, memory.optimizer %d", sum.Optimizer, sum.OptimizerStateBytes, sum.Memory.Optimizer)
			}

			dir := t.TempDir()
			r, err := newRunner(context.Background(), optimizerJob(t, name, steps), Options{CheckpointDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			stop := &stopAfter{n: stopAt, cancel: cancel}
			if s, err := r.loop(ctx, stop); err != nil || !s.Stopped || s.Checkpoint == "" {
				t.Fatalf("interrupted run: %+v, %v", s, err)
			}
			rest, wRest, _ := run(t, optimizerJob(t, name, steps), Options{Resume: dir})
			sameRun(t, name+": resumed vs uninterrupted", full, append(append([]float64(nil), stop.losses...), rest...), wFull, wRest)

			prev := runtime.GOMAXPROCS(1)
			one, wOne, _ := run(t, optimizerJob(t, name, steps), Options{})
			runtime.GOMAXPROCS(prev)
			sameRun(t, name+": GOMAXPROCS=1 vs default", full, one, wFull, wOne)
		})
	}
}

// TestOptimizerExamplesCoverEveryName keeps examples/optimizers in step with
// the names the spec accepts.
func TestOptimizerExamplesCoverEveryName(t *testing.T) {
	files, err := filepath.Glob("../../examples/optimizers/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range files {
		have[strings.TrimSuffix(filepath.Base(f), ".yaml")] = true
	}
	for _, name := range spec.OptimizerNames {
		if !have[name] {
			t.Errorf("examples/optimizers/%s.yaml is missing", name)
		}
		delete(have, name)
	}
	for name := range have {
		t.Errorf("examples/optimizers/%s.yaml names no supported optimizer", name)
	}
}

// TestOptimizerReports checks that every step report and the run info carry
// the optimizer's name and exact state size.
func TestOptimizerReports(t *testing.T) {
	job := optimizerJob(t, "galore", 2)
	r, err := newRunner(context.Background(), job, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := r.opt.StateBytes()
	rec := &infoRecorder{}
	if _, err := r.loop(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if rec.info.Optimizer != "galore" || rec.info.OptimizerStateBytes != want {
		t.Fatalf("run info: optimizer %q, state %d bytes; want galore, %d", rec.info.Optimizer, rec.info.OptimizerStateBytes, want)
	}
	if len(rec.steps) != 2 {
		t.Fatalf("%d step reports, want 2", len(rec.steps))
	}
	for _, s := range rec.steps {
		if s.OptimizerStateBytes != want {
			t.Errorf("step %d reports %d optimizer bytes, want %d", s.Step, s.OptimizerStateBytes, want)
		}
	}
}

type infoRecorder struct {
	info  RunInfo
	steps []StepReport
}

func (r *infoRecorder) Started(i RunInfo) { r.info = i }
func (r *infoRecorder) Step(s StepReport) { r.steps = append(r.steps, s) }
func (r *infoRecorder) Log(string)        {}
