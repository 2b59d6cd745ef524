package train

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
)

// A pipeline job checkpointed at step 3 of 6 and resumed from there ends
// with the same losses and weights, bit for bit, as the run that never
// stopped; its checkpoint holds one file per stage of replica 0, and the
// stages' rows of the vocabulary tensors together cover the padded
// vocabulary.
func TestPipelineCheckpointResume(t *testing.T) {
	const steps, at = 6, 3
	for _, c := range []struct {
		name string
		sets []string
		long bool // left out of -short runs: the others cover its paths
	}{
		{"pp2-vp", []string{"parallel.pipeline=2"}, false},
		{"pp2-naive", []string{"parallel.pipeline=2", "parallel.vocabParallel=false"}, true},
		{"dp2-pp2", []string{"parallel.pipeline=2", "parallel.data=2"}, true},
		{"dp2-pp2-demo", []string{"parallel.pipeline=2", "parallel.data=2", "optimizer.name=demo", "optimizer.lr=3e-3"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.long && testing.Short() {
				t.Skip("-short: the race detector makes each pipeline run slow; the full pass runs this layout")
			}
			sets := append([]string{"batch.microBatches=2"}, c.sets...)
			dir := t.TempDir()
			// checkpoint.dir in the spec: validation accepts it for
			// pipeline jobs. This run goes through to the end, so it is
			// the uninterrupted reference.
			job := tinyJob(t, steps, append(sets, "checkpoint.everySteps=3", "checkpoint.dir="+dir)...)
			full := runReplicas(t, job, Options{})
			for rank := range full {
				if want := snapshot.StepDir(dir, steps); full[rank].sum.Checkpoint != want {
					t.Errorf("rank %d reports checkpoint %q, want %q", rank, full[rank].sum.Checkpoint, want)
				}
			}
			stages := job.Spec.Parallel.Pipeline
			vocab := 0
			for _, p := range full[0].params {
				if p.Name == "model.embed_tokens.weight" {
					vocab = p.GlobalShape[0] // padded to a multiple of the stages
				}
			}
			if vocab%stages != 0 {
				t.Fatalf("stage 0's embedding has global shape of %d rows, not a multiple of %d stages", vocab, stages)
			}
			checkStageFiles(t, snapshotDir(dir, at), stages, vocab)

			// The resumed run checkpoints elsewhere: dir already holds its
			// final step, and a complete step is never overwritten.
			again := t.TempDir()
			resumed := runReplicas(t, job, Options{Resume: snapshotDir(dir, at), CheckpointDir: again})
			for rank := range resumed {
				sameRun(t, "resumed rank "+strconv.Itoa(rank), resumed[rank].losses, full[rank].losses[at:], resumed[rank].weights, full[rank].weights)
			}
			// Its final checkpoint holds the same bytes, optimizer state
			// included.
			for pp := range stages {
				a, err := os.ReadFile(filepath.Join(snapshotDir(dir, steps), snapshot.RankFile(pp)))
				if err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(filepath.Join(snapshotDir(again, steps), snapshot.RankFile(pp)))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(a, b) {
					t.Errorf("stage %d's file at step %d differs between the uninterrupted and the resumed run", pp, steps)
				}
			}
		})
	}
}

// checkStageFiles checks the manifest of a pipeline checkpoint: one file per
// stage of replica 0 (world ranks 0..stages-1), every stage's optimizer
// state under its own prefix, and the embedding and head rows of all stages
// covering [0, vocab) exactly once.
func checkStageFiles(t *testing.T, stepDir string, stages, vocab int) {
	t.Helper()
	m, err := snapshot.ReadManifest(stepDir)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, f := range m.Files {
		files = append(files, f.Name)
	}
	var want []string
	for pp := range stages {
		want = append(want, snapshot.RankFile(pp))
	}
	if !slices.Equal(files, want) {
		t.Fatalf("manifest lists files %v, want %v", files, want)
	}
	rows := map[string][][2]int{}
	for _, te := range m.Tensors {
		if te.Name == "model.embed_tokens.weight" || te.Name == "lm_head.weight" {
			if te.GlobalShape[0] != vocab {
				t.Errorf("%s in %s: global shape %v, want %d rows", te.Name, te.File, te.GlobalShape, vocab)
			}
			rows[te.Name] = append(rows[te.Name], te.Rows)
		}
		if strings.HasPrefix(te.Name, "model.") || strings.HasPrefix(te.Name, "lm_head.") {
			continue
		}
		// Anything else is optimizer state, under the prefix of the stage
		// whose file holds it (after the replica's, for DeMo).
		stage := "stage." + strconv.Itoa(slices.Index(want, te.File)) + ".optim."
		if _, rest, ok := strings.Cut(te.Name, "."); strings.HasPrefix(te.Name, "replica.") && ok {
			if _, rest, ok = strings.Cut(rest, "."); ok && strings.HasPrefix(rest, stage) {
				continue
			}
		}
		if !strings.HasPrefix(te.Name, stage) {
			t.Errorf("%s in %s is not under the prefix %s", te.Name, te.File, stage)
		}
	}
	for _, name := range []string{"model.embed_tokens.weight", "lm_head.weight"} {
		rs := rows[name]
		slices.SortFunc(rs, func(a, b [2]int) int { return a[0] - b[0] })
		next := 0
		for _, r := range rs {
			if r[0] != next {
				t.Fatalf("%s: rows %v leave a gap or overlap at row %d", name, rs, next)
			}
			next = r[1]
		}
		if next != vocab {
			t.Fatalf("%s: rows %v end at %d, want the padded vocabulary %d", name, rs, next, vocab)
		}
	}
}

// Resuming needs the checkpoint's layout, and a stage whose file is gone
// says so instead of starting from fresh weights.
func TestPipelineResumeRejects(t *testing.T) {
	dir := t.TempDir()
	sets := []string{"parallel.pipeline=2", "checkpoint.everySteps=2"}
	runReplicas(t, tinyJob(t, 2, sets...), Options{CheckpointDir: dir})
	step := snapshotDir(dir, 2)

	// One process takes a two-stage checkpoint only with the same global
	// batch (reshard_test.go covers the resumes that are allowed).
	if _, err := newRunner(context.Background(), tinyJob(t, 4, "batch.microBatches=2"), Options{Resume: step}); err == nil || !strings.Contains(err.Error(), "global batch") {
		t.Fatalf("resume of a 2-stage checkpoint in one process with another global batch: %v, want an error naming the global batch", err)
	}
	// Stage 0 reads only its own file; stage 1 finds its file missing.
	if err := os.Remove(filepath.Join(step, snapshot.RankFile(1))); err != nil {
		t.Fatal(err)
	}
	trs, err := comm.NewMemNetwork(2, comm.MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer trs[0].Close()
	defer trs[1].Close()
	job := tinyJob(t, 4, sets...)
	if _, err := newRunner(context.Background(), job, Options{Resume: step, Group: comm.NewGroup(trs[0])}); err != nil {
		t.Fatalf("stage 0 with its file intact: %v", err)
	}
	_, err = newRunner(context.Background(), job, Options{Resume: step, Group: comm.NewGroup(trs[1])})
	if err == nil || !strings.Contains(err.Error(), snapshot.RankFile(1)) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("stage 1 without its file: %v, want an error naming %s as missing", err, snapshot.RankFile(1))
	}
}

// When one stage cannot write its file the step is not committed, and every
// rank, including those that wrote nothing, fails with the same error
// naming that stage.
func TestPipelineCheckpointStageFails(t *testing.T) {
	dir := t.TempDir()
	// A non-empty directory where stage 1's file goes: its rename fails.
	blocker := filepath.Join(snapshotDir(dir, 1), snapshot.RankFile(1), "x")
	if err := os.MkdirAll(blocker, 0o755); err != nil {
		t.Fatal(err)
	}
	job := tinyJob(t, 1, "parallel.pipeline=2", "parallel.data=2", "checkpoint.everySteps=1")
	trs, err := comm.NewMemNetwork(4, comm.MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, len(trs))
	var wg sync.WaitGroup
	for rank := range trs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer trs[rank].Close()
			r, err := newRunner(context.Background(), job, Options{CheckpointDir: dir, Group: comm.NewGroup(trs[rank])})
			if err == nil {
				_, err = r.loop(context.Background(), &recorder{})
			}
			errs[rank] = err
		}()
	}
	wg.Wait()
	t.Logf("rank 0: %v", errs[0])
	for rank, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "stage 1: write checkpoint shard") || !strings.Contains(err.Error(), "not committed") {
			t.Fatalf("rank %d: %v, want the commit refused because stage 1 failed", rank, err)
		}
		if err.Error() != errs[0].Error() {
			t.Errorf("rank %d's error differs from rank 0's:\n%v\n%v", rank, err, errs[0])
		}
	}
	if _, err := snapshot.Latest(dir); err == nil {
		t.Fatal("a step some stage failed to write is complete")
	}
}

// compatible compares the parallel layout: a checkpoint from before
// pipeline parallelism existed (no pipeline fields) is a one-stage layout,
// and with one stage the schedule and vocabulary settings do not matter;
// with two stages they do.
func TestCompatibleParallelLayout(t *testing.T) {
	withoutPipelineFields := func(job *spec.TrainingJob) json.RawMessage {
		var m map[string]any
		if err := json.Unmarshal(job.CanonicalJSON(), &m); err != nil {
			t.Fatal(err)
		}
		par := m["spec"].(map[string]any)["parallel"].(map[string]any)
		for _, k := range []string{"pipeline", "schedule", "vocabParallel", "vocabAlgorithm"} {
			delete(par, k)
		}
		b, _ := json.Marshal(m)
		return b
	}
	for _, c := range []struct {
		name   string
		saved  json.RawMessage
		job    *spec.TrainingJob
		wantOK bool
	}{
		{"pre-pipeline checkpoint, one stage", withoutPipelineFields(tinyJob(t, 3, "parallel.data=2")), tinyJob(t, 6, "parallel.data=2"), true},
		{"pre-pipeline checkpoint, two stages", withoutPipelineFields(tinyJob(t, 3)), tinyJob(t, 6, "parallel.pipeline=2"), false},
		{"one stage, other schedule", tinyJob(t, 3).CanonicalJSON(), tinyJob(t, 6, "parallel.schedule=gpipe"), true},
		{"two stages, other schedule", tinyJob(t, 3, "parallel.pipeline=2").CanonicalJSON(), tinyJob(t, 6, "parallel.pipeline=2", "parallel.schedule=gpipe"), false},
		{"two stages, other vocabulary layout", tinyJob(t, 3, "parallel.pipeline=2").CanonicalJSON(), tinyJob(t, 6, "parallel.pipeline=2", "parallel.vocabParallel=false"), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := compatible(c.saved, c.job)
			if c.wantOK && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !c.wantOK && (err == nil || !strings.Contains(err.Error(), "spec.parallel")) {
				t.Fatalf("got %v, want an error naming spec.parallel", err)
			}
		})
	}
}
