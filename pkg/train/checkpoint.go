package train

import (
	"bytes"
	"encoding/json"
	"fmt"

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
// spec as step r.step.
func (r *runner) checkpoint() (string, error) {
	var ts []snapshot.Tensor
	for _, p := range r.model.Params() {
		t := safetensors.F32(p.Name, p.Shape, p.W)
		ts = append(ts, snapshot.Tensor{Tensor: t, GlobalShape: p.GlobalShape, RowLo: p.RowOffset, RowHi: p.RowOffset + p.Shape[0]})
	}
	for _, o := range r.opt.State() {
		ts = append(ts, snapshot.Whole(safetensors.F32(o.Name, o.Shape, o.Data)))
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
	for _, p := range r.model.Params() {
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
