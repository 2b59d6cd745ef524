package train

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/ternml/tern/pkg/data"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/safetensors"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
)

// rngState is the RNG part of a checkpoint. Training has no stochastic ops
// beyond the seeded initialisation and the pure-function sampler, so the seed
// is the whole state; it is stored so a resume can check it.
type rngState struct {
	Seed uint64 `json:"seed"`
}

// checkpoint writes the current weights, optimizer state, data cursor and
// spec as step r.step, and every rank returns the same path or the same
// failure.
//
// Data-parallel replicas hold identical weights, so replica 0 writes:
// without pipeline parallelism it writes the whole step alone; with it,
// each of its stages writes its own file (the stage's parameters under
// their Hugging Face names with their row ranges, and its optimizer state
// under stage.<pp>.) and world rank 0 commits the manifest once every
// stage has written. Optimizer state that differs between replicas
// (DeMo's momentum) is gathered from the stage's replicas to replica 0
// and stored under replica.<r>. as well.
func (r *runner) checkpoint(ctx context.Context) (string, error) {
	if r.dp == nil {
		return r.writeCheckpoint()
	}
	// A replica cannot leave a collective alone: the checkpoint's exchanges
	// run to the end whatever happens to ctx.
	ctx = context.WithoutCancel(ctx)
	// A replica whose state cannot be decoded fails the write, not the
	// exchange: every rank still reaches the status gather.
	replicaState, bad, err := r.gatherReplicaState(ctx)
	if err != nil {
		return "", err
	}
	if r.pipe != nil {
		return r.checkpointStages(ctx, replicaState, bad)
	}
	status := []byte{}
	if r.dp.rank == 0 {
		if bad != nil {
			status = []byte(bad.Error())
		} else if _, err := r.writeCheckpointWith(replicaState); err != nil {
			status = []byte(err.Error())
		}
	}
	all, err := r.dp.world.AllGather(ctx, status)
	if err != nil {
		return "", fmt.Errorf("checkpoint step %d: %w", r.step, err)
	}
	if len(all[0]) > 0 {
		return "", fmt.Errorf("checkpoint step %d (written by replica 0): %s", r.step, all[0])
	}
	r.lastCkptStep = r.step
	return snapshot.StepDir(r.ckptDir, int64(r.step)), nil
}

// gatherReplicaState collects, on replica 0, the optimizer state of every
// replica of this rank's stage when those states differ (indexed by
// replica); nil when they do not. err is a failed exchange; bad, a state
// that arrived but does not decode.
func (r *runner) gatherReplicaState(ctx context.Context) (states [][]optim.NamedTensor, bad, err error) {
	if !r.perReplicaState() {
		return nil, nil, nil
	}
	all, err := r.dp.g.AllGather(ctx, encodeNamed(r.opt.State()))
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint step %d: gather optimizer state: %w", r.step, err)
	}
	if r.dp.rank != 0 {
		return nil, nil, nil
	}
	states = make([][]optim.NamedTensor, len(all))
	for rank, b := range all {
		if states[rank], bad = decodeNamed(b); bad != nil {
			return nil, fmt.Errorf("checkpoint step %d: optimizer state of replica %d: %w", r.step, rank, bad), nil
		}
	}
	return states, nil, nil
}

// shardReport is what each rank tells world rank 0 after its part of a
// pipeline checkpoint: the file it wrote, or why it could not. Ranks that
// write nothing (replicas other than 0) send an empty report.
type shardReport struct {
	Shard *snapshot.Shard `json:"shard,omitempty"`
	Err   string          `json:"err,omitempty"`
}

// checkpointStages writes a pipeline job's checkpoint: replica 0's stages
// each write their file, the reports are gathered over the world, world
// rank 0 writes the manifest, and a second gather tells every rank whether
// the step is committed.
func (r *runner) checkpointStages(ctx context.Context, replicaState [][]optim.NamedTensor, bad error) (string, error) {
	d := r.dp
	var rep shardReport
	if d.rank == 0 && bad != nil {
		rep.Err = bad.Error()
	} else if d.rank == 0 {
		sh, err := snapshot.WriteShard(r.ckptDir, int64(r.step), d.tr.Rank(), r.checkpointTensors(replicaState))
		if err != nil {
			rep.Err = err.Error()
		} else {
			rep.Shard = &sh
		}
	}
	mine, err := json.Marshal(&rep)
	if err != nil {
		return "", fmt.Errorf("checkpoint step %d: encode shard report: %w", r.step, err)
	}
	reports, err := d.world.AllGather(ctx, mine)
	if err != nil {
		return "", fmt.Errorf("checkpoint step %d: gather shard reports: %w", r.step, err)
	}
	status := []byte{}
	if d.tr.Rank() == 0 {
		if err := r.commitStages(reports[:d.stages]); err != nil {
			status = []byte(err.Error())
		}
	}
	all, err := d.world.AllGather(ctx, status)
	if err != nil {
		return "", fmt.Errorf("checkpoint step %d: %w", r.step, err)
	}
	if len(all[0]) > 0 {
		return "", fmt.Errorf("checkpoint step %d: %s", r.step, all[0])
	}
	r.lastCkptStep = r.step
	return snapshot.StepDir(r.ckptDir, int64(r.step)), nil
}

// commitStages writes the manifest from the reports of replica 0's stages
// (world ranks 0..stages-1, in stage order).
func (r *runner) commitStages(reports [][]byte) error {
	shards := make([]snapshot.Shard, len(reports))
	var failed []string
	for pp, b := range reports {
		var rep shardReport
		if err := json.Unmarshal(b, &rep); err != nil {
			return fmt.Errorf("stage %d's shard report is not valid: %w", pp, err)
		}
		switch {
		case rep.Err != "":
			failed = append(failed, fmt.Sprintf("stage %d: %s", pp, rep.Err))
		case rep.Shard == nil:
			failed = append(failed, fmt.Sprintf("stage %d reported no file", pp))
		default:
			shards[pp] = *rep.Shard
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("not every stage wrote its file, so the step is not committed: %s", strings.Join(failed, "; "))
	}
	st, err := r.checkpointHeader()
	if err != nil {
		return err
	}
	// Commit's errors name the step directory and what failed.
	_, err = snapshot.Commit(r.ckptDir, st, shards, r.job.Spec.Checkpoint.Keep)
	return err
}

func (r *runner) writeCheckpoint() (string, error) { return r.writeCheckpointWith(nil) }

// perReplicaState reports whether the replicas' optimizer states differ:
// DeMo keeps each replica's momentum residual to itself.
func (r *runner) perReplicaState() bool {
	_, demo := r.opt.(*optim.Demo)
	return demo && r.dp != nil && r.dp.size > 1
}

// replicaPrefix names replica rank's optimizer state in a checkpoint.
func replicaPrefix(rank int) string { return fmt.Sprintf("replica.%d.", rank) }

// stagePrefix names pipeline stage pp's optimizer state in a checkpoint:
// stages hold different parameters, and several hold rows of the same
// vocabulary tensors, whose state would otherwise share a name.
func stagePrefix(pp int) string { return fmt.Sprintf("stage.%d.", pp) }

// statePrefix is the prefix of replica's optimizer state for this rank's
// stage: replica.<r>. when replicas' states differ, then stage.<pp>. under
// pipeline parallelism; empty for one process.
func (r *runner) statePrefix(replica int) string {
	var s string
	if r.perReplicaState() {
		s = replicaPrefix(replica)
	}
	if r.pipe != nil {
		s += stagePrefix(r.dp.pp)
	}
	return s
}

// checkpointTensors is what this rank stores: its parameters under their
// Hugging Face names with the rows they hold, and its optimizer state
// (every replica's, when replicaState is set) under statePrefix.
func (r *runner) checkpointTensors(replicaState [][]optim.NamedTensor) []snapshot.Tensor {
	var ts []snapshot.Tensor
	for _, p := range r.params {
		t := safetensors.F32(p.Name, p.Shape, p.W)
		ts = append(ts, snapshot.Tensor{Tensor: t, GlobalShape: p.GlobalShape, RowLo: p.RowOffset, RowHi: p.RowOffset + p.Shape[0]})
	}
	states := replicaState
	if states == nil {
		states = [][]optim.NamedTensor{r.opt.State()}
	}
	for rank, st := range states {
		pre := r.statePrefix(rank)
		for _, o := range st {
			ts = append(ts, snapshot.Whole(safetensors.F32(pre+o.Name, o.Shape, o.Data)))
		}
	}
	return ts
}

// checkpointHeader is the manifest's part of the state: step, job, spec,
// data cursor and RNG.
func (r *runner) checkpointHeader() (*snapshot.State, error) {
	cursor, err := json.Marshal(r.sampler.Cursor(int64(r.step)))
	if err != nil {
		return nil, err
	}
	rng, err := json.Marshal(rngState{Seed: r.job.Spec.Seed})
	if err != nil {
		return nil, err
	}
	return &snapshot.State{
		Step: int64(r.step), Job: r.job.Metadata.Name, Spec: r.job.CanonicalJSON(),
		Cursor: cursor, RNG: rng,
	}, nil
}

// writeCheckpointWith writes the checkpoint as one file; replicaState, when
// set, is every replica's optimizer state, stored instead of this one's.
func (r *runner) writeCheckpointWith(replicaState [][]optim.NamedTensor) (string, error) {
	st, err := r.checkpointHeader()
	if err != nil {
		return "", err
	}
	st.Tensors = r.checkpointTensors(replicaState)
	path, err := snapshot.Save(r.ckptDir, st, r.job.Spec.Checkpoint.Keep)
	if err != nil {
		return "", fmt.Errorf("checkpoint step %d: %w", r.step, err)
	}
	r.lastCkptStep = r.step
	return path, nil
}

// paramKey identifies a parameter's tensor in a checkpoint: under pipeline
// parallelism one name is held by several stages, each with its own rows.
type paramKey struct {
	name  string
	rowLo int
}

// resume loads a checkpoint into the freshly built runner. The checkpoint
// must have been written by a job that trains identically: same model, data,
// seed, batch, optimizer and parallel layout; steps, eval and checkpoint
// settings may differ. A pipeline stage reads only the tensors it holds:
// its parameters (same names and row ranges) and its optimizer state.
// A checkpoint of another data-parallel × pipeline layout is resharded
// (reshard.go says what moves and what is refused).
func (r *runner) resume(path string) error {
	if done, err := r.resumeOtherLayout(path); done || err != nil {
		return err
	}
	mine := make(map[paramKey]bool, len(r.params))
	for _, p := range r.params {
		mine[paramKey{p.Name, p.RowOffset}] = true
	}
	replica := 0
	if r.dp != nil {
		replica = r.dp.rank
	}
	prefix := r.statePrefix(replica)
	st, err := snapshot.LoadSelected(path, func(te snapshot.TensorEntry) bool {
		return mine[paramKey{te.Name, te.Rows[0]}] || strings.HasPrefix(te.Name, prefix)
	})
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if err := compatible(st.Spec, r.job); err != nil {
		return fmt.Errorf("resume from %s: %w", path, err)
	}
	var c data.Cursor
	if err := json.Unmarshal(st.Cursor, &c); err != nil {
		return fmt.Errorf("resume from %s: data cursor: %w", path, err)
	}
	step, err := r.sampler.Resume(c)
	if err != nil {
		return fmt.Errorf("resume from %s: %w", path, err)
	}
	if step != st.Step {
		return fmt.Errorf("resume from %s: data cursor is at step %d but the checkpoint is step %d", path, step, st.Step)
	}
	if step > int64(r.steps) {
		return fmt.Errorf("resume from %s: checkpoint is at step %d, beyond spec.steps=%d", path, step, r.steps)
	}
	held := make(map[paramKey]snapshot.Tensor, len(st.Tensors))
	for _, t := range st.Tensors {
		held[paramKey{t.Name, t.RowLo}] = t
	}
	for _, p := range r.params {
		k := paramKey{p.Name, p.RowOffset}
		t, ok := held[k]
		if !ok {
			return fmt.Errorf("resume from %s: parameter %s rows [%d, %d) missing", path, p.Name, p.RowOffset, p.RowOffset+p.Shape[0])
		}
		v, err := t.Float32s()
		if err != nil {
			return fmt.Errorf("resume from %s: parameter %s: %w", path, p.Name, err)
		}
		if len(v) != len(p.W) || t.RowHi != p.RowOffset+p.Shape[0] || !slices.Equal(t.GlobalShape, p.GlobalShape) {
			return fmt.Errorf("resume from %s: parameter %s has %d values in rows [%d, %d) of %v, model wants %d in rows [%d, %d) of %v",
				path, p.Name, len(v), t.RowLo, t.RowHi, t.GlobalShape, len(p.W), p.RowOffset, p.RowOffset+p.Shape[0], p.GlobalShape)
		}
		copy(p.W, v)
		delete(held, k)
	}
	// What is left is this rank's optimizer state: everything else was not
	// selected, or is a parameter just restored.
	var ost []optim.NamedTensor
	for _, t := range st.Tensors {
		k := paramKey{t.Name, t.RowLo}
		if _, ok := held[k]; !ok || !strings.HasPrefix(t.Name, prefix) {
			continue
		}
		v, err := t.Float32s()
		if err != nil {
			return fmt.Errorf("resume from %s: %s: %w", path, t.Name, err)
		}
		ost = append(ost, optim.NamedTensor{Name: strings.TrimPrefix(t.Name, prefix), Shape: t.Shape, Data: v})
	}
	if err := r.opt.SetState(ost); err != nil {
		return fmt.Errorf("resume from %s: %w", path, err)
	}
	r.step = int(step)
	r.lastCkptStep = r.step
	r.resumedFrom = path
	return nil
}

// compatible reports how the checkpoint's spec differs from job in anything
// that changes the training trajectory.
func compatible(saved json.RawMessage, job *spec.TrainingJob) error {
	var old spec.TrainingJob
	if err := json.Unmarshal(saved, &old); err != nil {
		return fmt.Errorf("checkpoint spec: %w", err)
	}
	cur := *job
	// Checkpoints written before the parallel and communication sections
	// existed trained as one replica with a dense exchange.
	if old.Spec.Parallel.Data == 0 {
		old.Spec.Parallel.Data = 1
	}
	// Checkpoints written before pipeline parallelism existed ran one
	// stage, and with one stage the schedule and vocabulary layout do not
	// change the trajectory.
	if old.Spec.Parallel.Pipeline == 0 {
		old.Spec.Parallel.Pipeline = 1
	}
	if old.Spec.Parallel.Pipeline == 1 && cur.Spec.Parallel.Pipeline == 1 {
		op, cp := &old.Spec.Parallel, cur.Spec.Parallel
		op.Schedule, op.VocabParallel, op.VocabAlgorithm = cp.Schedule, cp.VocabParallel, cp.VocabAlgorithm
	}
	if old.Spec.Communication.Exchange == "" {
		old.Spec.Communication = cur.Spec.Communication
	}
	// Adam-mini's partition became selectable later; earlier checkpoints
	// used today's default.
	if old.Spec.Optimizer.Name == "adam-mini" && old.Spec.Optimizer.AdamMini == nil {
		old.Spec.Optimizer.AdamMini = &spec.AdamMiniSpec{Partition: optim.DefaultAdamMiniConfig().Partition}
	}
	for _, j := range []*spec.TrainingJob{&old, &cur} {
		j.Metadata = spec.Metadata{}
		j.Spec.Steps = 0
		j.Spec.Eval = spec.EvalSpec{}
		j.Spec.Checkpoint = spec.CheckpointSpec{}
		j.Spec.Snapshot = nil
		j.Spec.Data.CacheDir = ""
	}
	a, b := old.CanonicalJSON(), cur.CanonicalJSON()
	if bytes.Equal(a, b) {
		return nil
	}
	var am, bm map[string]any
	_ = json.Unmarshal(a, &am)
	_ = json.Unmarshal(b, &bm)
	as, _ := am["spec"].(map[string]any)
	bs, _ := bm["spec"].(map[string]any)
	var diff []string
	for k := range bs {
		if fmt.Sprint(as[k]) != fmt.Sprint(bs[k]) {
			diff = append(diff, "spec."+k)
		}
	}
	return fmt.Errorf("the job differs from the checkpoint's in %v (only steps, eval, checkpoint and snapshot may change on resume)", diff)
}
