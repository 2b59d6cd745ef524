// Package spec defines the TrainingJob: the YAML document a user writes to
// describe a training run, shaped like a Kubernetes object
// (apiVersion/kind/metadata/spec).
//
// Load and Parse read a document strictly: an unknown field, a value of the
// wrong type or a bad value is an error that names the field path and, where
// there is a closed set, the allowed values. All problems are reported at
// once (see Errors), so a user fixes a spec in one pass. "--set a.b=c"
// overrides are applied to the document before it is checked, with paths
// relative to the object root or to spec.
//
// Defaults are filled only for fields the document leaves out, so an explicit
// zero (eval.everySteps: 0 turns evaluation off) survives. The field
// reference that Explain prints, the defaults and the closed value sets all
// come from the struct tags and the enums table in types.go: one source of
// truth for the parser, the validator and `ternctl explain`. The optimizer
// sections (spec.optimizer.galore, ...) are the exception that proves the
// rule: their defaults are read from pkg/optim's Default*Config functions, so
// each reference value is written once, next to the code that uses it.
//
// CanonicalJSON gives a stable encoding of the resolved job (defaults filled,
// model preset expanded) that checkpoints store, so a resume can tell whether
// it runs the same job.
package spec
