package train

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math"
	"strings"

	"github.com/ternml/tern/pkg/data"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/snapshot"
)

// In-memory snapshots of one rank (pkg/snapshot's L0 local copy and L1
// peer fragments) hold exactly this rank's state, unlike a durable
// checkpoint, which merges replicas and stages into one layout: the
// parameters this rank trains (its pipeline stage's rows), this rank's own
// optimizer state (DeMo's per-replica momentum included), and the scalars
// a fresh trainer needs to continue bit for bit. The learning-rate
// schedule is a pure function of the step and the sampler of (seed, step,
// replica), so the step, the cursor (which also identifies the data) and
// the seed are all of it; the learning rate of the next step is stored
// too, so a restore proves the schedule agrees.

// Snapshotter receives a rank's state after every optimizer step, on the
// training goroutine, before the next step starts (Options.Snapshots).
// capture returns the state with its tensors aliasing the live parameters
// and optimizer state, so AfterStep must copy what it keeps before
// returning (snapshot.MarshalState, or Stager.Stage, which copies and
// sends the fragments in the background) and should return quickly: the
// next step waits. It decides the cadence (spec.snapshot) itself; an
// error stops training.
type Snapshotter interface {
	AfterStep(step int, capture func() (*snapshot.RankState, error)) error
}

// SnapshotWaiter is implemented by a Snapshotter whose AfterStep leaves
// the copy running in the background (snapshot.Stager.StageAsync), so it
// overlaps the next step's forward and backward passes, which only read
// the state. The trainer calls WaitCopied before it next changes the
// state (the optimizer update) and before it returns. A copy that failed
// is the snapshotter's to report, at its next AfterStep: the trainer does
// not stop in the middle of a step, where its replicas wait for it.
type SnapshotWaiter interface {
	WaitCopied()
}

// waitSnapshot waits for a background copy of the state, if any.
func (r *runner) waitSnapshot() {
	if w, ok := r.snapshots.(SnapshotWaiter); ok {
		w.WaitCopied()
	}
}

// memParamPrefix names a parameter's tensor in a rank state; optimizer
// state keeps the names the optimizer gives it ("optim.").
const memParamPrefix = "param."

// memMeta is the scalar part of a rank state.
type memMeta struct {
	Cursor data.Cursor     `json:"cursor"`
	RNG    rngState        `json:"rng"`
	NextLR float64         `json:"nextLR"`
	Spec   json.RawMessage `json:"spec"`
}

// worldRank is this process's rank in the job (0 for one process).
func (r *runner) worldRank() int {
	if r.dp == nil {
		return 0
	}
	return r.dp.tr.Rank()
}

// captureState returns this rank's whole state at the current step. The
// tensors alias the live parameters and optimizer state: marshal (copy)
// it before the next step runs.
func (r *runner) captureState() (*snapshot.RankState, error) {
	meta, err := json.Marshal(memMeta{
		Cursor: r.sampler.Cursor(int64(r.step)),
		RNG:    rngState{Seed: r.job.Spec.Seed},
		NextLR: r.sched.LR(r.step),
		Spec:   r.job.CanonicalJSON(),
	})
	if err != nil {
		return nil, fmt.Errorf("capture rank %d step %d: %w", r.worldRank(), r.step, err)
	}
	st := &snapshot.RankState{Job: r.job.Metadata.Name, Step: int64(r.step), Rank: r.worldRank(), Meta: meta}
	for _, p := range r.params {
		st.Tensors = append(st.Tensors, snapshot.StateTensor{Name: memParamPrefix + p.Name, Shape: p.Shape, Data: p.W})
	}
	for _, o := range r.opt.State() {
		if strings.HasPrefix(o.Name, memParamPrefix) {
			return nil, fmt.Errorf("capture rank %d step %d: optimizer state %q clashes with the parameter prefix", st.Rank, r.step, o.Name)
		}
		st.Tensors = append(st.Tensors, snapshot.StateTensor{Name: o.Name, Shape: o.Shape, Data: o.Data})
	}
	return st, nil
}

// restoreState puts a rank state captured by a runner of the same job
// and rank into this freshly built runner, checking everything it can
// before changing anything: job, rank, spec, data cursor, schedule and
// every parameter's shape.
func (r *runner) restoreState(st *snapshot.RankState) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("restore rank %d step %d from memory: %s", r.worldRank(), st.Step, fmt.Sprintf(format, args...))
	}
	if st.Job != r.job.Metadata.Name || st.Rank != r.worldRank() {
		return fail("the state is of job %q rank %d", st.Job, st.Rank)
	}
	var meta memMeta
	if err := json.Unmarshal(st.Meta, &meta); err != nil {
		return fail("scalars: %v", err)
	}
	if err := compatible(meta.Spec, r.job); err != nil {
		return fail("%v", err)
	}
	if meta.RNG.Seed != r.job.Spec.Seed {
		return fail("seed %d, the job has %d", meta.RNG.Seed, r.job.Spec.Seed)
	}
	step, err := r.sampler.Resume(meta.Cursor)
	if err != nil {
		return fail("%v", err)
	}
	if step != st.Step || step > int64(r.steps) {
		return fail("data cursor at step %d (job has %d steps)", step, r.steps)
	}
	if lr := r.sched.LR(int(step)); math.Float64bits(lr) != math.Float64bits(meta.NextLR) {
		return fail("the schedule gives learning rate %v at step %d, the state recorded %v", lr, step, meta.NextLR)
	}
	byName := make(map[string]snapshot.StateTensor, len(st.Tensors))
	for _, t := range st.Tensors {
		byName[t.Name] = t
	}
	for _, p := range r.params {
		t, ok := byName[memParamPrefix+p.Name]
		if !ok || len(t.Data) != len(p.W) {
			return fail("parameter %s (%d values) is missing or has another size", p.Name, len(p.W))
		}
	}
	var ost []optim.NamedTensor
	for _, t := range st.Tensors {
		if !strings.HasPrefix(t.Name, memParamPrefix) {
			ost = append(ost, optim.NamedTensor{Name: t.Name, Shape: t.Shape, Data: t.Data})
		}
	}
	// SetState checks names and shapes against the live state first.
	if err := r.opt.SetState(ost); err != nil {
		return fail("%v", err)
	}
	for _, p := range r.params {
		copy(p.W, byName[memParamPrefix+p.Name].Data)
	}
	r.step = int(step)
	r.resumedFrom = fmt.Sprintf("in-memory snapshot of step %d", step)
	return nil
}

// weightsCRC is the CRC32C of the parameters' float32 bytes (little
// endian), in parameter order (Summary.WeightsCRC32C).
func (r *runner) weightsCRC() uint32 {
	tab := crc32.MakeTable(crc32.Castagnoli)
	var crc uint32
	var buf []byte
	for _, p := range r.params {
		buf = buf[:0]
		for _, v := range p.W {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
		crc = crc32.Update(crc, tab, buf)
	}
	return crc
}
