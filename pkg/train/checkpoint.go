package train

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
// spec as step r.step. Data-parallel replicas hold identical state, so
// replica 0 writes and tells the others whether it succeeded; every replica
// returns the same path or the same failure.
func (r *runner) checkpoint(ctx context.Context) (string, error) {
	if r.dp == nil {
		return r.writeCheckpoint()
	}
	// Optimizer state that differs between replicas (DeMo's momentum) is
	// gathered to replica 0, which stores each replica's under its own
	// prefix.
	var replicaState [][]optim.NamedTensor
	if r.perReplicaState() {
		all, err := r.dp.world.AllGather(context.WithoutCancel(ctx), encodeNamed(r.opt.State()))
		if err != nil {
			return "", fmt.Errorf("checkpoint step %d: gather optimizer state: %w", r.step, err)
		}
		if r.dp.rank == 0 {
			for rank, b := range all {
				st, err := decodeNamed(b)
				if err != nil {
					return "", fmt.Errorf("checkpoint step %d: optimizer state of replica %d: %w", r.step, rank, err)
				}
				replicaState = append(replicaState, st)
			}
		}
	}
	status := []byte{}
	if r.dp.rank == 0 {
		if _, err := r.writeCheckpointWith(replicaState); err != nil {
			status = []byte(err.Error())
		}
	}
	all, err := r.dp.world.AllGather(context.WithoutCancel(ctx), status)
	if err != nil {
		return "", fmt.Errorf("checkpoint step %d: %w", r.step, err)
	}
	if len(all[0]) > 0 {
		return "", fmt.Errorf("checkpoint step %d (written by replica 0): %s", r.step, all[0])
	}
	r.lastCkptStep = r.step
	return snapshot.StepDir(r.ckptDir, int64(r.step)), nil
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

// writeCheckpointWith writes the checkpoint; replicaState, when set, is
// every replica's optimizer state, stored instead of this one's.
func (r *runner) writeCheckpointWith(replicaState [][]optim.NamedTensor) (string, error) {
	var ts []snapshot.Tensor
	for _, p := range r.params {
		t := safetensors.F32(p.Name, p.Shape, p.W)
		ts = append(ts, snapshot.Tensor{Tensor: t, GlobalShape: p.GlobalShape, RowLo: p.RowOffset, RowHi: p.RowOffset + p.Shape[0]})
	}
	if replicaState == nil {
		for _, o := range r.opt.State() {
			ts = append(ts, snapshot.Whole(safetensors.F32(o.Name, o.Shape, o.Data)))
		}
	}
	for rank, st := range replicaState {
		for _, o := range st {
			ts = append(ts, snapshot.Whole(safetensors.F32(replicaPrefix(rank)+o.Name, o.Shape, o.Data)))
		}
	}
	cursor, err := json.Marshal(r.sampler.Cursor(int64(r.step)))
	if err != nil {
		return "", err
	}
	rng, err := json.Marshal(rngState{Seed: r.job.Spec.Seed})
	if err != nil {
		return "", err
	}
	st := &snapshot.State{
		Step: int64(r.step), Job: r.job.Metadata.Name, Spec: r.job.CanonicalJSON(),
		Cursor: cursor, RNG: rng, Tensors: ts,
	}
	path, err := snapshot.Save(r.ckptDir, st, r.job.Spec.Checkpoint.Keep)
	if err != nil {
		return "", fmt.Errorf("checkpoint step %d: %w", r.step, err)
	}
	r.lastCkptStep = r.step
	return path, nil
}

// resume loads a checkpoint into the freshly built runner. The checkpoint
// must have been written by a job that trains identically: same model, data,
// seed, batch and optimizer; steps, eval and checkpoint settings may differ.
func (r *runner) resume(path string) error {
	st, err := snapshot.Load(path)
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
	byName := make(map[string]snapshot.Tensor, len(st.Tensors))
	for _, t := range st.Tensors {
		byName[t.Name] = t
	}
	for _, p := range r.params {
		t, ok := byName[p.Name]
		if !ok {
			return fmt.Errorf("resume from %s: parameter %s missing", path, p.Name)
		}
		v, err := t.Float32s()
		if err != nil {
			return fmt.Errorf("resume from %s: parameter %s: %w", path, p.Name, err)
		}
		if len(v) != len(p.W) || t.RowLo != p.RowOffset {
			return fmt.Errorf("resume from %s: parameter %s has %d values from row %d, model wants %d from row %d",
				path, p.Name, len(v), t.RowLo, len(p.W), p.RowOffset)
		}
		copy(p.W, v)
		delete(byName, p.Name)
	}
	var ost []optim.NamedTensor
	for name, t := range byName {
		if r.perReplicaState() {
			mine := replicaPrefix(r.dp.rank)
			if !strings.HasPrefix(name, mine) {
				continue // another replica's
			}
			name = strings.TrimPrefix(name, mine)
		}
		v, err := t.Float32s()
		if err != nil {
			return fmt.Errorf("resume from %s: %s: %w", path, name, err)
		}
		ost = append(ost, optim.NamedTensor{Name: name, Shape: t.Shape, Data: v})
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
	return fmt.Errorf("the job differs from the checkpoint's in %v (only steps, eval and checkpoint may change on resume)", diff)
}
