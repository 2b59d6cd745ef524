package spec

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/ternml/tern/pkg/model"
)

// maxNameLen matches the Kubernetes limit on label values, so job names can
// become labels and file names unchanged.
const maxNameLen = 63

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// Validate reports every problem with a resolved job (one returned by Parse,
// or passed through Default) as Errors, each naming the field path and what
// is allowed. It returns nil for a job that can run.
func (j *TrainingJob) Validate() error {
	var es Errors
	v := validator{es: &es, enums: enums()}

	v.enum("apiVersion", j.APIVersion, "supported")
	v.enum("kind", j.Kind, "supported")
	switch n := j.Metadata.Name; {
	case n == "":
		es.add("metadata.name", "required: a name for the job, e.g. demo")
	case len(n) > maxNameLen || !nameRE.MatchString(n):
		es.add("metadata.name", "%q is not a valid name (lowercase letters, digits, '-' and '.', at most %d characters, starting and ending with a letter or digit)", n, maxNameLen)
	}

	s := &j.Spec
	v.minInt("spec.steps", s.Steps, 1)
	v.model(s)
	v.modelInit(s)
	v.data(s)
	v.minInt("spec.batch.microBatchSize", s.Batch.MicroBatchSize, 1)
	v.minInt("spec.batch.microBatches", s.Batch.MicroBatches, 1)
	v.optimizer(&s.Optimizer)

	v.minInt("spec.eval.everySteps", s.Eval.EverySteps, 0)
	if s.Eval.EverySteps > 0 {
		v.minInt("spec.eval.batches", s.Eval.Batches, 1)
		if s.Data.ValFraction == 0 {
			es.add("spec.eval.everySteps", "evaluation needs a validation split, but spec.data.valFraction is 0; set valFraction > 0 or everySteps: 0")
		}
	}
	v.minInt("spec.checkpoint.everySteps", s.Checkpoint.EverySteps, 0)
	v.minInt("spec.checkpoint.keep", s.Checkpoint.Keep, 0)

	v.parallel(s)
	v.restartPolicy(s)
	v.snapshot(s)
	v.device(s)
	return es.err()
}

type validator struct {
	es    *Errors
	enums map[string][]string
}

func (v validator) enum(path, val, verb string) {
	allowed := v.enums[path]
	if slices.Contains(allowed, val) {
		return
	}
	if val == "" {
		v.es.add(path, "required (allowed: %s)", strings.Join(allowed, ", "))
		return
	}
	v.es.add(path, "%q is not %s (allowed: %s)", val, verb, strings.Join(allowed, ", "))
}

func (v validator) minInt(path string, got, lo int) {
	if got < lo {
		v.es.add(path, "must be >= %d, got %d", lo, got)
	}
}

// num checks a float lies in [lo, hi] (or (lo, hi] when openLo).
func (v validator) num(path string, got, lo, hi float64, openLo bool) {
	switch {
	case math.IsNaN(got) || math.IsInf(got, 0):
		v.es.add(path, "must be a finite number, got %g", got)
	case openLo && got <= lo:
		v.es.add(path, "must be > %g, got %g", lo, got)
	case got < lo:
		v.es.add(path, "must be >= %g, got %g", lo, got)
	case got > hi:
		v.es.add(path, "must be <= %g, got %g", hi, got)
	}
}

func (v validator) model(s *JobSpec) {
	m := &s.Model
	if m.Preset != "" {
		v.enum("spec.model.preset", m.Preset, "allowed")
	}
	before := len(*v.es)
	ints := []struct {
		name string
		val  int
	}{{"vocab", m.Vocab}, {"dim", m.Dim}, {"layers", m.Layers}, {"heads", m.Heads}, {"kvHeads", m.KVHeads}, {"ffn", m.FFN}, {"seqLen", m.SeqLen}}
	for _, f := range ints {
		if f.val < 1 {
			if f.val == 0 && m.Preset == "" {
				v.es.add("spec.model."+f.name, "required: set it or choose spec.model.preset (allowed: %s)", strings.Join(model.PresetNames(), ", "))
				continue
			}
			v.es.add("spec.model."+f.name, "must be >= 1, got %d", f.val)
		}
	}
	v.num("spec.model.ropeTheta", m.RopeTheta, 0, math.MaxFloat64, true)
	v.num("spec.model.normEps", m.NormEps, 0, 1, true)
	if len(*v.es) == before {
		if m.Dim%m.Heads != 0 {
			v.es.add("spec.model.dim", "must be a multiple of spec.model.heads (%d), got %d", m.Heads, m.Dim)
		} else if (m.Dim/m.Heads)%2 != 0 {
			v.es.add("spec.model.heads", "dim/heads = %d must be even for rotary embeddings (RoPE rotates pairs)", m.Dim/m.Heads)
		}
		if m.Heads%m.KVHeads != 0 {
			v.es.add("spec.model.kvHeads", "spec.model.heads (%d) must be a multiple of kvHeads, got %d", m.Heads, m.KVHeads)
		}
	}
	v.enum("spec.model.tokenizer", m.Tokenizer, "allowed")
	v.enum("spec.data.tokenizer", s.Data.Tokenizer, "allowed")
	if m.Tokenizer != "" && s.Data.Tokenizer != "" && m.Tokenizer != s.Data.Tokenizer {
		v.es.add("spec.data.tokenizer", "%q does not match spec.model.tokenizer %q; the model's vocabulary must come from the data's tokenizer", s.Data.Tokenizer, m.Tokenizer)
	}
	if want, ok := tokenizerVocab[s.Data.Tokenizer]; ok && m.Vocab > 0 && m.Vocab != want {
		v.es.add("spec.model.vocab", "%d does not match spec.data.tokenizer %q (vocab %d); set spec.model.vocab: %d or drop it", m.Vocab, s.Data.Tokenizer, want, want)
	}
	// The model package has the last word on what it can build; report its
	// objection only if the checks above found nothing, to avoid saying the
	// same thing twice.
	if len(*v.es) == before {
		if _, err := m.Resolve(); err != nil {
			v.es.add("", "%v", err) // err names its field
		}
	}
}

func (v validator) data(s *JobSpec) {
	d := &s.Data
	v.enum("spec.data.kind", d.Kind, "allowed")
	switch d.Kind {
	case "tokens", "jsonl":
		if d.Path == "" {
			v.es.add("spec.data.path", "required for kind %s: the file to read", d.Kind)
		}
	case "text":
		if d.Text == "" {
			v.es.add("spec.data.text", "required for kind text: the corpus itself")
		}
		if d.Path != "" {
			v.es.add("spec.data.path", "not used with kind text (the corpus is spec.data.text); remove it")
		}
	case "dir":
		if len(d.Include) == 0 {
			v.es.add("spec.data.include", "must list at least one pattern for kind dir, e.g. [\"*.go\"]")
		}
	}
	if (d.Kind == "tokens" || d.Kind == "text") && len(d.Include)+len(d.Exclude) > 0 {
		v.es.add("spec.data.include", "include and exclude only apply to kinds dir and jsonl, got kind %s; remove them", d.Kind)
	}
	if d.Kind != "text" && d.Text != "" {
		v.es.add("spec.data.text", "only used with kind text, got kind %s", d.Kind)
	}
	for name, pats := range map[string][]string{"include": d.Include, "exclude": d.Exclude} {
		for i, p := range pats {
			if _, err := filepath.Match(p, ""); err != nil || p == "" {
				v.es.add(fmt.Sprintf("spec.data.%s[%d]", name, i), "%q is not a valid file-name pattern (path/filepath.Match syntax, e.g. *.go)", p)
			}
		}
	}
	v.num("spec.data.valFraction", d.ValFraction, 0, 0.5, false)
}

func (v validator) optimizer(o *OptimizerSpec) {
	o.validate(v)
	v.enum("spec.optimizer.schedule", o.Schedule, "allowed")
	v.num("spec.optimizer.lr", o.LR, 0, math.MaxFloat64, true)
	v.num("spec.optimizer.minLR", o.MinLR, 0, math.MaxFloat64, false)
	if o.MinLR > o.LR && o.LR > 0 {
		v.es.add("spec.optimizer.minLR", "must be <= spec.optimizer.lr (%g), got %g", o.LR, o.MinLR)
	}
	v.minInt("spec.optimizer.warmupSteps", o.WarmupSteps, 0)
	v.num("spec.optimizer.clipNorm", o.ClipNorm, 0, math.MaxFloat64, false)
}

// Resolve turns the model section into a model.Config: the preset (if any)
// first, then every explicit field on top; the tokenizer defaults to byte and
// the vocabulary and kvHeads to what the tokenizer and heads imply. It checks
// that the vocabulary matches the tokenizer and that the model package can
// build the result.
func (m *ModelSpec) Resolve() (model.Config, error) {
	var c model.Config
	if m.Preset != "" {
		p, err := model.Preset(m.Preset)
		if err != nil {
			return model.Config{}, fmt.Errorf("spec.model.preset: %w", err)
		}
		c = p
	}
	setInt := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	setInt(&c.Dim, m.Dim)
	setInt(&c.Layers, m.Layers)
	setInt(&c.Heads, m.Heads)
	setInt(&c.KVHeads, m.KVHeads)
	setInt(&c.FFN, m.FFN)
	setInt(&c.SeqLen, m.SeqLen)
	if m.RopeTheta != 0 {
		c.RopeTheta = m.RopeTheta
	}
	if m.NormEps != 0 {
		c.NormEps = m.NormEps
	}
	if m.Tokenizer != "" {
		c.Tokenizer = m.Tokenizer
	}
	if c.Tokenizer == "" {
		c.Tokenizer = "byte"
	}
	want, ok := tokenizerVocab[c.Tokenizer]
	if !ok {
		return model.Config{}, fmt.Errorf("spec.model.tokenizer: %q is not allowed (allowed: %s)", c.Tokenizer, strings.Join(TokenizerNames, ", "))
	}
	switch {
	case m.Vocab != 0:
		c.Vocab = m.Vocab
	case m.Tokenizer != "" || c.Vocab == 0:
		c.Vocab = want
	}
	if c.Vocab != want {
		return model.Config{}, fmt.Errorf("spec.model.vocab: %d does not match tokenizer %q (vocab %d)", c.Vocab, c.Tokenizer, want)
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if c.RopeTheta == 0 {
		c.RopeTheta = model.DefaultRopeTheta
	}
	if c.NormEps == 0 {
		c.NormEps = model.DefaultNormEps
	}
	if err := c.Validate(); err != nil {
		return model.Config{}, fmt.Errorf("spec.%w", err)
	}
	return c, nil
}

// parallel checks the layout and which gradient exchange goes with which
// optimizer: demo exchanges its own compressed momentum and takes none;
// every other optimizer needs its gradients all-reduced (dense or bf16) as
// soon as there is more than one replica.
func (v validator) parallel(s *JobSpec) {
	p, c := s.Parallel, s.Communication
	if p.Data < 1 || p.Data > MaxDataParallel {
		v.es.add("spec.parallel.data", "%d is out of range: between 1 and %d replicas", p.Data, MaxDataParallel)
	}
	switch {
	case p.Pipeline < 1:
		v.es.add("spec.parallel.pipeline", "%d is out of range: at least 1 stage", p.Pipeline)
	case s.Model.Layers > 0 && p.Pipeline > s.Model.Layers:
		v.es.add("spec.parallel.pipeline", "%d stages for %d layers: every stage needs at least one block, so at most %d", p.Pipeline, s.Model.Layers, s.Model.Layers)
	case p.Data >= 1 && p.Data*p.Pipeline > MaxDataParallel:
		v.es.add("spec.parallel.pipeline", "data × pipeline = %d workers, more than %d", p.Data*p.Pipeline, MaxDataParallel)
	case p.VocabParallel && s.Model.Vocab > 0 && s.Model.Vocab < p.Pipeline:
		v.es.add("spec.parallel.pipeline", "%d stages but a vocabulary of %d: vocabulary parallelism gives every stage at least one row", p.Pipeline, s.Model.Vocab)
	}
	v.enum("spec.parallel.schedule", p.Schedule, "supported")
	if p.VocabAlgorithm != 1 && p.VocabAlgorithm != 2 {
		v.es.add("spec.parallel.vocabAlgorithm", "%d is not allowed (allowed: 1, 2)", p.VocabAlgorithm)
	}
	if p.Pipeline > 1 {
		if n := s.Optimizer.Name; p.VocabParallel && (n == "adafactor" || n == "came") {
			v.es.add("spec.optimizer.name", "%s factors the second moment over whole rows and columns, but with parallel.vocabParallel the embedding and head are split by rows over the %d stages; use parallel.vocabParallel: false or another optimizer", n, p.Pipeline)
		}
	}
	v.enum("spec.communication.exchange", c.Exchange, "supported")
	if !(c.TimeoutSeconds > 0) || math.IsInf(c.TimeoutSeconds, 0) {
		v.es.add("spec.communication.timeoutSeconds", "%v must be a positive number of seconds", c.TimeoutSeconds)
	}
	demo := s.Optimizer.Name == "demo"
	switch {
	case demo && c.Exchange != "none" && slices.Contains(ExchangeNames, c.Exchange):
		v.es.add("spec.communication.exchange", "%q does not go with optimizer demo, which exchanges its own compressed momentum; use none (the default for demo) and set the wire format in optimizer.demo.values", c.Exchange)
	case !demo && c.Exchange == "none" && p.Data > 1:
		v.es.add("spec.communication.exchange", "none would let the %d replicas drift apart: optimizer %s needs its gradients all-reduced; use dense or bf16 (or optimizer demo, which exchanges compressed momentum)", p.Data, s.Optimizer.Name)
	}
}
