package train

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"testing"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
)

type dpResult struct {
	params  []*model.Param
	stats   comm.Stats
	losses  []float64
	evals   []float64
	weights [][]float32
	sum     *Summary
	err     error
}

// runReplicas trains job as len(jobs) data-parallel replicas in this
// process, connected by the in-memory transport.
func runReplicas(t *testing.T, job *spec.TrainingJob, opts Options) []dpResult {
	t.Helper()
	n := job.Spec.Parallel.Data * job.Spec.Parallel.Pipeline
	trs, err := comm.NewMemNetwork(n, comm.MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]dpResult, n)
	var wg sync.WaitGroup
	for rank := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer trs[rank].Close()
			o := opts
			o.Group = comm.NewGroup(trs[rank])
			r, err := newRunner(context.Background(), job, o)
			if err != nil {
				out[rank].err = err
				return
			}
			rec := &recorder{}
			out[rank].sum, out[rank].err = r.loop(context.Background(), rec)
			out[rank].losses, out[rank].evals = rec.losses, rec.evals
			for _, p := range r.params {
				out[rank].weights = append(out[rank].weights, append([]float32(nil), p.W...))
			}
			out[rank].params = r.params
			out[rank].stats = trs[rank].Stats()
		}()
	}
	wg.Wait()
	for rank, r := range out {
		if r.err != nil {
			t.Fatalf("replica %d: %v", rank, r.err)
		}
	}
	return out
}

// Two replicas with 2 microbatches each see the same global batch as one
// process with 4 (the sampler numbers samples step-major, then replica,
// then microbatch), so the runs agree up to float32 summation order; two
// data-parallel runs agree bitwise, and every replica holds the same
// weights.
func TestDataParallelMatchesSingleProcess(t *testing.T) {
	const steps = 12
	single := tinyJob(t, steps, "batch.microBatches=4", "eval.everySteps=6")
	ls, ws, _ := run(t, single, Options{})
	for _, exchange := range []string{"dense", "bf16"} {
		t.Run(exchange, func(t *testing.T) {
			job := tinyJob(t, steps, "batch.microBatches=2", "parallel.data=2", "communication.exchange="+exchange, "eval.everySteps=6")
			a := runReplicas(t, job, Options{})
			b := runReplicas(t, job, Options{})
			for rank := range a {
				sameRun(t, "replica "+strconv.Itoa(rank)+" vs replica 0", a[rank].losses, a[0].losses, a[rank].weights, a[0].weights)
				sameRun(t, "rerun replica "+strconv.Itoa(rank), a[rank].losses, b[rank].losses, a[rank].weights, b[rank].weights)
			}
			// Tolerances: dense differs from the single process only in
			// the order float32 gradients are summed (relative ~1e-6 per
			// step, growing slowly over 12 Adam steps); bf16 rounds every
			// exchanged gradient to 8 bits of mantissa.
			tol := 1e-4
			if exchange == "bf16" {
				tol = 2e-2
			}
			for i := range ls {
				if d := math.Abs(a[0].losses[i]-ls[i]) / ls[i]; d > tol {
					t.Errorf("step %d: loss %v with 2 replicas, %v in one process (relative %.2g > %.2g)", i+1, a[0].losses[i], ls[i], d, tol)
				}
			}
			var maxDiff float64
			for i := range ws {
				for j := range ws[i] {
					maxDiff = max(maxDiff, math.Abs(float64(ws[i][j]-a[0].weights[i][j])))
				}
			}
			if maxDiff > 100*tol {
				t.Errorf("weights differ from the single process by up to %g", maxDiff)
			}
			if len(a[0].evals) == 0 {
				t.Fatal("no evaluation ran")
			}
			if exchange == "dense" && a[0].sum.BytesSentPerStep == 0 {
				t.Error("no exchange bytes reported")
			}
		})
	}
}

// The evaluation splits its batches over the replicas and adds them in batch
// order, so with the same weights it is the same bits as one process.
func TestDataParallelEvalIsLayoutIndependent(t *testing.T) {
	job := tinyJob(t, 1, "parallel.data=3", "eval.batches=5")
	single := tinyJob(t, 1, "eval.batches=5")
	r1, err := newRunner(context.Background(), single, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := r1.evaluate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	trs, err := comm.NewMemNetwork(3, comm.MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float64, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for rank := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := newRunner(context.Background(), job, Options{Group: comm.NewGroup(trs[rank])})
			if err != nil {
				errs[rank] = err
				return
			}
			got[rank], errs[rank] = r.evaluate(context.Background())
		}()
	}
	wg.Wait()
	for rank := range got {
		if errs[rank] != nil {
			t.Fatal(errs[rank])
		}
		if math.Float64bits(got[rank]) != math.Float64bits(want) {
			t.Errorf("replica %d eval loss %v, one process %v", rank, got[rank], want)
		}
	}
}

func TestDataParallelNeedsGroup(t *testing.T) {
	job := tinyJob(t, 1, "parallel.data=2")
	_, err := newRunner(context.Background(), job, Options{})
	if err == nil {
		t.Fatal("a 2-replica job ran without peers")
	}
	trs, _ := comm.NewMemNetwork(3, comm.MemOptions{})
	_, err = newRunner(context.Background(), job, Options{Group: comm.NewGroup(trs[0])})
	if err == nil {
		t.Fatal("a 2-replica job ran on a 3-rank transport")
	}
}

// A replica whose peer is gone fails its step with an error naming the
// peer, instead of hanging.
func TestDataParallelPeerLoss(t *testing.T) {
	job := tinyJob(t, 5, "parallel.data=2")
	trs, err := comm.NewMemNetwork(2, comm.MemOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRunner(context.Background(), job, Options{Group: comm.NewGroup(trs[0])})
	if err != nil {
		t.Fatal(err)
	}
	trs[1].Close()
	_, err = r.loop(context.Background(), &recorder{})
	var pe *comm.PeerError
	if !errors.As(err, &pe) || pe.Rank != 1 {
		t.Fatalf("got %v, want a PeerError for rank 1", err)
	}
}

// DeMo exchanges only its compressed momentum: no gradient all-reduce runs,
// the replicas stay bitwise identical without ever re-synchronising, a rerun
// is the same bits, and each replica's own momentum survives a checkpoint.
func TestDataParallelDemo(t *testing.T) {
	const steps = 8
	for _, values := range []string{"bf16", "sign"} {
		t.Run(values, func(t *testing.T) {
			sets := []string{"parallel.data=2", "optimizer.name=demo", "optimizer.lr=3e-3", "optimizer.demo.values=" + values}
			job := tinyJob(t, steps, sets...)
			a := runReplicas(t, job, Options{})
			b := runReplicas(t, job, Options{})
			for rank := range a {
				sameRun(t, "replica "+strconv.Itoa(rank)+" vs replica 0", a[rank].losses, a[0].losses, a[rank].weights, a[0].weights)
				sameRun(t, "rerun replica "+strconv.Itoa(rank), a[rank].losses, b[rank].losses, a[rank].weights, b[rank].weights)
				if n := a[rank].stats.SentByKind[comm.KindAllReduce].Payload; n != 0 {
					t.Errorf("replica %d all-reduced %d bytes under DeMo", rank, n)
				}
				if a[rank].stats.SentByKind[comm.KindAllGather].Payload == 0 {
					t.Errorf("replica %d sent no DeMo payload", rank)
				}
			}
			if !(a[0].losses[steps-1] < a[0].losses[0]) {
				t.Errorf("loss did not fall: %v", a[0].losses)
			}

			// Interrupt at step 4 (a checkpoint), resume, and finish.
			dir := t.TempDir()
			half := tinyJob(t, steps, append(sets, "checkpoint.everySteps=4")...)
			runReplicas(t, half, Options{CheckpointDir: dir})
			resumed := runReplicas(t, half, Options{Resume: snapshotDir(dir, 4)})
			for rank := range resumed {
				sameRun(t, "resumed replica "+strconv.Itoa(rank), resumed[rank].losses, a[rank].losses[4:], resumed[rank].weights, a[rank].weights)
			}
		})
	}
}

// GRASS under data parallelism exchanges only the selected rows between
// refreshes and agrees with one process on the same global batch.
func TestDataParallelGrass(t *testing.T) {
	const steps = 10
	sets := []string{"optimizer.name=grass", "optimizer.grass.rank=16", "optimizer.grass.updateProjGap=4"}
	single := tinyJob(t, steps, append(sets, "batch.microBatches=2")...)
	ls, _, _ := run(t, single, Options{})
	job := tinyJob(t, steps, append(sets, "parallel.data=2")...)
	a := runReplicas(t, job, Options{})
	sameRun(t, "replica 1 vs replica 0", a[1].losses, a[0].losses, a[1].weights, a[0].weights)
	for i := range ls {
		if d := math.Abs(a[0].losses[i]-ls[i]) / ls[i]; d > 1e-4 {
			t.Errorf("step %d: loss %v with 2 replicas, %v in one process", i+1, a[0].losses[i], ls[i])
		}
	}
	dense := runReplicas(t, tinyJob(t, steps, "parallel.data=2"), Options{})
	g, d := a[0].stats.SentByKind[comm.KindAllReduce].Payload, dense[0].stats.SentByKind[comm.KindAllReduce].Payload
	if !(g < d) {
		t.Errorf("GRASS all-reduced %d bytes, dense AdamW %d: selected rows should be fewer", g, d)
	}
}

// A data-parallel run resumed from a checkpoint continues bitwise as if it
// had not stopped.
func TestDataParallelResume(t *testing.T) {
	const steps = 6
	full := runReplicas(t, tinyJob(t, steps, "parallel.data=2"), Options{})
	dir := t.TempDir()
	job := tinyJob(t, steps, "parallel.data=2", "checkpoint.everySteps=3")
	runReplicas(t, job, Options{CheckpointDir: dir})
	resumed := runReplicas(t, job, Options{Resume: snapshotDir(dir, 3)})
	for rank := range resumed {
		sameRun(t, "resumed replica "+strconv.Itoa(rank), resumed[rank].losses, full[rank].losses[3:], resumed[rank].weights, full[rank].weights)
	}
}

func snapshotDir(root string, step int64) string { return snapshot.StepDir(root, step) }

// The plan's exchange bytes are what the replicas' transports count: the
// gradient all-reduces for AdamW (float32 and bf16), DeMo's all-gather plus
// the step-result exchange (17 bytes per replica per step).
func TestPlanExchangeMatchesTransport(t *testing.T) {
	const steps = 2
	for _, sets := range [][]string{
		{"parallel.data=3"},
		{"parallel.data=3", "communication.exchange=bf16"},
		{"parallel.data=3", "optimizer.name=demo"},
	} {
		t.Run(sets[len(sets)-1], func(t *testing.T) {
			job := tinyJob(t, steps, append(sets, "eval.everySteps=0")...)
			plan, err := Plan(job)
			if err != nil {
				t.Fatal(err)
			}
			if plan.ExchangeSent == 0 {
				t.Fatal("plan has no exchange")
			}
			res := runReplicas(t, job, Options{})
			var most int64
			for _, r := range res {
				got := r.stats.SentByKind[comm.KindAllReduce].Payload
				if job.Spec.Optimizer.Name == "demo" {
					got = r.stats.SentByKind[comm.KindAllGather].Payload - steps*int64(job.Spec.Parallel.Data-1)*stepResultBytes
				}
				most = max(most, got)
			}
			if most != steps*plan.ExchangeSent {
				t.Fatalf("transports sent %d payload bytes in %d steps, plan says %d per step", most, steps, plan.ExchangeSent)
			}
		})
	}
}

// Pipeline parallelism trains the same model as one process: with and
// without vocabulary parallelism, both schedules and both algorithms, and
// with data parallelism on top; losses agree within float32 tolerance (the
// sums run in another order), every replica holds the same weights, and a
// rerun is the same bits.
func TestPipelineMatchesSingleProcess(t *testing.T) {
	const steps = 6
	base := []string{"batch.microBatches=4", "eval.everySteps=3"}
	single := func(sets ...string) ([]float64, map[string][]float32) {
		r, err := newRunner(context.Background(), tinyJob(t, steps, append(append([]string{}, base...), sets...)...), Options{})
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		if _, err := r.loop(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		w := map[string][]float32{}
		for _, p := range r.params {
			w[p.Name] = p.W
		}
		return rec.losses, w
	}
	ls, ws := single()
	lsDP, wsDP := single("batch.microBatches=8")
	ls4, ws4 := single("model.layers=4")
	grass := []string{"optimizer.name=grass", "optimizer.grass.rank=16", "optimizer.grass.updateProjGap=3"}
	lsG, wsG := single(grass...)
	for _, c := range []struct {
		name  string
		sets  []string
		want  []float64
		wantW map[string][]float32
	}{
		{"pp2-vp-alg2-1f1b", []string{"parallel.pipeline=2"}, ls, ws},
		{"pp2-vp-alg1-gpipe", []string{"parallel.pipeline=2", "parallel.vocabAlgorithm=1", "parallel.schedule=gpipe"}, ls, ws},
		{"pp2-naive", []string{"parallel.pipeline=2", "parallel.vocabParallel=false"}, ls, ws},
		{"dp2-pp2", []string{"parallel.pipeline=2", "parallel.data=2"}, lsDP, wsDP},
		{"pp4-vp", []string{"parallel.pipeline=4", "model.layers=4"}, ls4, ws4},
		{"pp2-grass", append([]string{"parallel.pipeline=2"}, grass...), lsG, wsG},
	} {
		t.Run(c.name, func(t *testing.T) {
			job := tinyJob(t, steps, append(append([]string{}, base...), c.sets...)...)
			a := runReplicas(t, job, Options{})
			b := runReplicas(t, job, Options{})
			for rank := range a {
				sameRun(t, "rerun rank "+strconv.Itoa(rank), a[rank].losses, b[rank].losses, a[rank].weights, b[rank].weights)
				if len(a[rank].evals) == 0 {
					t.Fatalf("rank %d: no evaluation", rank)
				}
			}
			for i := range c.want {
				if d := math.Abs(a[0].losses[i]-c.want[i]) / c.want[i]; d > 1e-4 {
					t.Errorf("step %d: loss %v pipelined, %v in one process (relative %.2g)", i+1, a[0].losses[i], c.want[i], d)
				}
			}
			// Replica 0's stages together hold the single process's
			// weights, each its rows of the vocabulary tensors. Tolerance:
			// 6 Adam steps of lr ≤ 1e-2 after gradients that differ in
			// the order of float32 sums.
			var worst float64
			for pp := 0; pp < job.Spec.Parallel.Pipeline; pp++ {
				for _, p := range a[pp].params {
					ref := c.wantW[p.Name]
					lo := p.RowOffset * len(p.W) / max(p.Shape[0], 1)
					for j, v := range p.W {
						worst = max(worst, math.Abs(float64(v-ref[lo+j])))
					}
				}
			}
			if worst > 1e-4 {
				t.Errorf("weights differ from the single process by up to %g", worst)
			}
			if job.Spec.Parallel.Data == 2 {
				// Replica 1's stages hold the same weights as replica 0's.
				for pp := 0; pp < 2; pp++ {
					sameRun(t, "replica 1 stage "+strconv.Itoa(pp), a[2+pp].losses, a[pp].losses, a[2+pp].weights, a[pp].weights)
				}
			}
		})
	}
}

// 1F1B keeps fewer microbatches' activations than GPipe: the stage's buffer
// pool grows only to what the schedule holds in flight.
func TestPipelineActivationsInFlight(t *testing.T) {
	made := func(schedule string) []int {
		job := tinyJob(t, 1, "parallel.pipeline=2", "batch.microBatches=8", "parallel.schedule="+schedule, "eval.everySteps=0")
		trs, err := comm.NewMemNetwork(2, comm.MemOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := make([]int, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for rank := range 2 {
			wg.Go(func() {
				r, err := newRunner(context.Background(), job, Options{Group: comm.NewGroup(trs[rank])})
				if err != nil {
					errs[rank] = err
					return
				}
				if _, errs[rank] = r.loop(context.Background(), &recorder{}); errs[rank] == nil {
					out[rank] = r.pipe.inFlight()
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	g, f := made("gpipe"), made("1f1b")
	t.Logf("buffers made: gpipe %v, 1f1b %v", g, f)
	if g[0] != 8 {
		t.Errorf("GPipe stage 0 held %d microbatches, want all 8", g[0])
	}
	// 1F1B holds p − stage (the schedule for a runtime with blocking
	// collectives adds no warmup forwards).
	if f[0] != 2 || f[1] != 1 {
		t.Errorf("1F1B held %v microbatches on stages 0 and 1, want [2 1]", f)
	}
}

// The plan of a pipeline job predicts each stage's weights, optimizer state
// and activation buffers exactly as the stages then hold them.
func TestPlanPipelineStagesMatchRun(t *testing.T) {
	for _, schedule := range []string{"1f1b", "gpipe"} {
		job := tinyJob(t, 1, "parallel.pipeline=2", "batch.microBatches=4", "parallel.schedule="+schedule, "eval.everySteps=0")
		plan, err := Plan(job)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Stages) != 2 {
			t.Fatalf("plan has %d stages", len(plan.Stages))
		}
		res := runReplicas(t, job, Options{})
		for pp, st := range plan.Stages {
			m := res[pp].sum.Memory
			if st.Weights != m.Weights || st.Optimizer != m.Optimizer || st.Activations != m.Activations {
				t.Errorf("%s stage %d: plan %+v, run %+v", schedule, pp, st, m)
			}
		}
	}
}
