package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/ternml/tern/pkg/model"
)

// File names of a Hugging Face model directory.
const (
	ConfigFile     = "config.json"
	GenConfigFile  = "generation_config.json"
	WeightsFile    = "model.safetensors"
	IndexFile      = "model.safetensors.index.json"
	architecture   = "LlamaForCausalLM"
	modelType      = "llama"
	hfDefaultEps   = 1e-6 // LlamaConfig's rms_norm_eps when config.json omits it
	hfDefaultTheta = 10000.0
)

// Config is the part of a LlamaForCausalLM config.json that tern writes and
// reads. Fields tern does not support (biases, rope scaling, other
// activations) are read so that Import can refuse them by name.
type Config struct {
	Architectures         []string `json:"architectures"`
	ModelType             string   `json:"model_type"`
	HiddenSize            int      `json:"hidden_size"`
	IntermediateSize      int      `json:"intermediate_size"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	NumKeyValueHeads      int      `json:"num_key_value_heads"`
	HeadDim               int      `json:"head_dim,omitempty"`
	HiddenAct             string   `json:"hidden_act"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	RMSNormEps            float64  `json:"rms_norm_eps"`
	RopeTheta             float64  `json:"rope_theta"`
	RopeScaling           any      `json:"rope_scaling"`
	VocabSize             int      `json:"vocab_size"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	AttentionBias         bool     `json:"attention_bias"`
	MLPBias               bool     `json:"mlp_bias"`
	TorchDtype            string   `json:"torch_dtype,omitempty"`
	InitializerRange      float64  `json:"initializer_range,omitempty"`
	UseCache              bool     `json:"use_cache"`
	BOSTokenID            any      `json:"bos_token_id"` // an id, a list of ids (LLaMA 3) or null
	EOSTokenID            any      `json:"eos_token_id"`
	// TernTokenizer names tern's tokenizer for the vocabulary (byte, gpt2,
	// cl100k_base); transformers keeps unknown keys as plain attributes.
	TernTokenizer string `json:"tern_tokenizer,omitempty"`
	// RopeParameters is how transformers 5 spells rope_theta and
	// rope_scaling; read only.
	RopeParameters map[string]any `json:"rope_parameters,omitempty"`
}

// FromModel describes c as a LlamaForCausalLM with untied float32 weights.
// bos and eos are token ids, or -1 when the tokenizer has none.
func FromModel(c model.Config, bos, eos int) Config {
	h := Config{
		Architectures: []string{architecture}, ModelType: modelType,
		HiddenSize: c.Dim, IntermediateSize: c.FFN, NumHiddenLayers: c.Layers,
		NumAttentionHeads: c.Heads, NumKeyValueHeads: c.KVHeads, HeadDim: c.HeadDim(),
		HiddenAct: "silu", MaxPositionEmbeddings: c.SeqLen,
		RMSNormEps: c.NormEps, RopeTheta: c.RopeTheta, VocabSize: c.Vocab,
		TorchDtype: "float32", InitializerRange: 0.02, UseCache: true,
		TernTokenizer: c.Tokenizer,
	}
	if bos >= 0 {
		h.BOSTokenID = bos
	}
	if eos >= 0 {
		h.EOSTokenID = eos
	}
	return h
}

// ReadConfig reads DIR/config.json, filling the defaults transformers'
// LlamaConfig uses for keys the file leaves out.
func ReadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Config{}, fmt.Errorf("%s has no %s: not a Hugging Face model directory", dir, ConfigFile)
		}
		return Config{}, err
	}
	// Defaults first, so keys the file has override them.
	c := Config{RMSNormEps: hfDefaultEps, RopeTheta: hfDefaultTheta, HiddenAct: "silu", MaxPositionEmbeddings: 2048}
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	// transformers 5 moves rope_theta into rope_parameters, and some
	// versions write a rope_scaling that names the default (unscaled) RoPE:
	// both describe plain RoPE.
	for i, rp := range []any{c.RopeParameters, c.RopeScaling} {
		m, ok := rp.(map[string]any)
		if !ok || m == nil {
			continue
		}
		if th, ok := m["rope_theta"].(float64); ok {
			c.RopeTheta = th
		}
		kind, _ := m["rope_type"].(string)
		if kind == "" {
			kind, _ = m["type"].(string)
		}
		switch {
		case kind != "default" && (kind != "" || i == 1):
			c.RopeScaling = m // scaled RoPE: refused by ModelConfig
		case i == 1:
			c.RopeScaling = nil
		}
	}
	if c.NumKeyValueHeads == 0 {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	return c, nil
}

// ModelConfig turns c into the tern model it describes, refusing what tern
// cannot represent. seqLen and tokenizer are tern's (max_position_embeddings
// and tern_tokenizer when they are zero/empty).
func (c Config) ModelConfig(seqLen int, tokenizer string) (model.Config, error) {
	if c.ModelType != "" && c.ModelType != modelType {
		return model.Config{}, fmt.Errorf("config.json model_type is %q; tern reads only %q (LlamaForCausalLM)", c.ModelType, modelType)
	}
	switch {
	case c.HiddenAct != "silu":
		return model.Config{}, fmt.Errorf("config.json hidden_act is %q; tern's MLP is SwiGLU (silu)", c.HiddenAct)
	case c.AttentionBias:
		return model.Config{}, errors.New("config.json attention_bias is true; tern's attention projections have no bias")
	case c.MLPBias:
		return model.Config{}, errors.New("config.json mlp_bias is true; tern's MLP projections have no bias")
	case c.RopeScaling != nil:
		return model.Config{}, fmt.Errorf("config.json rope_scaling is %v; tern implements plain RoPE only (rope_scaling: null)", c.RopeScaling)
	case c.NumAttentionHeads <= 0:
		return model.Config{}, fmt.Errorf("config.json num_attention_heads is %d, must be > 0", c.NumAttentionHeads)
	case c.HeadDim != 0 && c.HeadDim*c.NumAttentionHeads != c.HiddenSize:
		return model.Config{}, fmt.Errorf("config.json head_dim %d × num_attention_heads %d != hidden_size %d; tern needs head_dim = hidden_size / heads",
			c.HeadDim, c.NumAttentionHeads, c.HiddenSize)
	}
	if seqLen == 0 {
		seqLen = c.MaxPositionEmbeddings
	}
	if tokenizer == "" {
		tokenizer = c.TernTokenizer
	}
	m := model.Config{
		Vocab: c.VocabSize, Dim: c.HiddenSize, Layers: c.NumHiddenLayers, Heads: c.NumAttentionHeads,
		KVHeads: c.NumKeyValueHeads, FFN: c.IntermediateSize, SeqLen: seqLen,
		RopeTheta: c.RopeTheta, NormEps: c.RMSNormEps, Tokenizer: tokenizer,
	}
	if err := m.Validate(); err != nil {
		return model.Config{}, fmt.Errorf("config.json: %w", err)
	}
	return m, nil
}

// CheckMatches reports the first architecture field where the directory's
// config differs from want, the model a job builds. Shapes alone cannot tell
// heads apart (same widths, other split) or catch rope_theta and
// rms_norm_eps, so these are compared here.
func (c Config) CheckMatches(want model.Config) error {
	got, err := c.ModelConfig(want.SeqLen, want.Tokenizer)
	if err != nil {
		return err
	}
	fields := []struct {
		hf, tern  string
		got, want float64
	}{
		{"vocab_size", "vocab", float64(got.Vocab), float64(want.Vocab)},
		{"hidden_size", "dim", float64(got.Dim), float64(want.Dim)},
		{"num_hidden_layers", "layers", float64(got.Layers), float64(want.Layers)},
		{"num_attention_heads", "heads", float64(got.Heads), float64(want.Heads)},
		{"num_key_value_heads", "kvHeads", float64(got.KVHeads), float64(want.KVHeads)},
		{"intermediate_size", "ffn", float64(got.FFN), float64(want.FFN)},
		{"rope_theta", "ropeTheta", got.RopeTheta, want.RopeTheta},
		{"rms_norm_eps", "normEps", got.NormEps, want.NormEps},
	}
	for _, f := range fields {
		if f.got != f.want && math.Abs(f.got-f.want) > 1e-12*math.Abs(f.want) {
			return fmt.Errorf("config.json %s is %g but the job's model.%s is %g; make them equal", f.hf, f.got, f.tern, f.want)
		}
	}
	return nil
}
