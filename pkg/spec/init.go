package spec

import "strings"

// InitSource is spec.model.init: where a job's initial weights come from.
// Empty means the seeded random initialisation; "hf:DIR" loads a Hugging
// Face LLaMA directory (config.json plus safetensors), which must describe
// exactly the job's model.
type InitSource string

// InitHFPrefix introduces a Hugging Face directory in spec.model.init.
const InitHFPrefix = "hf:"

// HFDir returns the directory of an "hf:DIR" source, and false for any
// other value.
func (s InitSource) HFDir() (string, bool) {
	dir, ok := strings.CutPrefix(string(s), InitHFPrefix)
	return dir, ok && dir != ""
}

// modelInit checks spec.model.init's syntax. Whether the directory exists
// and matches the model is checked where the job starts: the machine that
// parses a job (ternctl apply) need not be the one that reads the weights.
func (v validator) modelInit(s *JobSpec) {
	src := s.Model.Init
	if src == "" {
		return
	}
	if _, ok := src.HFDir(); ok {
		return
	}
	if string(src) == InitHFPrefix {
		v.es.add("spec.model.init", "%q names no directory; write hf:DIR with the path of a Hugging Face LLaMA directory", string(src))
		return
	}
	v.es.add("spec.model.init", "%q is not a known source (allowed: empty for random initialisation, or hf:DIR for a Hugging Face LLaMA directory)", string(src))
}
