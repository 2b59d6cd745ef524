package launch

import (
	"context"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
)

// The test binary doubles as the worker: with childEnv set it runs Child
// instead of the tests, as ternctl's hidden rank command does.
const childEnv = "TERN_LAUNCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := Child(context.Background(), os.Stdin, os.Stdout, os.Stderr); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testOptions(t *testing.T) Options {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Options{Exe: exe, Env: []string{childEnv + "=1"}, Stderr: testWriter{t}}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func tinyJob(t *testing.T, cache string, sets ...string) *spec.TrainingJob {
	t.Helper()
	text, err := filepath.Abs("../../examples/tiny.txt")
	if err != nil {
		t.Fatal(err)
	}
	job, err := spec.Load("../../examples/tiny.yaml", append([]string{"data.path=" + text, "data.cacheDir=" + cache}, sets...))
	if err != nil {
		t.Fatal(err)
	}
	return job
}

type losses struct {
	mu     sync.Mutex
	steps  []train.StepReport
	onStep func(train.StepReport)
}

func (l *losses) Started(train.RunInfo) {}
func (l *losses) Log(string)            {}
func (l *losses) Step(r train.StepReport) {
	l.mu.Lock()
	l.steps = append(l.steps, r)
	l.mu.Unlock()
	if l.onStep != nil {
		l.onStep(r)
	}
}

func weights(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	st, err := snapshot.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Shards of a tensor (pipeline stages' vocabulary rows) are put back
	// together at their row ranges.
	out := map[string][]float32{}
	for _, ts := range st.Tensors {
		if strings.HasPrefix(ts.Name, "model.") || strings.HasPrefix(ts.Name, "lm_head") {
			v, err := ts.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			full := out[ts.Name]
			if full == nil {
				n := 1
				for _, d := range ts.GlobalShape {
					n *= d
				}
				full = make([]float32, n)
				out[ts.Name] = full
			}
			rowLen := len(full)
			if len(ts.GlobalShape) > 0 && ts.GlobalShape[0] > 0 {
				rowLen = len(full) / ts.GlobalShape[0]
			}
			copy(full[ts.RowLo*rowLen:], v)
		}
	}
	if len(out) == 0 {
		t.Fatal("no weights in the checkpoint")
	}
	return out
}

// Two worker processes over real gRPC train like one process with the same
// global batch (up to float32 summation order), and two such runs are
// bitwise identical.
func TestTwoProcessesMatchOneAndRepeat(t *testing.T) {
	const steps = 8
	cache := t.TempDir()
	single := tinyJob(t, cache, "steps="+strconv.Itoa(steps), "batch.microBatches=2")
	ref := &losses{}
	if _, err := train.Run(context.Background(), single, train.Options{Observer: ref}); err != nil {
		t.Fatal(err)
	}
	job := tinyJob(t, cache, "steps="+strconv.Itoa(steps), "parallel.data=2")
	var runs [2]*losses
	var dirs [2]string
	for i := range runs {
		runs[i] = &losses{}
		dirs[i] = t.TempDir()
		sum, err := Run(context.Background(), job, train.Options{Observer: runs[i], CheckpointDir: dirs[i]}, testOptions(t))
		if err != nil {
			t.Fatal(err)
		}
		if sum.Steps != steps || sum.Stopped || sum.BytesSentPerStep == 0 {
			t.Fatalf("summary %+v", sum)
		}
	}
	if len(runs[0].steps) != steps || len(runs[1].steps) != steps {
		t.Fatalf("got %d and %d step reports, want %d", len(runs[0].steps), len(runs[1].steps), steps)
	}
	for i := range steps {
		a, b, want := runs[0].steps[i].Loss, runs[1].steps[i].Loss, ref.steps[i].Loss
		if math.Float64bits(a) != math.Float64bits(b) {
			t.Errorf("step %d: two identical 2-process runs gave losses %v and %v", i+1, a, b)
		}
		// Same global batch, summed in a different order: float32
		// rounding, amplified a little by 8 Adam steps.
		if d := math.Abs(a-want) / want; d > 1e-4 {
			t.Errorf("step %d: loss %v with 2 processes, %v with one (relative %.2g)", i+1, a, want, d)
		}
		if runs[0].steps[i].BytesSent == 0 {
			t.Errorf("step %d: no exchange bytes reported", i+1)
		}
	}
	wa, wb := weights(t, dirs[0]), weights(t, dirs[1])
	for name, a := range wa {
		b := wb[name]
		for j := range a {
			if math.Float32bits(a[j]) != math.Float32bits(b[j]) {
				t.Fatalf("%s[%d]: %v vs %v in two identical runs", name, j, a[j], b[j])
			}
		}
	}
}

// A worker killed with SIGKILL stops the run with an error naming its rank
// and how it died; the other workers do not linger.
func TestKilledWorkerIsReported(t *testing.T) {
	job := tinyJob(t, t.TempDir(), "steps=100000", "parallel.data=3", "eval.everySteps=0")
	pids := make([]int, 3)
	var once sync.Once
	obs := &losses{}
	obs.onStep = func(r train.StepReport) {
		if r.Step == 3 {
			once.Do(func() { _ = syscall.Kill(pids[1], syscall.SIGKILL) })
		}
	}
	lo := testOptions(t)
	lo.OnStart = func(rank, pid int) { pids[rank] = pid }
	_, err := Run(context.Background(), job, train.Options{Observer: obs}, lo)
	if err == nil {
		t.Fatal("the run survived a killed worker")
	}
	msg := err.Error()
	if !strings.Contains(msg, "rank 1 (pid "+strconv.Itoa(pids[1])+") exited before finishing (signal: killed)") {
		t.Fatalf("error does not name the killed rank: %v", err)
	}
	for rank, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			// A zombie still answers; a reaped process does not.
			t.Errorf("rank %d (pid %d) is still running after Run returned", rank, pid)
		}
	}
}

// Cancelling the launcher's context stops every worker after the same step,
// with a checkpoint, like Ctrl-C in a single process.
func TestCancelStopsAllWorkersWithCheckpoint(t *testing.T) {
	job := tinyJob(t, t.TempDir(), "steps=100000", "parallel.data=2", "eval.everySteps=0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	obs := &losses{}
	obs.onStep = func(r train.StepReport) {
		if r.Step == 4 {
			cancel()
		}
	}
	dir := t.TempDir()
	sum, err := Run(ctx, job, train.Options{Observer: obs, CheckpointDir: dir}, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Stopped || sum.Steps < 4 {
		t.Fatalf("summary: stopped %v after %d steps", sum.Stopped, sum.Steps)
	}
	latest, err := snapshot.Latest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := snapshot.StepDir(dir, int64(sum.Steps)); latest != want {
		t.Fatalf("latest checkpoint %s, want %s", latest, want)
	}
}

// freeAddrs returns n loopback addresses whose ports were free a moment ago.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l.Addr().String())
		l.Close()
	}
	return out
}

// RunRank (the worker command's path, for ranks on several machines) trains
// the same replicas as the launcher when given the peer list up front.
func TestRunRankWithExplicitPeers(t *testing.T) {
	job := tinyJob(t, t.TempDir(), "steps=4", "parallel.data=2", "eval.everySteps=0")
	peers := freeAddrs(t, 2)
	token := "0123456789abcdef0123456789abcdef"
	sums := make([]*train.Summary, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for rank := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sums[rank], errs[rank] = RunRank(context.Background(), job, RankConfig{Rank: rank, Peers: peers, Token: token}, train.Options{})
		}()
	}
	wg.Wait()
	for rank := range 2 {
		if errs[rank] != nil {
			t.Fatalf("rank %d: %v", rank, errs[rank])
		}
	}
	if math.Float64bits(sums[0].FinalLoss) != math.Float64bits(sums[1].FinalLoss) || sums[0].Steps != 4 {
		t.Fatalf("ranks disagree: %+v vs %+v", sums[0], sums[1])
	}
	if _, err := RunRank(context.Background(), job, RankConfig{Rank: 0, Peers: peers[:1], Token: token}, train.Options{}); err == nil || !strings.Contains(err.Error(), "--peers lists 1 addresses but spec.parallel asks for 2 ranks") {
		t.Fatalf("mismatched peer list: %v", err)
	}
}

// ListenRank and Run, the two phases a control plane drives, train like
// RunRank when each rank binds port 0 and learns the others' addresses only
// after every rank has bound.
func TestListenRankThenRun(t *testing.T) {
	job := tinyJob(t, t.TempDir(), "steps=3", "parallel.data=2", "eval.everySteps=0")
	token := "0123456789abcdef0123456789abcdef"
	ranks := make([]*Rank, 2)
	peers := make([]string, 2)
	for i := range ranks {
		r, err := ListenRank(job, i, "127.0.0.1:0", token)
		if err != nil {
			t.Fatal(err)
		}
		ranks[i], peers[i] = r, r.Addr()
	}
	sums := make([]*train.Summary, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, r := range ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sums[i], errs[i] = r.Run(context.Background(), peers, train.Options{})
		}()
	}
	wg.Wait()
	for i := range ranks {
		if errs[i] != nil {
			t.Fatalf("rank %d: %v", i, errs[i])
		}
	}
	if math.Float64bits(sums[0].FinalLoss) != math.Float64bits(sums[1].FinalLoss) || sums[0].Steps != 3 {
		t.Fatalf("ranks disagree: %+v vs %+v", sums[0], sums[1])
	}
	if _, err := ListenRank(job, 2, "127.0.0.1:0", token); err == nil || !strings.Contains(err.Error(), "rank 2 is out of range [0, 2)") {
		t.Fatalf("rank out of range: %v", err)
	}
}

// Two pipeline stages and two replicas in four processes over real gRPC
// train like one process with the same global batch, and repeat bitwise.
func TestPipelineProcesses(t *testing.T) {
	const steps = 5
	cache := t.TempDir()
	ref := &losses{}
	refDir := t.TempDir()
	if _, err := train.Run(context.Background(), tinyJob(t, cache, "steps=5", "batch.microBatches=4", "eval.everySteps=0"), train.Options{Observer: ref, CheckpointDir: refDir}); err != nil {
		t.Fatal(err)
	}
	job := tinyJob(t, cache, "steps=5", "batch.microBatches=2", "parallel.data=2", "parallel.pipeline=2", "eval.everySteps=0")
	var runs [2]*losses
	var dirs [2]string
	for i := range runs {
		runs[i] = &losses{}
		dirs[i] = t.TempDir()
		if _, err := Run(context.Background(), job, train.Options{Observer: runs[i], CheckpointDir: dirs[i]}, testOptions(t)); err != nil {
			t.Fatal(err)
		}
	}
	// Final weights: the two runs' bitwise equal; both within float32
	// tolerance of one process (5 AdamW steps after gradients summed in
	// another order).
	want, wa, wb := weights(t, refDir), weights(t, dirs[0]), weights(t, dirs[1])
	if len(wa) != len(want) {
		t.Fatalf("checkpoint of the 2x2 run holds %d tensors, one process %d", len(wa), len(want))
	}
	var worst float64
	for name, a := range wa {
		for j := range a {
			if math.Float32bits(a[j]) != math.Float32bits(wb[name][j]) {
				t.Fatalf("%s[%d]: %v vs %v in two identical runs", name, j, a[j], wb[name][j])
			}
			worst = max(worst, math.Abs(float64(a[j]-want[name][j])))
		}
	}
	t.Logf("final weights within %g of one process", worst)
	if worst > 1e-4 {
		t.Errorf("final weights differ from one process by up to %g", worst)
	}
	for i := range steps {
		a, b, want := runs[0].steps[i].Loss, runs[1].steps[i].Loss, ref.steps[i].Loss
		if math.Float64bits(a) != math.Float64bits(b) {
			t.Errorf("step %d: two identical runs gave %v and %v", i+1, a, b)
		}
		if d := math.Abs(a-want) / want; d > 1e-4 {
			t.Errorf("step %d: loss %v with 2x2 processes, %v with one (relative %.2g)", i+1, a, want, d)
		}
	}
}
