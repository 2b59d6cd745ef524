package hf

import (
	"encoding/json"
	"fmt"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/safetensors"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
)

// Checkpoint is a tern checkpoint's weights gathered into one whole model.
type Checkpoint struct {
	Step    int64
	Job     *spec.TrainingJob // the spec the checkpoint was written with
	Config  model.Config      // the job's model, with its true (unpadded) vocabulary
	Tensors []safetensors.Tensor
}

// ReadCheckpoint reads the parameters of a checkpoint (a checkpoint root,
// meaning its newest complete step, or one step directory), verifying every
// file it reads as snapshot.Load does, and gathers them with Gather. Only
// the files holding parameters are read: optimizer state is skipped.
func ReadCheckpoint(path string) (*Checkpoint, error) {
	st, err := snapshot.LoadSelected(path, func(te snapshot.TensorEntry) bool { return IsParam(te.Name) })
	if err != nil {
		return nil, err
	}
	var job spec.TrainingJob
	if err := json.Unmarshal(st.Spec, &job); err != nil {
		return nil, fmt.Errorf("checkpoint %s: job spec in the manifest: %w", path, err)
	}
	cfg, err := job.Spec.Model.Resolve()
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	ts, err := Gather(st.Tensors, cfg)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s step %d: %w", path, st.Step, err)
	}
	return &Checkpoint{Step: st.Step, Job: &job, Config: cfg, Tensors: ts}, nil
}

// NewModel builds c's whole model on the CPU holding the tensors ts (in
// Shapes order, float32, as Gather returns them), bit for bit.
func NewModel(c model.Config, ts []safetensors.Tensor) (*model.Model, error) {
	if err := checkTensors(c, ts); err != nil {
		return nil, err
	}
	m, err := model.New(c, 0, false)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]safetensors.Tensor, len(ts))
	for _, t := range ts {
		byName[t.Name] = t
	}
	for _, p := range m.Params() {
		t, ok := byName[p.Name]
		if !ok {
			return nil, fmt.Errorf("no tensor for parameter %s", p.Name)
		}
		v, err := t.Float32s()
		if err != nil {
			return nil, err
		}
		if len(v) != len(p.W) {
			return nil, fmt.Errorf("tensor %s has %d values, parameter %s holds %d", t.Name, len(v), p.Name, len(p.W))
		}
		copy(p.W, v)
	}
	return m, nil
}

// Model builds the checkpoint's whole model on the CPU.
func (ck *Checkpoint) Model() (*model.Model, error) { return NewModel(ck.Config, ck.Tensors) }

// OpenModel builds the whole model a Hugging Face directory describes,
// on the CPU. seqLen and tokenizer override config.json's
// max_position_embeddings and tern_tokenizer when set.
func OpenModel(dir string, seqLen int, tokenizer string) (*model.Model, error) {
	d, err := Open(dir)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	defer d.Close()
	c, err := d.Config.ModelConfig(seqLen, tokenizer)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", dir, err)
	}
	// Check the tensors' shapes before building the model: they are bounded
	// by the files' sizes, while config.json could claim any size.
	if err := d.Check(c); err != nil {
		return nil, err
	}
	m, err := model.New(c, 0, false)
	if err != nil {
		return nil, err
	}
	if err := d.Load(c, m.Params()); err != nil {
		return nil, err
	}
	return m, nil
}
