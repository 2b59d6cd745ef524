package spec

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const goodDoc = `
apiVersion: tern/v1
kind: TrainingJob
metadata: {name: demo}
spec:
  seed: 1
  steps: 600
  model: {preset: small}
  data: {kind: dir, include: ["*.go"], tokenizer: byte, valFraction: 0.01}
  batch: {microBatchSize: 8, microBatches: 1}
  optimizer: {name: adamw, lr: 3e-3, minLR: 3e-4, warmupSteps: 50, schedule: cosine, weightDecay: 0.1, clipNorm: 1.0}
  eval: {everySteps: 100, batches: 8}
  checkpoint: {dir: "", everySteps: 0, keep: 2}
`

// minimal is the smallest valid document; tests append spec fields to it.
const minimal = "apiVersion: tern/v1\nkind: TrainingJob\nmetadata: {name: t}\nspec:\n  model: {preset: tiny}\n"

// noModel is minimal without its model section, for cases that set one.
const noModel = "apiVersion: tern/v1\nkind: TrainingJob\nmetadata: {name: t}\nspec:\n"

func TestParseGood(t *testing.T) {
	j, err := Parse([]byte(goodDoc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Metadata.Name != "demo" || j.Spec.Steps != 600 || j.Spec.Optimizer.LR != 3e-3 {
		t.Fatalf("decoded wrong: %+v", j)
	}
	// The preset is expanded into explicit fields.
	m := j.Spec.Model
	if m.Dim != 256 || m.Layers != 4 || m.Vocab != 256 || m.SeqLen != 256 || m.Tokenizer != "byte" {
		t.Fatalf("preset not expanded: %+v", m)
	}
	if got := j.TokensPerStep(); got != 8*256 {
		t.Fatalf("TokensPerStep = %d, want %d", got, 8*256)
	}
	c, err := m.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if c.NumParams() < 3_000_000 || c.NumParams() > 3_600_000 {
		t.Fatalf("small preset has %d params, want about 3.3M", c.NumParams())
	}
}

func TestExamplesParse(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	sub, _ := filepath.Glob("../../examples/*/*.yaml")
	files = append(files, sub...)
	if len(files) == 0 {
		t.Fatal("no examples found")
	}
	for _, f := range files {
		if _, err := Load(f, nil); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want []string // substrings that must all appear in the error
	}{
		{"unknown top-level field", minimal + "spec2: {}\n", []string{`spec2: unknown field "spec2" (allowed: apiVersion, kind, metadata, spec)`}},
		{"unknown spec field", minimal + "  stepz: 3\n", []string{`spec.stepz: unknown field`, `did you mean "steps"?`}},
		{"unknown nested field", minimal + "  optimizer: {lrr: 1}\n", []string{`spec.optimizer.lrr: unknown field "lrr"`, "allowed: name, lr, minLR"}},
		{"unknown metadata field", strings.Replace(minimal, "{name: t}", "{name: t, labels: {}}", 1), []string{`metadata.labels: unknown field`}},
		{"all problems at once", minimal + "  optimizer: {lrr: 1, name: adam}\n  batch: {microBatchSize: 0}\n", []string{"spec.optimizer.lrr", "spec.batch"}},
		{"wrong type int", minimal + "  steps: many\n", []string{`spec.steps: must be an integer, got string "many"`}},
		{"negative seed", minimal + "  seed: -1\n", []string{`spec.seed: must be a non-negative integer, got -1`}},
		{"include for tokens", minimal + "  data: {kind: tokens, path: x.tok, include: ['*.tok']}\n", []string{`spec.data.include: include and exclude only apply to kinds dir and jsonl`}},
		{"fractional int", minimal + "  steps: 1.5\n", []string{`spec.steps: must be an integer, got 1.5`}},
		{"wrong type number", minimal + "  optimizer: {lr: fast}\n", []string{`spec.optimizer.lr: must be a number`}},
		{"wrong type object", minimal + "  eval: 5\n", []string{`spec.eval: must be an object with fields (everySteps, batches), got number 5`}},
		{"wrong type list", minimal + "  data: {include: '*.go'}\n", []string{`spec.data.include: must be a list`}},
		{"wrong type string", strings.Replace(minimal, "{name: t}", "{name: 12}", 1), []string{`metadata.name: must be a string, got number 12 (quote it`}},
		{"wrong type bool", noModel + "  model: {preset: tiny, recompute: yes please}\n", []string{`spec.model.recompute: must be a boolean`}},
		{"optimizer name", minimal + "  optimizer: {name: adam}\n", []string{`spec.optimizer.name: "adam" is not supported (allowed: adamw, adafactor, came, adam-mini, galore, apollo, apollo-mini, microadam, grass, demo)`}},
		{"schedule", minimal + "  optimizer: {schedule: cos}\n", []string{`spec.optimizer.schedule: "cos" is not allowed (allowed: cosine, linear, constant)`}},
		{"micro batch size", minimal + "  batch: {microBatchSize: 0}\n", []string{`spec.batch.microBatchSize: must be >= 1, got 0`}},
		{"steps", minimal + "  steps: 0\n", []string{`spec.steps: must be >= 1, got 0`}},
		{"lr", minimal + "  optimizer: {lr: -1}\n", []string{`spec.optimizer.lr: must be > 0, got -1`}},
		{"minLR above lr", minimal + "  optimizer: {lr: 1e-3, minLR: 1e-2}\n", []string{`spec.optimizer.minLR: must be <= spec.optimizer.lr`}},
		{"beta", minimal + "  optimizer: {beta2: 1}\n", []string{`spec.optimizer.beta2: must be in [0, 1), got 1`}},
		{"data kind", minimal + "  data: {kind: csv}\n", []string{`spec.data.kind: "csv" is not allowed (allowed: dir, tokens, jsonl, text)`}},
		{"tokens needs path", minimal + "  data: {kind: tokens}\n", []string{`spec.data.path: required for kind tokens`}},
		{"text needs text", minimal + "  data: {kind: text}\n", []string{`spec.data.text: required for kind text`}},
		{"bad glob", minimal + "  data: {include: ['[']}\n", []string{`spec.data.include[0]: "[" is not a valid file-name pattern`}},
		{"valFraction", minimal + "  data: {valFraction: 0.9}\n", []string{`spec.data.valFraction: must be <= 0.5, got 0.9`}},
		{"eval without val split", minimal + "  data: {valFraction: 0}\n", []string{`spec.eval.everySteps: evaluation needs a validation split`}},
		{"missing apiVersion", strings.Replace(minimal, "apiVersion: tern/v1\n", "", 1), []string{`apiVersion: required (allowed: tern/v1)`}},
		{"wrong apiVersion", strings.Replace(minimal, "tern/v1", "tern/v2", 1), []string{`apiVersion: "tern/v2" is not supported (allowed: tern/v1)`}},
		{"missing kind", strings.Replace(minimal, "kind: TrainingJob\n", "", 1), []string{`kind: required (allowed: TrainingJob)`}},
		{"wrong kind", strings.Replace(minimal, "kind: TrainingJob", "kind: Job", 1), []string{`kind: "Job" is not supported (allowed: TrainingJob)`}},
		{"missing name", strings.Replace(minimal, "metadata: {name: t}\n", "", 1), []string{`metadata.name: required`}},
		{"bad name", strings.Replace(minimal, "{name: t}", "{name: My_Job}", 1), []string{`metadata.name: "My_Job" is not a valid name`}},
		{"unknown parallel field", minimal + "  parallel: {dp: 2}\n", []string{`spec.parallel.dp: unknown field "dp" (allowed: data, pipeline, schedule, vocabParallel, vocabAlgorithm)`}},
		{"parallel.data range", minimal + "  parallel: {data: 0}\n", []string{`spec.parallel.data: 0 is out of range: between 1 and 256 replicas`}},
		{"exchange name", minimal + "  communication: {exchange: fp16}\n", []string{`spec.communication.exchange: "fp16" is not supported (allowed: dense, bf16, none)`}},
		{"exchange none with replicas", minimal + "  parallel: {data: 2}\n  communication: {exchange: none}\n", []string{`spec.communication.exchange: none would let the 2 replicas drift apart`}},
		{"timeout", minimal + "  communication: {timeoutSeconds: 0}\n", []string{`spec.communication.timeoutSeconds: 0 must be a positive number of seconds`}},
		{"unknown snapshot field", minimal + "  snapshot: {every: 1}\n", []string{`spec.snapshot.every: unknown field "every" (allowed: everySteps, peerEverySteps, tolerate, dataShards)`}},
		{"section not object", minimal + "  communication: 3\n", []string{`spec.communication: must be an object`}},
		{"vocab tokenizer mismatch", noModel + "  data: {tokenizer: gpt2}\n  model: {preset: tiny, vocab: 256}\n", []string{`spec.model.vocab: 256 does not match spec.data.tokenizer "gpt2" (vocab 50257)`}},
		{"explicit vocab wrong", noModel + "  model: {preset: tiny, vocab: 1000}\n", []string{`spec.model.vocab: 1000 does not match spec.data.tokenizer "byte" (vocab 256)`}},
		{"model and data tokenizers disagree", noModel + "  model: {preset: tiny, tokenizer: gpt2}\n  data: {tokenizer: byte}\n", []string{`spec.data.tokenizer: "byte" does not match spec.model.tokenizer "gpt2"`}},
		{"unknown tokenizer", minimal + "  data: {tokenizer: sentencepiece}\n", []string{`spec.data.tokenizer: "sentencepiece" is not allowed (allowed: byte, gpt2, cl100k_base)`}},
		{"unknown preset", "apiVersion: tern/v1\nkind: TrainingJob\nmetadata: {name: t}\nspec:\n  model: {preset: huge}\n", []string{`spec.model.preset: "huge" is not allowed (allowed: tiny, small, medium, gpt2-shape)`}},
		{"no preset and no sizes", "apiVersion: tern/v1\nkind: TrainingJob\nmetadata: {name: t}\nspec: {}\n", []string{`spec.model.dim: required: set it or choose spec.model.preset`}},
		{"heads do not divide dim", noModel + "  model: {preset: tiny, heads: 3}\n", []string{`spec.model.dim: must be a multiple of spec.model.heads (3), got 64`}},
		{"kvHeads do not divide heads", noModel + "  model: {preset: tiny, kvHeads: 3}\n", []string{`spec.model.kvHeads: spec.model.heads (4) must be a multiple of kvHeads, got 3`}},
		{"duplicate key", minimal + "  steps: 1\n  steps: 2\n", []string{`parse YAML`}},
		{"not a mapping", "- a\n- b\n", []string{`document must be a mapping`}},
		{"empty", "", []string{`empty document`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc), nil)
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", c.doc)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestErrorsListsEveryProblem(t *testing.T) {
	doc := minimal + "  steps: 0\n  optimizer: {name: sgd, schedule: step}\n  batch: {microBatchSize: 0, microBatches: 0}\n"
	_, err := Parse([]byte(doc), nil)
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error is %T, want Errors: %v", err, err)
	}
	want := []string{"spec.batch.microBatchSize", "spec.batch.microBatches", "spec.optimizer.name", "spec.optimizer.schedule", "spec.steps"}
	var got []string
	for _, e := range es {
		got = append(got, e.Path)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("paths = %v, want %v (sorted, one per problem)", got, want)
	}
}

func TestDefaults(t *testing.T) {
	j, err := Parse([]byte(minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := j.Spec
	checks := []struct {
		name      string
		got, want any
	}{
		{"seed", s.Seed, uint64(1)},
		{"steps", s.Steps, 600},
		{"data.kind", s.Data.Kind, "dir"},
		{"data.include", s.Data.Include, []string{"*.go"}},
		{"data.exclude", s.Data.Exclude, []string{}},
		{"data.tokenizer (from the preset)", s.Data.Tokenizer, "byte"},
		{"data.valFraction", s.Data.ValFraction, 0.01},
		{"batch.microBatchSize", s.Batch.MicroBatchSize, 8},
		{"batch.microBatches", s.Batch.MicroBatches, 1},
		{"optimizer.name", s.Optimizer.Name, "adamw"},
		{"optimizer.lr", s.Optimizer.LR, 3e-3},
		{"optimizer.minLR (lr/10)", s.Optimizer.MinLR, 3e-4},
		{"optimizer.warmupSteps", s.Optimizer.WarmupSteps, 50},
		{"optimizer.schedule", s.Optimizer.Schedule, "cosine"},
		{"optimizer.weightDecay", s.Optimizer.WeightDecay, 0.1},
		{"optimizer.clipNorm", s.Optimizer.ClipNorm, 1.0},
		{"optimizer.beta1", s.Optimizer.Beta1, 0.9},
		{"optimizer.beta2", s.Optimizer.Beta2, 0.95},
		{"optimizer.eps", s.Optimizer.Eps, 1e-8},
		{"eval.everySteps", s.Eval.EverySteps, 100},
		{"eval.batches", s.Eval.Batches, 8},
		{"checkpoint.keep", s.Checkpoint.Keep, 2},
		{"model.ropeTheta", s.Model.RopeTheta, 10000.0},
		{"model.normEps", s.Model.NormEps, 1e-5},
		{"model.kvHeads", s.Model.KVHeads, 4},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

func TestExplicitZeroKept(t *testing.T) {
	j, err := Parse([]byte(minimal+"  eval: {everySteps: 0}\n  optimizer: {weightDecay: 0, clipNorm: 0, minLR: 0, warmupSteps: 0}\n  data: {valFraction: 0}\n  checkpoint: {keep: 0}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := j.Spec
	if s.Eval.EverySteps != 0 || s.Optimizer.WeightDecay != 0 || s.Optimizer.ClipNorm != 0 || s.Optimizer.MinLR != 0 ||
		s.Optimizer.WarmupSteps != 0 || s.Data.ValFraction != 0 || s.Checkpoint.Keep != 0 {
		t.Fatalf("explicit zeros were replaced by defaults: %+v", s)
	}
}

func TestDefaultForCodeBuiltJobs(t *testing.T) {
	j := &TrainingJob{Metadata: Metadata{Name: "x"}, Spec: JobSpec{Model: ModelSpec{Preset: "tiny"}, Optimizer: OptimizerSpec{LR: 1e-2}}}
	j.Default()
	if err := j.Validate(); err != nil {
		t.Fatalf("defaulted job does not validate: %v", err)
	}
	if j.Spec.Optimizer.MinLR != 1e-3 {
		t.Fatalf("minLR = %g, want lr/10", j.Spec.Optimizer.MinLR)
	}
	before := string(j.CanonicalJSON())
	j.Default()
	if after := string(j.CanonicalJSON()); after != before {
		t.Fatalf("Default is not idempotent:\n%s\n%s", before, after)
	}
}

func TestTokenizerChoosesVocab(t *testing.T) {
	j, err := Parse([]byte(minimal+"  data: {tokenizer: gpt2}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Spec.Model.Vocab != 50257 || j.Spec.Model.Tokenizer != "gpt2" {
		t.Fatalf("model = %+v, want the gpt2 vocabulary on the tiny shape", j.Spec.Model)
	}
	c, err := j.Spec.Model.Resolve()
	if err != nil || c.Vocab != 50257 || c.Dim != 64 {
		t.Fatalf("Resolve = %+v, %v", c, err)
	}
}

func TestResolveExplicitModel(t *testing.T) {
	m := ModelSpec{Dim: 32, Layers: 1, Heads: 2, FFN: 64, SeqLen: 16}
	c, err := m.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if c.Vocab != 256 || c.KVHeads != 2 || c.Tokenizer != "byte" || c.RopeTheta != 10000 || c.NormEps != 1e-5 {
		t.Fatalf("Resolve filled %+v", c)
	}
	m = ModelSpec{Preset: "small", Layers: 2}
	c, err = m.Resolve()
	if err != nil || c.Layers != 2 || c.Dim != 256 {
		t.Fatalf("override on preset: %+v, %v", c, err)
	}
	for _, bad := range []ModelSpec{
		{Preset: "small", Vocab: 300},
		{Preset: "nope"},
		{Preset: "small", Tokenizer: "wordpiece"},
		{Preset: "small", Heads: 5},
	} {
		if _, err := bad.Resolve(); err == nil || !strings.Contains(err.Error(), "spec.model.") {
			t.Errorf("Resolve(%+v) = %v, want an error naming a spec.model field", bad, err)
		}
	}
}

func TestSet(t *testing.T) {
	cases := []struct {
		name string
		sets []string
		get  func(*TrainingJob) any
		want any
	}{
		{"relative to spec", []string{"optimizer.lr=1e-3"}, func(j *TrainingJob) any { return j.Spec.Optimizer.LR }, 1e-3},
		{"from the root", []string{"spec.optimizer.lr=2e-3"}, func(j *TrainingJob) any { return j.Spec.Optimizer.LR }, 2e-3},
		{"top-level spec field", []string{"steps=10"}, func(j *TrainingJob) any { return j.Spec.Steps }, 10},
		{"metadata", []string{"metadata.name=other"}, func(j *TrainingJob) any { return j.Metadata.Name }, "other"},
		{"string that looks like a number", []string{"metadata.name=123"}, func(j *TrainingJob) any { return j.Metadata.Name }, "123"},
		{"creates sections", []string{"checkpoint.dir=/tmp/ck", "checkpoint.everySteps=50"}, func(j *TrainingJob) any { return j.Spec.Checkpoint }, CheckpointSpec{Dir: "/tmp/ck", EverySteps: 50, Keep: 2}},
		{"list", []string{"data.include=[*.go, '*.s']"}, func(j *TrainingJob) any { return j.Spec.Data.Include }, []string{"*.go", "*.s"}},
		{"empty list", []string{"data.exclude=[]"}, func(j *TrainingJob) any { return j.Spec.Data.Exclude }, []string{}},
		{"bool", []string{"model.recompute=true"}, func(j *TrainingJob) any { return j.Spec.Model.Recompute }, true},
		{"later wins", []string{"steps=10", "spec.steps=20"}, func(j *TrainingJob) any { return j.Spec.Steps }, 20},
		{"minLR follows an overridden lr", []string{"optimizer.lr=1e-2"}, func(j *TrainingJob) any { return j.Spec.Optimizer.MinLR }, 1e-3},
		{"integral float for int", []string{"steps=1e3"}, func(j *TrainingJob) any { return j.Spec.Steps }, 1000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j, err := Parse([]byte(minimal), c.sets)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.get(j); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

func TestSetErrors(t *testing.T) {
	cases := []struct {
		set  string
		want string
	}{
		{"optimizer.lrr=1", `spec.optimizer.lrr: unknown field "lrr"`},
		{"optimizer.lrr=1", `(from --set optimizer.lrr=1)`},
		{"nosuch=1", `nosuch: unknown field "nosuch"`},
		{"model.preset.size=1", `spec.model.preset is a string, not an object`},
		{"batch.microBatchSize=0", `spec.batch.microBatchSize: must be >= 1, got 0 (from --set batch.microBatchSize=0)`},
		{"steps=ten", `spec.steps: must be an integer, got string "ten" (from --set steps=ten)`},
		{"optimizer.lr=[1,2]", `spec.optimizer.lr: must be a number, got a list (from --set optimizer.lr=[1,2])`},
		{"data.include=*.go", `a list must be written [a,b]`},
		{"steps", `expected FIELD=VALUE`},
		{"=3", `expected FIELD=VALUE`},
		{"optimizer.name=sgd", `spec.optimizer.name: "sgd" is not supported (allowed: adamw, adafactor, came, adam-mini, galore, apollo, apollo-mini, microadam, grass, demo)`},
		{"spec..steps=1", `empty segment`},
	}
	for _, c := range cases {
		t.Run(c.set, func(t *testing.T) {
			_, err := Parse([]byte(minimal), []string{c.set})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(p, []byte(minimal+"  steps: -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p, nil)
	if err == nil || !strings.Contains(err.Error(), p+": spec.steps: must be >= 1") {
		t.Fatalf("Load error = %v, want it to name the file and the field", err)
	}
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 {
		t.Fatalf("Load error does not unwrap to one problem: %#v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), nil); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file error = %v", err)
	}
}

func TestCanonicalJSON(t *testing.T) {
	// The same job written two ways encodes to the same bytes.
	a, err := Parse([]byte(goodDoc), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte(`{"apiVersion":"tern/v1","kind":"TrainingJob","metadata":{"name":"demo"},"spec":{"model":{"preset":"small","dim":256},"optimizer":{"lr":0.003}}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, cb := a.CanonicalJSON(), b.CanonicalJSON()
	if string(ca) != string(cb) {
		t.Fatalf("canonical encodings differ:\n%s\n%s", ca, cb)
	}
	// It is the resolved job and it round-trips through Parse unchanged.
	var back map[string]any
	if err := json.Unmarshal(ca, &back); err != nil {
		t.Fatal(err)
	}
	if back["spec"].(map[string]any)["model"].(map[string]any)["layers"] != 4.0 {
		t.Fatalf("canonical JSON does not carry the expanded preset: %s", ca)
	}
	c, err := Parse(ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.CanonicalJSON()) != string(ca) {
		t.Fatalf("canonical JSON does not round-trip:\n%s\n%s", ca, c.CanonicalJSON())
	}
	// A change that matters changes the encoding.
	d, _ := Parse([]byte(goodDoc), []string{"seed=2"})
	if string(d.CanonicalJSON()) == string(ca) {
		t.Fatal("different seeds encode the same")
	}
}

func TestDefaultTagsDecode(t *testing.T) {
	// Every default tag must decode into its field: fillTagDefaults relies on it.
	var walk func(string, reflect.Type)
	walk = func(path string, typ reflect.Type) {
		for _, f := range fieldsOf(typ) {
			p := joinPath(path, f.name)
			if f.typ.Kind() == reflect.Struct {
				walk(p, f.typ)
				continue
			}
			if f.def == "" || f.def == "derived" {
				continue
			}
			if f.def == "reference" {
				// The section's reference configuration must have a field
				// of the same Go name that converts to the spec field.
				ref, ok := referenceDefault(path, f.goName)
				if !ok || !ref.Type().ConvertibleTo(f.typ) || ref.Kind() != f.typ.Kind() {
					t.Errorf("%s: no reference default of kind %s (pkg/optim field %s)", p, f.typ.Kind(), f.goName)
				}
				continue
			}
			if err := json.Unmarshal([]byte(f.def), reflect.New(f.typ).Interface()); err != nil {
				t.Errorf("%s: default tag %q: %v", p, f.def, err)
			}
		}
	}
	walk("", reflect.TypeOf(TrainingJob{}))
}

func TestEveryFieldDocumented(t *testing.T) {
	for _, p := range FieldPaths() {
		_, _, f, err := resolvePath(p)
		if err != nil {
			t.Fatal(err)
		}
		if f.desc == "" {
			t.Errorf("%s has no desc tag", p)
		}
	}
}

func TestExplain(t *testing.T) {
	out, err := Explain("optimizer")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"FIELD:    spec.optimizer <object>", "name", "allowed: adamw", "schedule", "allowed: cosine, linear, constant", "default: 3e-3", "lr/10"} {
		if !strings.Contains(out, w) {
			t.Errorf("Explain(optimizer) lacks %q:\n%s", w, out)
		}
	}
	same, _ := Explain("spec.optimizer")
	if same != out {
		t.Error("explain optimizer and spec.optimizer differ")
	}
	kindPrefixed, _ := Explain("TrainingJob.spec.optimizer")
	if kindPrefixed != out {
		t.Error("explain TrainingJob.spec.optimizer differs from spec.optimizer")
	}

	leaf, err := Explain("spec.model.preset")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"FIELD:    spec.model.preset <string>", "ALLOWED:  tiny, small, medium, gpt2-shape"} {
		if !strings.Contains(leaf, w) {
			t.Errorf("Explain(spec.model.preset) lacks %q:\n%s", w, leaf)
		}
	}
	root, err := Explain("")
	if err != nil || !strings.Contains(root, "KIND:     TrainingJob") || !strings.Contains(root, "spec ") {
		t.Errorf("Explain(\"\") = %q, %v", root, err)
	}
	if _, err := Explain("spec.optimiser"); err == nil || !strings.Contains(err.Error(), `did you mean "optimizer"?`) {
		t.Errorf("Explain(spec.optimiser) error = %v, want a suggestion", err)
	}
	if _, err := Explain("spec.steps.x"); err == nil || !strings.Contains(err.Error(), "not an object") {
		t.Errorf("Explain(spec.steps.x) error = %v", err)
	}
	rec, err := ExplainRecursive("spec.batch")
	if err != nil || rec != "spec.batch <object>\n  microBatchSize <integer>\n  microBatches <integer>\n" {
		t.Errorf("ExplainRecursive(spec.batch) = %q, %v", rec, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(goodDoc), "optimizer.lr=1e-3")
	f.Add([]byte(minimal), "data.include=[a,b]")
	f.Add([]byte(minimal+"  optimizer: {name: galore, galore: {rank: 4}}\n"), "optimizer.apollo-mini.scale=2")
	f.Add([]byte("spec: {model: {preset: tiny, heads: 0}}"), "steps=0")
	f.Fuzz(func(t *testing.T, doc []byte, set string) {
		j, err := Parse(doc, []string{set})
		if err != nil {
			return
		}
		// Whatever Parse accepts validates and encodes canonically.
		if err := j.Validate(); err != nil {
			t.Fatalf("Parse accepted a job that Validate rejects: %v", err)
		}
		if j.CanonicalJSON() == nil {
			t.Fatal("accepted job has no canonical encoding")
		}
	})
}

func TestSource(t *testing.T) {
	j, err := Parse([]byte(minimal+"  data: {path: /src, exclude: ['*_test.go'], valFraction: 0.02, cacheDir: /c}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	src := j.Spec.Data.Source()
	if src.Kind != "dir" || src.Path != "/src" || !reflect.DeepEqual(src.Include, []string{"*.go"}) ||
		!reflect.DeepEqual(src.Exclude, []string{"*_test.go"}) || src.Tokenizer != "byte" || src.ValFraction != 0.02 || src.CacheDir != "/c" {
		t.Fatalf("Source = %+v", src)
	}
	if err := src.Validate(); err != nil {
		t.Fatalf("pkg/data rejects the source of a valid spec: %v", err)
	}
	j, err = Parse([]byte(minimal+"  data: {kind: jsonl, path: d, valFraction: 0}\n  eval: {everySteps: 0}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	src = j.Spec.Data.Source()
	if src.ValFraction >= 0 || !reflect.DeepEqual(src.Include, []string{"*.jsonl"}) {
		t.Fatalf("jsonl source without validation = %+v; want a negative fraction (pkg/data's 'none') and *.jsonl", src)
	}
	if err := src.Validate(); err != nil {
		t.Fatalf("pkg/data rejects the source of a valid spec: %v", err)
	}
}

func TestRelativeDataPathFollowsTheFile(t *testing.T) {
	j, err := Load("../../examples/tiny.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join("..", "..", "examples", "tiny.txt")
	if j.Spec.Data.Path != want {
		t.Errorf("data.path from the file = %q, want %q (relative to the file)", j.Spec.Data.Path, want)
	}
	j, err = Load("../../examples/tiny.yaml", []string{"data.path=corpus.txt"})
	if err != nil {
		t.Fatal(err)
	}
	if j.Spec.Data.Path != "corpus.txt" {
		t.Errorf("data.path from --set = %q, want it left relative to the working directory", j.Spec.Data.Path)
	}
	j, err = Parse([]byte("apiVersion: tern/v1\nkind: TrainingJob\nmetadata: {name: x}\nspec: {model: {preset: tiny}, data: {path: rel}}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if j.Spec.Data.Path != "rel" {
		t.Errorf("Parse without a file changed data.path to %q", j.Spec.Data.Path)
	}
}

func TestRelativeInitDirFollowsTheFile(t *testing.T) {
	dir := t.TempDir()
	doc := "apiVersion: tern/v1\nkind: TrainingJob\nmetadata: {name: x}\nspec: {model: {preset: tiny, init: \"hf:weights\"}, data: {kind: text, text: abc}}\n"
	f := filepath.Join(dir, "job.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	j, err := Load(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := InitSource("hf:" + filepath.Join(dir, "weights")); j.Spec.Model.Init != want {
		t.Errorf("model.init from the file = %q, want %q (relative to the file)", j.Spec.Model.Init, want)
	}
	j, err = Load(f, []string{"model.init=hf:other"})
	if err != nil {
		t.Fatal(err)
	}
	if j.Spec.Model.Init != "hf:other" {
		t.Errorf("model.init from --set = %q, want it left relative to the working directory", j.Spec.Model.Init)
	}
	j, err = Load(f, []string{"model.init=hf:/abs/w"})
	if err != nil {
		t.Fatal(err)
	}
	if j.Spec.Model.Init != "hf:/abs/w" {
		t.Errorf("absolute model.init changed to %q", j.Spec.Model.Init)
	}
}
