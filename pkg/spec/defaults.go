package spec

import (
	"encoding/json"
	"reflect"
	"strconv"

	"github.com/ternml/tern/pkg/model"
)

// Default fills every zero-valued field that has a default (the `default`
// tags in types.go, and the derived defaults described there). It is for
// jobs built in code; Parse fills defaults only for fields the document
// leaves out, so an explicit zero in a file is kept.
func (j *TrainingJob) Default() {
	// A document must say what it is, so Parse never fills these.
	if j.APIVersion == "" {
		j.APIVersion = APIVersion
	}
	if j.Kind == "" {
		j.Kind = Kind
	}
	j.applyDefaults(func(string) bool { return false })
}

// applyDefaults fills fields that are zero and not present in the document.
func (j *TrainingJob) applyDefaults(present func(path string) bool) {
	s := &j.Spec
	m := &s.Model
	unset := func(field string, zero bool) bool { return zero && !present("spec.model."+field) }

	// The tokenizer decides the vocabulary, so settle it first: an explicit
	// model tokenizer wins, then the data's, then the preset's.
	p, perr := model.Preset(m.Preset)
	hasPreset := m.Preset != "" && perr == nil
	if unset("tokenizer", m.Tokenizer == "") {
		switch {
		case s.Data.Tokenizer != "":
			m.Tokenizer = s.Data.Tokenizer
		case hasPreset:
			m.Tokenizer = p.Tokenizer
		default:
			m.Tokenizer = "byte"
		}
	}
	if s.Data.Tokenizer == "" && !present("spec.data.tokenizer") {
		s.Data.Tokenizer = m.Tokenizer
	}
	if unset("vocab", m.Vocab == 0) {
		if v, ok := tokenizerVocab[m.Tokenizer]; ok {
			m.Vocab = v
		} else if hasPreset {
			m.Vocab = p.Vocab
		}
	}
	if hasPreset {
		fill := func(field string, dst *int, v int) {
			if unset(field, *dst == 0) {
				*dst = v
			}
		}
		fill("dim", &m.Dim, p.Dim)
		fill("layers", &m.Layers, p.Layers)
		fill("heads", &m.Heads, p.Heads)
		fill("kvHeads", &m.KVHeads, p.KVHeads)
		fill("ffn", &m.FFN, p.FFN)
		fill("seqLen", &m.SeqLen, p.SeqLen)
		if unset("ropeTheta", m.RopeTheta == 0) {
			m.RopeTheta = p.RopeTheta
		}
		if unset("normEps", m.NormEps == 0) {
			m.NormEps = p.NormEps
		}
	}
	if unset("kvHeads", m.KVHeads == 0) {
		m.KVHeads = m.Heads
	}

	fillTagDefaults("", reflect.ValueOf(j).Elem(), present)
	s.Optimizer.applyDefaults(present)
	if s.Communication.Exchange == "" && !present("spec.communication.exchange") {
		s.Communication.Exchange = "dense"
		if s.Optimizer.Name == "demo" {
			s.Communication.Exchange = "none"
		}
	}

	if s.Data.Include == nil && !present("spec.data.include") {
		switch s.Data.Kind {
		case "dir":
			s.Data.Include = []string{"*.go"}
		case "jsonl":
			s.Data.Include = []string{"*.jsonl"}
		default:
			s.Data.Include = []string{}
		}
	}

	if s.Optimizer.MinLR == 0 && !present("spec.optimizer.minLR") {
		// Rounded to 15 significant digits so lr 3e-3 gives 3e-4, not
		// 3.0000000000000003e-4: the value shows up in explain and JSON.
		s.Optimizer.MinLR, _ = strconv.ParseFloat(strconv.FormatFloat(s.Optimizer.LR/10, 'g', 15, 64), 64)
	}
}

// fillTagDefaults sets each zero, absent field from its `default` tag.
func fillTagDefaults(path string, v reflect.Value, present func(string) bool) {
	for _, f := range fieldsOf(v.Type()) {
		p := joinPath(path, f.name)
		fv := v.Field(f.index)
		if f.ptr {
			// An optional section is filled only where it exists: the
			// chosen optimizer's is created by applyDefaults.
			if fv.IsNil() {
				continue
			}
			fv = fv.Elem()
		}
		if f.typ.Kind() == reflect.Struct {
			fillTagDefaults(p, fv, present)
			continue
		}
		if f.def == "" || f.def == "derived" || present(p) || !fv.IsZero() {
			continue
		}
		if f.def == "reference" {
			ref, ok := referenceDefault(path, f.goName)
			if !ok {
				panic("spec: no reference default for " + p)
			}
			fv.Set(ref.Convert(fv.Type()))
			continue
		}
		// The tags are compile-time constants checked by TestDefaultTagsDecode,
		// so a failure here cannot come from user input.
		if err := json.Unmarshal([]byte(f.def), fv.Addr().Interface()); err != nil {
			panic("spec: bad default tag on " + p + ": " + err.Error())
		}
	}
}

// TokensPerStep is the number of tokens one optimizer step trains on, over
// all data-parallel replicas.
func (j *TrainingJob) TokensPerStep() int {
	return max(j.Spec.Parallel.Data, 1) * j.Spec.Batch.MicroBatchSize * j.Spec.Batch.MicroBatches * j.Spec.Model.SeqLen
}

// CanonicalJSON encodes the job with every default filled and the model
// preset expanded, in a fixed field order, so that two jobs that train the
// same way encode to the same bytes. Checkpoints store it; a resume compares
// it. The job must be resolved (returned by Parse or Load, or passed through
// Default); CanonicalJSON does not fill defaults itself, because that would
// turn an explicit zero into the default. It returns nil only for a job that
// Validate rejects (a non-finite number cannot be encoded).
func (j *TrainingJob) CanonicalJSON() []byte {
	c := *j
	// nil and empty lists mean the same; encode both as [].
	c.Spec.Data.Include = append([]string{}, j.Spec.Data.Include...)
	c.Spec.Data.Exclude = append([]string{}, j.Spec.Data.Exclude...)
	b, err := json.Marshal(&c)
	if err != nil {
		return nil
	}
	return b
}
