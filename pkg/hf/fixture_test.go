package hf_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/hf"
	"github.com/ternml/tern/pkg/model"
)

var update = flag.Bool("update", false, "rewrite testdata/tiny-llama from the current exporter")

// fixtureConfig is the model of testdata/tiny-llama: small enough to check
// in (about 60 KB), with grouped-query attention.
var fixtureConfig = model.Config{Vocab: 256, Dim: 16, Layers: 2, Heads: 2, KVHeads: 1, FFN: 32, SeqLen: 32, RopeTheta: 10000, NormEps: 1e-5, Tokenizer: "byte"}

const fixtureSeed = 2024

// The exporter's output for a fixed model is checked in: any change to the
// file format (header layout, config keys, README) shows up as a diff here
// and must be deliberate (go test ./pkg/hf -run Fixture -update). The
// checked-in directory also imports back to the same weights.
func TestFixture(t *testing.T) {
	m, err := model.New(fixtureConfig, fixtureSeed, false)
	if err != nil {
		t.Fatal(err)
	}
	fixture := filepath.Join("testdata", "tiny-llama")
	out := t.TempDir()
	if *update {
		out = fixture
	}
	w, err := hf.Write(out, fixtureConfig, tensorsOf(m), hf.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range w.Files {
		got, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(fixture, f))
		if err != nil {
			t.Fatalf("%v (regenerate with -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from testdata (%d vs %d bytes); if the change is intended, regenerate with -update", f, len(got), len(want))
		}
	}
	back, err := hf.OpenModel(fixture, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if back.Config() != fixtureConfig {
		t.Fatalf("fixture config %+v, want %+v", back.Config(), fixtureConfig)
	}
	for i, p := range back.Params() {
		sameBits(t, p.Name, p.W, m.Params()[i].W)
	}
	var cfg map[string]any
	b, _ := os.ReadFile(filepath.Join(fixture, hf.ConfigFile))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"hidden_size": 16.0, "intermediate_size": 32.0, "num_hidden_layers": 2.0, "num_attention_heads": 2.0,
		"num_key_value_heads": 1.0, "vocab_size": 256.0, "max_position_embeddings": 32.0, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
		"tie_word_embeddings": false, "torch_dtype": "float32", "model_type": "llama"} {
		if cfg[k] != v {
			t.Errorf("config.json %s = %v, want %v", k, cfg[k], v)
		}
	}
}

// GPT-2's tokenizer files come out of the embedded r50k_base ranks with
// the values of OpenAI's published vocab.json and merges.txt.
func TestGPT2TokenizerFiles(t *testing.T) {
	c := fixtureConfig
	c.Vocab, c.Tokenizer = 50257, "gpt2"
	dir := t.TempDir()
	m, err := model.New(model.Config{Vocab: c.Vocab, Dim: 8, Layers: 1, Heads: 1, KVHeads: 1, FFN: 8, SeqLen: 8, RopeTheta: 1e4, NormEps: 1e-5, Tokenizer: "gpt2"}, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hf.Write(dir, m.Config(), tensorsOf(m), hf.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	var vocab map[string]int
	b, _ := os.ReadFile(filepath.Join(dir, "vocab.json"))
	if err := json.Unmarshal(b, &vocab); err != nil {
		t.Fatal(err)
	}
	if len(vocab) != 50257 {
		t.Errorf("vocab.json has %d entries, want 50257", len(vocab))
	}
	for tok, id := range map[string]int{"!": 0, "Ġthe": 262, "Ġt": 256, "<|endoftext|>": 50256, "Ċ": 198} {
		if vocab[tok] != id {
			t.Errorf("vocab.json[%q] = %d, want %d", tok, vocab[tok], id)
		}
	}
	mb, _ := os.ReadFile(filepath.Join(dir, "merges.txt"))
	lines := strings.Split(strings.TrimRight(string(mb), "\n"), "\n")
	if len(lines) != 50001 || lines[0] != "#version: 0.2" || lines[1] != "Ġ t" || lines[2] != "Ġ a" {
		t.Errorf("merges.txt: %d lines starting %q", len(lines), lines[:min(3, len(lines))])
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, hf.ConfigFile))
	if !strings.Contains(string(cfg), `"eos_token_id": 50256`) {
		t.Errorf("config.json has no eos_token_id 50256:\n%s", cfg)
	}
}
