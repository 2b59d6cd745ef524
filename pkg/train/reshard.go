package train

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/ternml/tern/pkg/data"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/safetensors"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
)

// Resuming on another layout.
//
// A checkpoint names every parameter by its Hugging Face name with its
// global shape and the rows each file holds, so a job with another
// data-parallel × pipeline layout can rebuild its own shards from it: each
// rank reads the rows it holds from whichever old stage files hold them
// (the vocabulary padding is the new layout's: rows past the true
// vocabulary keep the new layout's initial values). What moves:
//
//   - Weights: bit for bit. Replicas hold identical weights and only
//     replica 0 wrote them.
//   - Optimizer state that is per element of a parameter (AdamW and
//     Adam-mini's exp_avg, exp_avg_sq; Adafactor and CAME unfactored;
//     DeMo's demo_delta) or per row (Adafactor and CAME's row factors):
//     joined and split by rows exactly as the weights.
//   - Any other state of a parameter (low-rank projections and their
//     moments in GaLore, APOLLO and GRASS, MicroAdam's windows, Adam-mini's
//     block moments, factored column moments): copied unchanged when the
//     new rank holds the parameter's rows exactly as one old stage did,
//     which is always so for transformer blocks (pipeline stages move whole
//     blocks). A vocabulary tensor split differently refuses the resume,
//     naming the optimizer and the tensor: such state describes the old
//     rows as a whole and no exact split of it exists.
//   - State that is no parameter's (step counters, seeds, layouts): taken
//     when every old stage read holds the same value, else refused.
//   - DeMo's per-replica momentum residual (demo_delta): with the same
//     number of replicas each keeps its own; with another number every new
//     replica starts from the mean of the old replicas' residuals. DeMo
//     applies the mean over replicas of what each extracts from its
//     momentum, so the mean residual is the untransmitted part of that
//     shared update; which replica's residual held which share is lost, and
//     no resume on another replica count can be bitwise in any case.
//   - The data cursor and the step (so the learning-rate schedule).
//
// The global batch (parallel.data × batch.microBatches sequences of
// batch.microBatchSize) must not change: the sampler numbers samples by
// step, replica and microbatch, so the same global batch gives the new
// layout the same samples at every step. The loss of a resumed step then
// equals the old layout's up to float32 summation order (gradients are
// summed over microbatches and replicas in a different order).

// layoutOf is a job's parallel layout as resuming compares it.
type layoutOf struct {
	data, pipeline, micro int
	vocabParallel         bool
}

func jobLayout(j *spec.TrainingJob) layoutOf {
	l := layoutOf{data: j.Spec.Parallel.Data, pipeline: j.Spec.Parallel.Pipeline, micro: j.Spec.Batch.MicroBatches, vocabParallel: j.Spec.Parallel.VocabParallel}
	// Checkpoints written before these fields existed ran one replica and
	// one stage.
	l.data, l.pipeline = max(l.data, 1), max(l.pipeline, 1)
	if l.pipeline == 1 {
		l.vocabParallel = false // one stage holds every row either way
	}
	return l
}

func (l layoutOf) String() string {
	s := fmt.Sprintf("parallel.data=%d, parallel.pipeline=%d", l.data, l.pipeline)
	if l.pipeline > 1 {
		s += fmt.Sprintf(", parallel.vocabParallel=%v", l.vocabParallel)
	}
	return s + fmt.Sprintf(", batch.microBatches=%d", l.micro)
}

// sameShards reports whether two layouts hold the same tensors on the same
// ranks, so a checkpoint resumes without resharding.
func (l layoutOf) sameShards(o layoutOf) bool {
	return l.data == o.data && l.pipeline == o.pipeline && l.vocabParallel == o.vocabParallel
}

// resumeOtherLayout resumes from a checkpoint written with another
// data-parallel × pipeline layout, resharding it for this rank. It returns
// false, and does nothing, when the checkpoint's layout is this job's.
func (r *runner) resumeOtherLayout(path string) (bool, error) {
	stepDir, err := snapshot.ResolveStep(path)
	if err != nil {
		return false, fmt.Errorf("resume: %w", err)
	}
	m, err := snapshot.ReadManifest(stepDir)
	if err != nil {
		return false, fmt.Errorf("resume: %w", err)
	}
	var old spec.TrainingJob
	if err := json.Unmarshal(m.Spec, &old); err != nil {
		return false, fmt.Errorf("resume from %s: checkpoint spec: %w", path, err)
	}
	from, to := jobLayout(&old), jobLayout(r.job)
	if from.sameShards(to) {
		return false, nil
	}
	if err := r.reshard(stepDir, m, &old, from, to); err != nil {
		return true, fmt.Errorf("resume from %s: checkpoint layout (%v) to this job's (%v): %w", path, from, to, err)
	}
	r.resumedFrom = path
	return true, nil
}

// oldStage is what one old pipeline stage's file held: the rows of each
// parameter.
type oldStage struct {
	file string
	rows map[string]snapshot.TensorEntry // parameter name -> its entry in this file
}

// overlaps reports whether rows [a, b) and [c, d) share a row.
func overlaps(a, b, c, d int) bool { return max(a, c) < min(b, d) }

func (r *runner) reshard(stepDir string, m *snapshot.Manifest, old *spec.TrainingJob, from, to layoutOf) error {
	if gb, ga := from.data*from.micro, to.data*to.micro; gb != ga {
		return fmt.Errorf("the global batch changes from %d to %d microbatches (parallel.data × batch.microBatches): set batch.microBatches=%d so every step draws the same samples, or start a new run",
			gb, ga, gb/to.data)
	}
	// Everything but the layout must match, as for any resume.
	norm := *old
	norm.Spec.Parallel = r.job.Spec.Parallel
	norm.Spec.Batch.MicroBatches = r.job.Spec.Batch.MicroBatches
	if err := compatible(norm.CanonicalJSON(), r.job); err != nil {
		return err
	}
	optName := r.job.Spec.Optimizer.Name
	oldPerReplica := optName == "demo" && from.data > 1

	// Which old file holds which stage: replica 0's stages are world ranks
	// 0..pipeline-1, each writing RankFile(rank).
	stages := make([]oldStage, from.pipeline)
	for pp := range stages {
		stages[pp] = oldStage{file: snapshot.RankFile(pp), rows: map[string]snapshot.TensorEntry{}}
	}
	fileStage := map[string]int{}
	for pp, s := range stages {
		fileStage[s.file] = pp
	}
	for _, te := range m.Tensors {
		pp, ok := fileStage[te.File]
		if !ok {
			return fmt.Errorf("%s: file %s is not one of the %d stage files a %d-stage checkpoint has", stepDir, te.File, from.pipeline, from.pipeline)
		}
		if isParamName(te.Name) {
			stages[pp].rows[te.Name] = te
		}
	}
	oldPrefix := func(replica, pp int) string {
		s := ""
		if oldPerReplica {
			s = replicaPrefix(replica)
		}
		if from.pipeline > 1 {
			s += stagePrefix(pp)
		}
		return s
	}
	myReplica := 0
	if r.dp != nil {
		myReplica = r.dp.rank
	}
	// The old replicas whose state this rank takes: its own when the
	// replica count is unchanged, else all of them (averaged).
	replicas := []int{0}
	if oldPerReplica {
		if from.data == to.data {
			replicas = []int{myReplica}
		} else {
			replicas = make([]int, from.data)
			for i := range replicas {
				replicas[i] = i
			}
		}
	}

	// The old stages this rank needs: those holding rows of its parameters.
	need := make([]bool, from.pipeline)
	for _, p := range r.params {
		lo, hi := p.RowOffset, p.RowOffset+p.Shape[0]
		found := false
		for pp, s := range stages {
			if te, ok := s.rows[p.Name]; ok {
				found = true
				if overlaps(te.Rows[0], te.Rows[1], lo, hi) {
					need[pp] = true
				}
			}
		}
		if !found {
			return fmt.Errorf("the checkpoint holds no parameter %s", p.Name)
		}
	}
	// Stage prefix → stage, for state names.
	wantState := map[string]int{}
	for pp := range stages {
		if !need[pp] {
			continue
		}
		for _, rep := range replicas {
			wantState[oldPrefix(rep, pp)] = pp
		}
	}
	stateOf := func(name string) (pre, rest string, pp int, ok bool) {
		for pre, pp := range wantState {
			if rest, ok := strings.CutPrefix(name, pre); ok && strings.HasPrefix(rest, "optim.") {
				return pre, rest, pp, true
			}
		}
		return "", "", 0, false
	}
	st, err := snapshot.LoadSelected(stepDir, func(te snapshot.TensorEntry) bool {
		if isParamName(te.Name) {
			return need[fileStage[te.File]]
		}
		_, _, pp, ok := stateOf(te.Name)
		return ok && stages[pp].file == te.File
	})
	if err != nil {
		return err
	}

	// Parameters, row by row.
	shards := map[string][]snapshot.Tensor{}
	state := map[string]snapshot.Tensor{} // full old name -> tensor
	for _, t := range st.Tensors {
		if isParamName(t.Name) {
			shards[t.Name] = append(shards[t.Name], t)
		} else {
			state[t.Name] = t
		}
	}
	for _, p := range r.params {
		lo, hi := p.RowOffset, p.RowOffset+p.Shape[0]
		valid, err := r.validRows(p.Name, p.GlobalShape, shards[p.Name])
		if err != nil {
			return err
		}
		if err := snapshot.AssembleRows(p.Name, shards[p.Name], p.GlobalShape[1:], lo, hi, valid, p.W); err != nil {
			return err
		}
	}

	// Optimizer state, tensor by tensor of what this rank's optimizer holds.
	live := r.opt.State()
	tiedParam := map[string]string{} // parameter -> a slot that cannot be split
	for _, t := range live {
		if pn, slot, ok := splitStateName(t.Name); ok && !splittable(slot) {
			tiedParam[pn] = slot
		}
	}
	byName := map[string]int{}
	for i, p := range r.params {
		byName[p.Name] = i
	}
	ost := make([]optim.NamedTensor, 0, len(live))
	for _, lt := range live {
		v := make([]float32, len(lt.Data))
		pn, slot, isParamState := splitStateName(lt.Name)
		pi, mine := byName[pn]
		if !isParamState || !mine {
			if err := r.sharedState(lt, v, stages, need, replicas, oldPrefix, state); err != nil {
				return err
			}
		} else if err := r.paramState(optName, r.params[pi], slot, tiedParam[pn], lt, v, stages, need, replicas, oldPrefix, state, from); err != nil {
			return err
		}
		ost = append(ost, optim.NamedTensor{Name: lt.Name, Shape: slices.Clone(lt.Shape), Data: v})
	}
	if err := r.opt.SetState(ost); err != nil {
		return err
	}

	var c data.Cursor
	if err := json.Unmarshal(m.Cursor, &c); err != nil {
		return fmt.Errorf("data cursor: %w", err)
	}
	step, err := r.sampler.Resume(c)
	if err != nil {
		return err
	}
	if step != m.Step {
		return fmt.Errorf("data cursor is at step %d but the checkpoint is step %d", step, m.Step)
	}
	if step > int64(r.steps) {
		return fmt.Errorf("checkpoint is at step %d, beyond spec.steps=%d", step, r.steps)
	}
	r.step = int(step)
	r.lastCkptStep = r.step
	return nil
}

// validRows is how many leading rows of parameter name are real in both
// layouts: its global first dimension, or, for a vocabulary tensor padded
// differently by the two layouts, the smaller padded size (both cover the
// true vocabulary; rows past it are padding no target names).
func (r *runner) validRows(name string, global []int, parts []snapshot.Tensor) (int, error) {
	valid := global[0]
	for _, s := range parts {
		g := s.GlobalShape
		if len(g) != len(global) || !slices.Equal(g[1:], global[1:]) {
			return 0, fmt.Errorf("parameter %s has global shape %v in the checkpoint, this job's model wants %v", name, g, global)
		}
		if g[0] != global[0] {
			if min(g[0], global[0]) < r.cfg.Vocab {
				return 0, fmt.Errorf("parameter %s has global shape %v in the checkpoint, this job's model wants %v", name, g, global)
			}
			valid = min(valid, g[0])
		}
	}
	return valid, nil
}

// isParamName reports whether a checkpoint tensor is a parameter (and not
// optimizer state under optim., stage.<pp>. or replica.<r>.).
func isParamName(name string) bool {
	return !strings.HasPrefix(name, "optim.") && !strings.HasPrefix(name, "stage.") && !strings.HasPrefix(name, "replica.")
}

// splitStateName splits optim.<parameter>.<slot>; ok is false for state
// that is no parameter's (optim.adamw.step).
func splitStateName(name string) (param, slot string, ok bool) {
	rest, ok := strings.CutPrefix(name, "optim.")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, '.')
	if i <= 0 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}

// elementSlots are optimizer state slots holding one value per element of
// their parameter; rowSlots, one per row (Adafactor's and CAME's row
// factors: row i's EMA depends on row i's gradient alone, Shazeer & Stern
// 2018, Alg. 4). Both split by rows exactly; every other slot is tied to
// the rows its parameter's shard held.
var (
	elementSlots = map[string]bool{"exp_avg": true, "exp_avg_sq": true, "demo_delta": true}
	rowSlots     = map[string]bool{"exp_avg_sq_row": true, "exp_avg_res_row": true}
)

func splittable(slot string) bool { return elementSlots[slot] || rowSlots[slot] }

// oldPart returns the values and shape of the old state tensor full(rep),
// averaged over replicas when there are several: DeMo's residuals on another
// replica count, see the comment at the top of this file.
func oldPart(full func(rep int) string, replicas []int, state map[string]snapshot.Tensor) ([]float32, []int, error) {
	var sum []float32
	var shape []int
	for _, rep := range replicas {
		t, ok := state[full(rep)]
		if !ok {
			return nil, nil, fmt.Errorf("the checkpoint has no optimizer state %s", full(rep))
		}
		v, err := t.Float32s()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", full(rep), err)
		}
		if sum == nil {
			sum, shape = slices.Clone(v), t.Shape
			continue
		}
		if !slices.Equal(t.Shape, shape) {
			return nil, nil, fmt.Errorf("optimizer state %s has shape %v, replica %d's %v", full(rep), t.Shape, replicas[0], shape)
		}
		for i, x := range v {
			sum[i] += x
		}
	}
	if len(replicas) > 1 {
		n := float32(len(replicas))
		for i := range sum {
			sum[i] /= n
		}
	}
	return sum, shape, nil
}

// paramState fills v with the new rank's value of the state tensor lt of
// parameter p.
func (r *runner) paramState(optName string, p *model.Param, slot, tiedSlot string, lt optim.NamedTensor, v []float32,
	stages []oldStage, need []bool, replicas []int, prefix func(rep, pp int) string, state map[string]snapshot.Tensor, from layoutOf) error {
	pname, global := p.Name, p.GlobalShape
	lo, hi := p.RowOffset, p.RowOffset+p.Shape[0]
	var parts []snapshot.Tensor
	exact := -1 // the old stage holding exactly this rank's rows, if any
	for pp, s := range stages {
		te, ok := s.rows[pname]
		if !ok || !need[pp] || !overlaps(te.Rows[0], te.Rows[1], lo, hi) {
			continue
		}
		if te.Rows[0] == lo && te.Rows[1] == hi && slices.Equal(te.GlobalShape, global) {
			exact = pp
		}
		vals, shape, err := oldPart(func(rep int) string { return prefix(rep, pp) + lt.Name }, replicas, state)
		if err != nil {
			return err
		}
		parts = append(parts, snapshot.Tensor{Tensor: safetensors.F32(lt.Name, shape, vals), GlobalShape: te.GlobalShape, RowLo: te.Rows[0], RowHi: te.Rows[1]})
	}
	if exact >= 0 && len(parts) == 1 {
		t := parts[0]
		if !slices.Equal(t.Shape, lt.Shape) {
			return fmt.Errorf("optimizer %s: state %s has shape %v in the checkpoint, this job's optimizer holds %v", optName, lt.Name, t.Shape, lt.Shape)
		}
		vals, _ := t.Float32s()
		copy(v, vals)
		return nil
	}
	if tiedSlot != "" || !splittable(slot) {
		if tiedSlot == "" {
			tiedSlot = slot
		}
		return fmt.Errorf("optimizer %s keeps state %s of %s (rows [%d, %d) of %v in this job) tied to the rows each stage held when the checkpoint was written, and it has no exact split into other rows: resume with the checkpoint's parallel.pipeline=%d and parallel.vocabParallel=%v (parallel.data may change), or continue with an optimizer whose state is per element such as adamw in a new run",
			optName, tiedSlot, pname, lo, hi, global, from.pipeline, from.vocabParallel)
	}
	tail := []int{}
	if elementSlots[slot] {
		tail = global[1:]
		if !slices.Equal(lt.Shape, p.Shape) {
			return fmt.Errorf("optimizer %s: state %s has shape %v, not its parameter's %v", optName, lt.Name, lt.Shape, p.Shape)
		}
	} else if len(lt.Shape) != 1 || lt.Shape[0] != p.Shape[0] {
		return fmt.Errorf("optimizer %s: row state %s has shape %v, want [%d]", optName, lt.Name, lt.Shape, p.Shape[0])
	}
	for i := range parts {
		parts[i].GlobalShape = append([]int{parts[i].GlobalShape[0]}, tail...)
	}
	valid, err := r.validRows(lt.Name, append([]int{global[0]}, tail...), parts)
	if err != nil {
		return err
	}
	clear(v) // padded rows of this layout start with no history
	return snapshot.AssembleRows(lt.Name, parts, tail, lo, hi, valid, v)
}

// sharedState fills v with state that is no parameter's (a step counter, a
// seed): every old stage this rank read must hold the same value.
func (r *runner) sharedState(lt optim.NamedTensor, v []float32, stages []oldStage, need []bool, replicas []int,
	prefix func(rep, pp int) string, state map[string]snapshot.Tensor) error {
	var first []float32
	firstName := ""
	for pp := range stages {
		if !need[pp] {
			continue
		}
		for _, rep := range replicas {
			name := prefix(rep, pp) + lt.Name
			t, ok := state[name]
			if !ok {
				return fmt.Errorf("optimizer %s: the checkpoint has no state %s", r.job.Spec.Optimizer.Name, name)
			}
			vals, err := t.Float32s()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if !slices.Equal(t.Shape, lt.Shape) {
				return fmt.Errorf("optimizer %s: state %s has shape %v in the checkpoint, this job's optimizer holds %v; its layout depends on the parameters a rank holds, so resume with the checkpoint's parallel layout",
					r.job.Spec.Optimizer.Name, name, t.Shape, lt.Shape)
			}
			if first == nil {
				first, firstName = vals, name
			} else if !slices.Equal(first, vals) {
				return fmt.Errorf("optimizer %s: state %s differs between %s and %s, so no rank of another layout can take it: resume with the checkpoint's parallel layout",
					r.job.Spec.Optimizer.Name, lt.Name, firstName, name)
			}
		}
	}
	if first == nil {
		return fmt.Errorf("optimizer %s: the checkpoint holds no state %s for this rank's stages", r.job.Spec.Optimizer.Name, lt.Name)
	}
	copy(v, first)
	return nil
}
