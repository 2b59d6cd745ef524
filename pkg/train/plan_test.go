package train

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/spec"
)

// The plan's parameter list must be the model's, name for name, so that
// optimizer state (keyed by name and role) is planned for the right tensors.
func TestModelParamShapesMatchModel(t *testing.T) {
	tiny, err := model.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	gqa := tiny
	gqa.KVHeads = 2 // grouped-query: k/v projections narrower than q
	gqa.Layers = 3
	for _, c := range []model.Config{tiny, gqa} {
		m, err := model.New(c, 1, false)
		if err != nil {
			t.Fatal(err)
		}
		got := ModelParamShapes(c)
		want := optim.ShapesOf(m.Params())
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("KVHeads=%d: ModelParamShapes differs from model.New's parameters:\n got %v\nwant %v", c.KVHeads, got, want)
		}
		var n int64
		for _, s := range got {
			n += int64(s.Size())
		}
		if n != c.NumParams() {
			t.Fatalf("shapes hold %d parameters, Config.NumParams says %d", n, c.NumParams())
		}
	}
}

// optimizerJobs are the example jobs of every optimizer plus variants whose
// settings change the state layout.
func optimizerJobs(t *testing.T) map[string]*spec.TrainingJob {
	t.Helper()
	files, err := filepath.Glob("../../examples/optimizers/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example optimizer jobs: %v", err)
	}
	text, err := filepath.Abs("../../examples/tiny.txt")
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	load := func(file string, sets ...string) *spec.TrainingJob {
		sets = append([]string{"data.path=" + text, "data.cacheDir=" + cache, "steps=1", "eval.everySteps=0"}, sets...)
		job, err := spec.Load(file, sets)
		if err != nil {
			t.Fatalf("%s %v: %v", file, sets, err)
		}
		return job
	}
	jobs := map[string]*spec.TrainingJob{}
	seen := map[string]bool{}
	for _, f := range files {
		job := load(f)
		seen[job.Spec.Optimizer.Name] = true
		jobs[filepath.Base(f)] = job
	}
	for _, name := range spec.OptimizerNames {
		if !seen[name] {
			t.Fatalf("examples/optimizers has no job for optimizer %q", name)
		}
	}
	dir := "../../examples/optimizers/"
	jobs["galore reverse_std rank 40"] = load(dir+"galore.yaml", "optimizer.galore.projType=reverse_std", "optimizer.galore.rank=40")
	jobs["adafactor beta1"] = load(dir+"adafactor.yaml", "optimizer.beta1=0.9")
	jobs["grass uniform rank 100"] = load(dir+"grass.yaml", "optimizer.grass.selection=uniform", "optimizer.grass.rank=100")
	jobs["apollo rank 3"] = load(dir+"apollo.yaml", "optimizer.apollo.rank=3")
	jobs["adamw recompute"] = load(dir+"adamw.yaml", "model.recompute=true")
	return jobs
}

// For every optimizer the spec can name, the planned state and gradient
// bytes are exactly what the built optimizer reports, and a one-step run's
// summary agrees with the plan line by line.
func TestPlanMatchesBuiltOptimizers(t *testing.T) {
	for name, job := range optimizerJobs(t) {
		t.Run(name, func(t *testing.T) {
			p, err := Plan(job)
			if err != nil {
				t.Fatal(err)
			}
			r, err := newRunner(context.Background(), job, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := r.opt.StateBytes(); p.OptimizerState != got {
				t.Fatalf("planned optimizer state %d bytes, %s reports %d", p.OptimizerState, job.Spec.Optimizer.Name, got)
			}
			// Before the first step GRASS holds the full gradient for its
			// selection and the selected rows: the peak the plan's
			// transient line covers.
			if g := r.memory().Grads; g != p.Grads+p.Transient {
				t.Fatalf("gradients before the first step: %d bytes, plan says %d steady + %d transient", g, p.Grads, p.Transient)
			}
			sum, err := r.loop(context.Background(), nopObserver{})
			if err != nil {
				t.Fatal(err)
			}
			m := sum.Memory
			want := Memory{Weights: p.Weights, Grads: p.Grads, Optimizer: p.OptimizerState, Activations: p.Activations + p.Workspace, Data: p.Data}
			if job.Spec.Optimizer.Name == "grass" {
				// The run's summary counts the model's buffers; the gather
				// scratch of row-selected gradients lives in the stage.
				cfg, _ := job.Spec.Model.Resolve()
				rows := grassMaxRows(ModelParamShapes(cfg), job.Spec.Optimizer.GrassConfig().Rank)
				want.Activations -= 4 * int64(job.Spec.Batch.MicroBatchSize*cfg.SeqLen*rows)
			}
			if m != want {
				t.Fatalf("run summary memory %+v, plan %+v", m, want)
			}
			if p.DataSource != DataFromFiles || p.TokeniseMax != p.Data+tokeniseBatchBytes {
				t.Fatalf("data source %q, tokenising bound %d: want %q and data + one text batch for the byte tokenizer over a file", p.DataSource, p.TokeniseMax, DataFromFiles)
			}
			if p.Total != p.Weights+p.Grads+p.OptimizerState+p.Activations+p.Workspace+p.Data+p.Transient+p.OptimizerTransient+p.Runtime {
				t.Fatalf("total %d is not the sum of the lines %+v", p.Total, p)
			}
			// Only GaLore holds working memory of its own between steps
			// (its SVD buffers at refreshes).
			if (p.OptimizerTransient > 0) != (job.Spec.Optimizer.Name == "galore") {
				t.Fatalf("%s: optimizer transient %d bytes", job.Spec.Optimizer.Name, p.OptimizerTransient)
			}
		})
	}
}

func TestPlanDataEstimates(t *testing.T) {
	c, err := model.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	if n, src := estimateData(&spec.DataSpec{Kind: "text", Text: "hello", Tokenizer: "byte"}, c); n != 6 || src != DataFromText {
		t.Fatalf("inline text: %d bytes (%s), want 6 (five bytes and a separator)", n, src)
	}
	gpt2, err := model.Preset("gpt2-shape")
	if err != nil {
		t.Fatal(err)
	}
	if n, src := estimateData(&spec.DataSpec{Kind: "text", Text: "hello", Tokenizer: "gpt2"}, gpt2); n != 0 || src != DataUnknown {
		t.Fatalf("BPE over text: %d bytes (%s), want unknown", n, src)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.go"), strings.Repeat("x", 100))
	writeFile(t, filepath.Join(dir, "sub", "b.go"), strings.Repeat("y", 50))
	writeFile(t, filepath.Join(dir, "sub", "c.txt"), strings.Repeat("z", 70))
	writeFile(t, filepath.Join(dir, ".git", "d.go"), strings.Repeat("w", 70))
	for _, tc := range []struct {
		include, exclude []string
		want             int64
		src              string
	}{
		{nil, nil, 100 + 50 + 2, DataFromFiles},
		{[]string{"*.txt", "*.go"}, []string{"sub/b.go"}, 100 + 70 + 2, DataFromFiles},
		{[]string{"**/*.go"}, nil, 0, DataUnknown},
	} {
		n, src := estimateData(&spec.DataSpec{Kind: "dir", Path: dir, Include: tc.include, Exclude: tc.exclude, Tokenizer: "byte"}, c)
		if n != tc.want || src != tc.src {
			t.Errorf("include %q exclude %q: %d bytes (%s), want %d (%s)", tc.include, tc.exclude, n, src, tc.want, tc.src)
		}
	}
}

// The runtime term grows with the GEMM panels of the model's shapes and the
// tokenizer, never below the Go runtime's base.
func TestRuntimeBytes(t *testing.T) {
	tiny, _ := model.Preset("tiny")
	gpt2, _ := model.Preset("gpt2-shape")
	rt, rg := RuntimeBytes(tiny, 8, 64), RuntimeBytes(gpt2, 4, 64)
	// gpt2-shape: L = vocab, packed panels 4·256·(4096+4080) bytes.
	if want := int64(goBaseBytes + gpt2TableBytes + 4*256*(4096+4080)); rg != want {
		t.Fatalf("gpt2-shape runtime %d, want %d", rg, want)
	}
	if rt <= goBaseBytes || rt >= rg {
		t.Fatalf("tiny runtime %d should lie between the base %d and gpt2-shape's %d", rt, goBaseBytes, rg)
	}
}

func writeFile(t *testing.T, name, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
