package train

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
)

// steps runs n training steps of r and returns their losses.
func steps(t *testing.T, r *runner, n int) []float64 {
	t.Helper()
	var ls []float64
	for range n {
		rep, _, err := r.trainStep(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, rep.Loss)
	}
	return ls
}

func weights(r *runner) [][]float32 {
	var ws [][]float32
	for _, p := range r.params {
		ws = append(ws, append([]float32(nil), p.W...))
	}
	return ws
}

// throughFragments takes a captured state the way a lost rank gets it
// back: serialised, cut into k=2 data and one parity fragment, one
// fragment lost, the others decoded and checked.
func throughFragments(t *testing.T, st *snapshot.RankState) *snapshot.RankState {
	t.Helper()
	c := snapshot.Code{K: 2, M: 2}
	b, err := snapshot.MarshalState(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	frags, err := snapshot.Encode(st.Job, st.Step, st.Rank, b, c)
	if err != nil {
		t.Fatal(err)
	}
	want := snapshot.Expect{Job: st.Job, Step: st.Step, Rank: st.Rank, Code: c, StateBytes: int64(len(b)), StateCRC: frags[0].StateCRC}
	got, err := snapshot.Decode(want, frags[1:])
	if err != nil {
		t.Fatal(err)
	}
	back, err := snapshot.UnmarshalState(got)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// A rank's state captured in memory, passed through erasure coding with a
// fragment lost and restored into a fresh trainer, continues bit for bit
// as the uninterrupted run: every later loss and the final weights.
func TestMemStateResumeEqualsUninterrupted(t *testing.T) {
	const total, at = 10, 4
	job := func() *spec.TrainingJob { return tinyJob(t, total, "batch.microBatches=2") }
	full, wFull, _ := run(t, job(), Options{})

	a, err := newRunner(context.Background(), job(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	first := steps(t, a, at)
	st, err := a.captureState()
	if err != nil {
		t.Fatal(err)
	}
	st = throughFragments(t, st)
	// Training goes on in the old runner after the capture; the restored
	// state must not alias it.
	steps(t, a, 2)

	b, err := newRunner(context.Background(), job(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.restoreState(st); err != nil {
		t.Fatal(err)
	}
	rest := steps(t, b, total-at)
	sameRun(t, "restored from memory vs uninterrupted", full, append(first, rest...), wFull, weights(b))
}

// Two data-parallel replicas each restore their own state into fresh
// trainers on a fresh network and continue bitwise; the optimizer is DeMo,
// whose momentum differs per replica, so each must get its own back.
func TestMemStateResumeDataParallel(t *testing.T) {
	const total, at = 6, 3
	for _, sets := range [][]string{{"parallel.data=2"}, {"parallel.data=2", "optimizer.name=demo"}, {"parallel.pipeline=2"}} {
		t.Run(strings.Join(sets, ","), func(t *testing.T) {
			job := tinyJob(t, total, sets...)
			full := runReplicas(t, job, Options{})
			n := len(full)
			states := make([]*snapshot.RankState, n)
			first := make([][]float64, n)
			phase(t, job, func(rank int, r *runner) {
				first[rank] = steps(t, r, at)
				st, err := r.captureState()
				if err != nil {
					t.Error(err)
					return
				}
				// Copy now: the next step would change the live tensors.
				b, err := snapshot.MarshalState(st, 0)
				if err != nil {
					t.Error(err)
					return
				}
				if states[rank], err = snapshot.UnmarshalState(b); err != nil {
					t.Error(err)
				}
			})
			if t.Failed() {
				return
			}
			rest := make([][]float64, n)
			ws := make([][][]float32, n)
			phase(t, job, func(rank int, r *runner) {
				if err := r.restoreState(states[rank]); err != nil {
					t.Error(err)
					return
				}
				rest[rank] = steps(t, r, total-at)
				ws[rank] = weights(r)
			})
			for rank := range n {
				sameRun(t, "rank "+strconv.Itoa(rank), full[rank].losses, append(first[rank], rest[rank]...), full[rank].weights, ws[rank])
			}
		})
	}
}

// phase builds one runner per rank of job on a fresh in-memory network
// and runs fn on each concurrently.
func phase(t *testing.T, job *spec.TrainingJob, fn func(rank int, r *runner)) {
	t.Helper()
	n := job.Spec.Parallel.Data * job.Spec.Parallel.Pipeline
	trs, err := comm.NewMemNetwork(n, comm.MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for rank := range n {
		wg.Go(func() {
			defer trs[rank].Close()
			r, err := newRunner(context.Background(), job, Options{Group: comm.NewGroup(trs[rank])})
			if err != nil {
				t.Error(err)
				return
			}
			fn(rank, r)
		})
	}
	wg.Wait()
}

func TestMemStateRestoreRejects(t *testing.T) {
	a, err := newRunner(context.Background(), tinyJob(t, 6), Options{})
	if err != nil {
		t.Fatal(err)
	}
	steps(t, a, 2)
	st, err := a.captureState()
	if err != nil {
		t.Fatal(err)
	}
	fresh := func(sets ...string) *runner {
		r, err := newRunner(context.Background(), tinyJob(t, 6, sets...), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	other := *st
	other.Rank = 1
	if err := fresh().restoreState(&other); err == nil || !strings.Contains(err.Error(), "rank 1") {
		t.Errorf("another rank's state: %v", err)
	}
	if err := fresh("optimizer.lr=0.02").restoreState(st); err == nil || !strings.Contains(err.Error(), "spec.optimizer") {
		t.Errorf("another learning rate: %v", err)
	}
	short := *st
	short.Tensors = st.Tensors[1:]
	if err := fresh().restoreState(&short); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a parameter missing: %v", err)
	}
	// Snapshot settings do not change the trajectory.
	if err := fresh("snapshot.tolerate=1").restoreState(st); err != nil {
		t.Errorf("with a snapshot section: %v", err)
	}
}

// stagerSnapshots keeps a local copy every n steps in a snapshot.Stager,
// as a worker's L0 layer does.
type stagerSnapshots struct {
	s     *snapshot.Stager
	every int
	seen  []int
}

func (x *stagerSnapshots) AfterStep(step int, capture func() (*snapshot.RankState, error)) error {
	x.seen = append(x.seen, step)
	if step%x.every != 0 {
		return nil
	}
	st, err := capture()
	if err != nil {
		return err
	}
	return x.s.Stage(st, nil)
}

// asyncSnapshots copies in the background (StageAsync) and lets the
// trainer wait before its next update. It checks the trainer waits in
// time: when WaitCopied runs, the live state must still be what it was
// when the copy started (the race detector cannot see the assembly
// kernels of the update write).
type asyncSnapshots struct {
	stagerSnapshots
	live    *snapshot.RankState // being copied; nil when none
	sum     uint64
	waits   int
	changed []int64 // steps whose state changed before WaitCopied
}

func stateSum(st *snapshot.RankState) uint64 {
	h := fnv.New64a()
	for _, t := range st.Tensors {
		for _, v := range t.Data {
			b := math.Float32bits(v)
			h.Write([]byte{byte(b), byte(b >> 8), byte(b >> 16), byte(b >> 24)})
		}
	}
	return h.Sum64()
}

func (x *asyncSnapshots) AfterStep(step int, capture func() (*snapshot.RankState, error)) error {
	x.seen = append(x.seen, step)
	if x.live != nil {
		return fmt.Errorf("AfterStep(%d) with the copy of step %d not waited for", step, x.live.Step)
	}
	if step%x.every != 0 {
		return nil
	}
	st, err := capture()
	if err != nil {
		return err
	}
	x.live, x.sum = st, stateSum(st)
	return x.s.StageAsync(st, nil)
}

func (x *asyncSnapshots) WaitCopied() {
	x.waits++
	if err := x.s.Wait(); err != nil {
		x.changed = append(x.changed, -1)
	}
	if x.live != nil && stateSum(x.live) != x.sum {
		x.changed = append(x.changed, x.live.Step)
	}
	x.live = nil
}

// Through Run's options: a run interrupted after step 7 that kept a local
// copy every 3 steps is continued by a fresh run from the copy of step 6,
// and matches the uninterrupted run bit for bit.
func TestMemStateThroughOptions(t *testing.T) {
	const total = 10
	full, wFull, _ := run(t, tinyJob(t, total), Options{})
	for _, async := range []bool{false, true} {
		t.Run("async="+strconv.FormatBool(async), func(t *testing.T) {
			memStateThroughOptions(t, async, full, wFull)
		})
	}
}

// memStateThroughOptions runs the interrupted and the continued run, with
// the copy on the training goroutine or overlapping the next step (where
// the race detector checks the trainer waits for it before updating).
func memStateThroughOptions(t *testing.T, async bool, full []float64, wFull [][]float32) {
	const total = 10
	stager := snapshot.NewStager("tiny", 0, nil)
	defer stager.Close()
	var snaps Snapshotter = &stagerSnapshots{s: stager, every: 3}
	seen := func() []int { return snaps.(*stagerSnapshots).seen }
	if async {
		a := &asyncSnapshots{stagerSnapshots: stagerSnapshots{s: stager, every: 3}}
		snaps, seen = a, func() []int { return a.seen }
		defer func() {
			if a.waits == 0 || len(a.changed) > 0 {
				t.Errorf("the trainer waited %d times; the state changed before the wait at steps %v", a.waits, a.changed)
			}
		}()
	}
	r, err := newRunner(context.Background(), tinyJob(t, total), Options{Snapshots: snaps})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := &stopAfter{n: 7, cancel: cancel}
	if _, err := r.loop(ctx, stop); err != nil {
		t.Fatal(err)
	}
	if len(seen()) != 7 {
		t.Fatalf("AfterStep saw steps %v, want 1..7", seen())
	}
	if got := stager.Steps(); len(got) != 1 || got[0] != 6 {
		t.Fatalf("local generations %v, want [6]", got)
	}
	b, _ := stager.Local(6)
	st, err := snapshot.UnmarshalState(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newRunner(context.Background(), tinyJob(t, total), Options{RestoreState: st, Resume: t.TempDir()}); err == nil {
		t.Fatal("restore and resume together: accepted")
	}
	rest, wRest, _ := run(t, tinyJob(t, total), Options{RestoreState: st})
	sameRun(t, "continued from the local copy of step 6", full, append(stop.losses[:6:6], rest...), wFull, wRest)
}
