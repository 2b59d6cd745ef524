package train

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/hf"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/safetensors"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
)

// startRanks builds every rank of job resuming from resume, connected by the
// in-memory transport; the ranks build concurrently, as their pipeline
// groups connect while they build. stop closes the transports.
func startRanks(t *testing.T, job *spec.TrainingJob, resume string) (rs []*runner, errs []error, stop func()) {
	t.Helper()
	n := job.Spec.Parallel.Data * job.Spec.Parallel.Pipeline
	if n == 1 {
		r, err := newRunner(context.Background(), job, Options{Resume: resume, CheckpointDir: t.TempDir()})
		return []*runner{r}, []error{err}, func() {}
	}
	trs, err := comm.NewMemNetwork(n, comm.MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs, errs = make([]*runner, n), make([]error, n)
	ckptDir := t.TempDir() // shared: rank 0 commits what every stage wrote
	var wg sync.WaitGroup
	for rank := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs[rank], errs[rank] = newRunner(context.Background(), job, Options{Resume: resume, CheckpointDir: ckptDir, Group: comm.NewGroup(trs[rank])})
		}()
	}
	wg.Wait()
	return rs, errs, func() {
		for _, tr := range trs {
			tr.Close()
		}
	}
}

// loopRanks runs every rank's loop to the end and returns rank 0's losses.
func loopRanks(t *testing.T, rs []*runner) []float64 {
	t.Helper()
	recs := make([]*recorder, len(rs))
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		recs[i] = &recorder{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.loop(context.Background(), recs[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
	}
	return recs[0].losses
}

// gatherParams joins the ranks' parameters (replica 0's stages) into whole,
// unpadded tensors by name, with hf.Gather.
func gatherParams(t *testing.T, rs []*runner) map[string][]float32 {
	t.Helper()
	var ts []snapshot.Tensor
	for _, r := range rs {
		if r.dp != nil && r.dp.rank != 0 {
			continue
		}
		for _, p := range r.params {
			ts = append(ts, snapshot.Tensor{Tensor: safetensors.F32(p.Name, p.Shape, p.W), GlobalShape: p.GlobalShape, RowLo: p.RowOffset, RowHi: p.RowOffset + p.Shape[0]})
		}
	}
	return wholeByName(t, ts, rs[0].cfg.Vocab)
}

func wholeByName(t *testing.T, ts []snapshot.Tensor, vocab int) map[string][]float32 {
	t.Helper()
	cfgJob := tinyJob(t, 1)
	cfg, err := cfgJob.Spec.Model.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Vocab != vocab {
		t.Fatalf("vocab %d, want %d", cfg.Vocab, vocab)
	}
	whole, err := hf.Gather(ts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, w := range whole {
		v, err := w.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		out[w.Name] = v
	}
	return out
}

func sameBits(t *testing.T, what string, a, b map[string][]float32) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d tensors vs %d", what, len(a), len(b))
	}
	for name, va := range a {
		vb, ok := b[name]
		if !ok || len(va) != len(vb) {
			t.Fatalf("%s: %s has %d values vs %d", what, name, len(va), len(vb))
		}
		for i := range va {
			if math.Float32bits(va[i]) != math.Float32bits(vb[i]) {
				t.Fatalf("%s: %s[%d] = %v vs %v", what, name, i, va[i], vb[i])
			}
		}
	}
}

// singleRankCheckpoint rewrites the DP=2 × PP=2 AdamW checkpoint at stepDir
// as the checkpoint a one-process job with the same global batch would have
// written: whole parameters, and each stage's optimizer rows concatenated in
// stage order (vocabulary parallelism gives stage pp rows
// [pp·V/2, (pp+1)·V/2) of the embedding and head). It is written here
// without the resharding code, as the reference.
func singleRankCheckpoint(t *testing.T, stepDir string, job *spec.TrainingJob) string {
	t.Helper()
	st, err := snapshot.Load(stepDir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := snapshot.ReadManifest(stepDir)
	if err != nil {
		t.Fatal(err)
	}
	var params []snapshot.Tensor
	state := map[string][][]float32{} // optimizer name -> per-stage values
	shapes := map[string][]int{}
	for _, tn := range st.Tensors {
		rest, isState := strings.CutPrefix(tn.Name, "stage.")
		if !isState {
			params = append(params, tn)
			continue
		}
		var pp int
		if _, err := fmt.Sscanf(rest, "%d.", &pp); err != nil {
			t.Fatalf("%s: %v", tn.Name, err)
		}
		name := rest[strings.IndexByte(rest, '.')+1:]
		v, err := tn.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		for len(state[name]) <= pp {
			state[name] = append(state[name], nil)
		}
		state[name][pp] = v
		shapes[name] = tn.Shape
	}
	for _, te := range m.Tensors {
		if te.Name == "model.embed_tokens.weight" || te.Name == hf.HeadName {
			pp := slices.Index([]string{snapshot.RankFile(0), snapshot.RankFile(1)}, te.File)
			if te.Rows[0] != pp*te.GlobalShape[0]/2 {
				t.Fatalf("%s in %s holds rows %v, not stage %d's half", te.Name, te.File, te.Rows, pp)
			}
		}
	}
	whole := wholeByName(t, params, 256)
	out := &snapshot.State{Step: st.Step, Job: st.Job, Spec: job.CanonicalJSON(), Cursor: st.Cursor, RNG: st.RNG}
	for name, v := range whole {
		out.Tensors = append(out.Tensors, snapshot.Whole(safetensors.F32(name, shapeOf(t, job, name), v)))
	}
	for name, perStage := range state {
		var v []float32
		shape := slices.Clone(shapes[name])
		for _, s := range perStage {
			v = append(v, s...) // a stage without this tensor adds nothing
		}
		if name == "optim.adamw.step" {
			v = perStage[0]
		} else if len(shape) > 0 {
			shape[0] = len(v) / numel(shape[1:])
		}
		out.Tensors = append(out.Tensors, snapshot.Whole(safetensors.F32(name, shape, v)))
	}
	dir := t.TempDir()
	if _, err := snapshot.Save(dir, out, 0); err != nil {
		t.Fatal(err)
	}
	return snapshot.StepDir(dir, st.Step)
}

func numel(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

func shapeOf(t *testing.T, job *spec.TrainingJob, name string) []int {
	t.Helper()
	cfg, err := job.Spec.Model.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range hf.Shapes(cfg) {
		if s.Name == name {
			return s.Shape
		}
	}
	t.Fatalf("no parameter %s", name)
	return nil
}

func stateMap(ts []optim.NamedTensor) map[string][]float32 {
	out := map[string][]float32{}
	for _, t := range ts {
		out[t.Name] = t.Data
	}
	return out
}

// A checkpoint of DP=2 × PP=2 resumes on one process and on PP=2 with the
// other vocabulary split: the weights are the originals bit for bit; on one
// process the optimizer state and the next step's loss are exactly those of
// a one-process resume from the same checkpoint rewritten as one file by
// hand; and the next loss matches the run that kept its layout within
// 1e-4 relative: gradients are summed over microbatches and replicas in
// another order, so float32 rounding differs (about 1e-6 relative per step).
// The one-file checkpoint resumed on DP=2 × PP=2 gives every rank the
// original weights and optimizer state, and the uninterrupted run's next
// loss, bit for bit.
func TestReshardResume(t *testing.T) {
	const at, steps = 2, 3
	dir := t.TempDir()
	src := tinyJob(t, steps, "parallel.data=2", "parallel.pipeline=2", "checkpoint.everySteps=2")
	full := runReplicas(t, src, Options{CheckpointDir: dir})
	ckpt := snapshotDir(dir, at)
	ref, err := snapshot.Load(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	var refParams []snapshot.Tensor
	for _, tn := range ref.Tensors {
		if hf.IsParam(tn.Name) {
			refParams = append(refParams, tn)
		}
	}
	want := wholeByName(t, refParams, 256)
	keptLayout := full[0].losses[at]

	one := tinyJob(t, steps, "batch.microBatches=2")
	rs, errs, stop := startRanks(t, one, ckpt)
	defer stop()
	if errs[0] != nil {
		t.Fatal(errs[0])
	}
	sameBits(t, "DP=1 PP=1 resumed weights", gatherParams(t, rs), want)
	if rs[0].step != at {
		t.Fatalf("resumed at step %d, want %d", rs[0].step, at)
	}

	byHand := singleRankCheckpoint(t, ckpt, one)
	bs, berrs, bstop := startRanks(t, one, byHand)
	defer bstop()
	if berrs[0] != nil {
		t.Fatal(berrs[0])
	}
	sameBits(t, "optimizer state resharded vs rewritten by hand", stateMap(rs[0].opt.State()), stateMap(bs[0].opt.State()))
	la, lb := loopRanks(t, rs), loopRanks(t, bs)
	if len(la) != 1 || len(lb) != 1 || math.Float64bits(la[0]) != math.Float64bits(lb[0]) {
		t.Fatalf("next loss resharded %v, from the one-file checkpoint %v: want bitwise equal", la, lb)
	}
	if d := math.Abs(la[0]-keptLayout) / keptLayout; d > 1e-4 {
		t.Fatalf("next loss on DP=1 PP=1 %v, on the checkpoint's layout %v (relative %.2g > 1e-4)", la[0], keptLayout, d)
	}

	// Back from one file to DP=2 × PP=2: every rank holds the checkpoint's
	// weights and its stage's optimizer state bit for bit, as written.
	refState := map[string][]float32{}
	for _, tn := range ref.Tensors {
		if !hf.IsParam(tn.Name) {
			v, err := tn.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			refState[tn.Name] = v
		}
	}
	us, uerrs, ustop := startRanks(t, src, byHand)
	defer ustop()
	for i, err := range uerrs {
		if err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
	}
	sameBits(t, "DP=2 PP=2 resumed from one file, weights", gatherParams(t, us), want)
	for i, r := range us {
		got := map[string][]float32{}
		for name, v := range stateMap(r.opt.State()) {
			got[stagePrefix(r.dp.pp)+name] = v
		}
		mine := map[string][]float32{}
		for name, v := range refState {
			if strings.HasPrefix(name, stagePrefix(r.dp.pp)) {
				mine[name] = v
			}
		}
		sameBits(t, fmt.Sprintf("rank %d (stage %d) optimizer state after the round trip", i, r.dp.pp), got, mine)
	}
	// Same state, same layout: the run that never stopped, bit for bit.
	if lu := loopRanks(t, us); len(lu) != 1 || math.Float64bits(lu[0]) != math.Float64bits(keptLayout) {
		t.Fatalf("next loss on DP=2 PP=2 from one file %v, the uninterrupted run's %v: want bitwise equal", lu, keptLayout)
	}

	// PP=2 with the embedding whole on stage 0 and the head on stage 1.
	other := tinyJob(t, steps, "batch.microBatches=2", "parallel.pipeline=2", "parallel.vocabParallel=false")
	ps, perrs, pstop := startRanks(t, other, ckpt)
	defer pstop()
	for i, err := range perrs {
		if err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
	}
	sameBits(t, "DP=1 PP=2 (no vocabulary parallelism) resumed weights", gatherParams(t, ps), want)
	lp := loopRanks(t, ps)
	if d := math.Abs(lp[0]-la[0]) / la[0]; len(lp) != 1 || d > 1e-4 {
		t.Fatalf("next loss on PP=2 %v, on one process %v (relative %.2g > 1e-4)", lp, la, d)
	}
}

// DeMo's momentum residuals differ between replicas; on another replica
// count every replica starts from their mean, a layer's (held whole) and a
// vocabulary tensor's (split over the stages) alike.
func TestReshardDemoAveragesReplicas(t *testing.T) {
	dir := t.TempDir()
	sets := []string{"optimizer.name=demo", "optimizer.lr=3e-3"}
	runReplicas(t, tinyJob(t, 2, append(sets, "parallel.data=2", "parallel.pipeline=2", "checkpoint.everySteps=2")...), Options{CheckpointDir: dir})
	ckpt := snapshotDir(dir, 2)
	st, err := snapshot.Load(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	old := map[string][]float32{}
	for _, tn := range st.Tensors {
		v, err := tn.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		old[tn.Name] = v
	}
	rs, errs, stop := startRanks(t, tinyJob(t, 3, append(sets, "batch.microBatches=2")...), ckpt)
	defer stop()
	if errs[0] != nil {
		t.Fatal(errs[0])
	}
	got := stateMap(rs[0].opt.State())
	checked := 0
	for _, name := range []string{"optim.model.layers.0.mlp.up_proj.weight.demo_delta", "optim.model.embed_tokens.weight.demo_delta"} {
		var want []float32
		for pp := range 2 {
			a, ok := old[fmt.Sprintf("replica.0.stage.%d.%s", pp, name)]
			b := old[fmt.Sprintf("replica.1.stage.%d.%s", pp, name)]
			if !ok {
				continue
			}
			if slices.Equal(a, b) && strings.Contains(name, "layers") {
				t.Fatalf("%s: the replicas' residuals are equal, so averaging is not tested", name)
			}
			for i := range a {
				want = append(want, (a[i]+b[i])/2)
			}
		}
		if len(want) == 0 || !slices.Equal(got[name], want) {
			t.Fatalf("%s: resumed %d values, want the replicas' mean (%d values)", name, len(got[name]), len(want))
		}
		checked++
	}
	if checked != 2 {
		t.Fatal("not every residual checked")
	}
}

// What cannot be resharded exactly is refused at resume, naming both
// layouts and what to do.
func TestReshardRefuses(t *testing.T) {
	for _, c := range []struct {
		name     string
		sets     []string // the checkpoint's job, beyond DP=2 × PP=2
		resume   []string // the resuming job
		contains []string
	}{
		{"global batch changes", nil, nil, []string{"global batch changes from 2 to 1", "batch.microBatches=2"}},
		{"block second moments of a split vocabulary", []string{"optimizer.name=adam-mini"}, []string{"optimizer.name=adam-mini", "batch.microBatches=2"},
			[]string{"optimizer adam-mini", "exp_avg_sq_block", "parallel.pipeline=2 and parallel.vocabParallel=true"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			runReplicas(t, tinyJob(t, 1, append(c.sets, "parallel.data=2", "parallel.pipeline=2", "checkpoint.everySteps=1")...), Options{CheckpointDir: dir})
			_, err := newRunner(context.Background(), tinyJob(t, 2, c.resume...), Options{Resume: filepath.Join(dir), CheckpointDir: t.TempDir()})
			if err == nil {
				t.Fatal("resumed, want a refusal")
			}
			t.Log(err)
			for _, s := range append(c.contains, "parallel.data=2, parallel.pipeline=2, parallel.vocabParallel=true", "this job's (parallel.data=1, parallel.pipeline=1") {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %q", err, s)
				}
			}
		})
	}
}

// Every optimizer either resumes a DP=2 × PP=2 checkpoint on one process,
// with the weights exact, or refuses with an error naming itself and both
// layouts; never a panic or a silent fresh state.
func TestReshardEveryOptimizer(t *testing.T) {
	for _, name := range spec.OptimizerNames {
		if name == "adamw" || name == "demo" {
			continue // the tests above resume these in more depth
		}
		t.Run(name, func(t *testing.T) {
			sets := []string{"optimizer.name=" + name}
			if name == "adafactor" || name == "came" {
				sets = append(sets, "parallel.vocabParallel=false") // they need whole vocabulary tensors
			}
			dir := t.TempDir()
			runReplicas(t, tinyJob(t, 1, append(sets, "parallel.data=2", "parallel.pipeline=2", "checkpoint.everySteps=1")...), Options{CheckpointDir: dir})
			ckpt := snapshotDir(dir, 1)
			rs, errs, stop := startRanks(t, tinyJob(t, 2, append(sets, "batch.microBatches=2")...), ckpt)
			defer stop()
			if err := errs[0]; err != nil {
				for _, s := range []string{"optimizer " + name, "checkpoint layout (parallel.data=2, parallel.pipeline=2", "this job's (parallel.data=1, parallel.pipeline=1"} {
					if !strings.Contains(err.Error(), s) {
						t.Fatalf("refusal %q does not name %q", err, s)
					}
				}
				t.Logf("refused: %v", err)
				return
			}
			st, err := snapshot.Load(ckpt)
			if err != nil {
				t.Fatal(err)
			}
			var params []snapshot.Tensor
			for _, tn := range st.Tensors {
				if hf.IsParam(tn.Name) {
					params = append(params, tn)
				}
			}
			sameBits(t, "resumed weights", gatherParams(t, rs), wholeByName(t, params, 256))
			if l := loopRanks(t, rs); len(l) != 1 || math.IsNaN(l[0]) {
				t.Fatalf("next loss %v", l)
			}
			t.Logf("resumed")
		})
	}
}
