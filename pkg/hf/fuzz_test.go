package hf_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ternml/tern/pkg/hf"
	"github.com/ternml/tern/pkg/model"
)

// FuzzImport feeds arbitrary config.json, index and weight bytes to the
// import path: it must return an error or a model, never panic. The
// safetensors header itself is fuzzed in pkg/safetensors (FuzzParse); this
// covers what pkg/hf adds on top (config defaults and refusals, the index,
// shape checks against the config, dtype widening, row copies).
func FuzzImport(f *testing.F) {
	fixture := filepath.Join("testdata", "tiny-llama")
	cfg, err := os.ReadFile(filepath.Join(fixture, hf.ConfigFile))
	if err != nil {
		f.Fatal(err)
	}
	weights, err := os.ReadFile(filepath.Join(fixture, hf.WeightsFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cfg, []byte(nil), weights)
	f.Add(cfg, []byte(`{"weight_map": {"model.norm.weight": "model.safetensors"}}`), weights)
	f.Add([]byte(`{"hidden_size": 16, "num_attention_heads": 0}`), []byte(nil), weights[:100])
	f.Add([]byte(`{"rope_parameters": {"rope_type": "yarn"}, "eos_token_id": [1, 2]}`), []byte(`{"weight_map": {"a": "../x"}}`), []byte{})
	f.Fuzz(func(t *testing.T, cfg, index, weights []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, hf.ConfigFile), cfg, 0o644)
		os.WriteFile(filepath.Join(dir, hf.WeightsFile), weights, 0o644)
		if index != nil {
			os.WriteFile(filepath.Join(dir, hf.IndexFile), index, 0o644)
		}
		d, err := hf.Open(dir)
		if err != nil {
			return
		}
		defer d.Close()
		c, err := d.Config.ModelConfig(8, "")
		if err != nil {
			return
		}
		// As OpenModel does: shapes are checked against the files (whose
		// sizes bound them) before a model is built.
		if err := d.Check(c); err != nil {
			return
		}
		m, err := model.New(c, 1, false)
		if err != nil {
			return
		}
		_ = d.Load(c, m.Params())
	})
}
