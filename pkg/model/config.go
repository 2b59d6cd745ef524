package model

import (
	"fmt"
	"sort"
	"strings"
)

// Config describes a LLaMA-style decoder. Field names follow the job spec's
// model section.
type Config struct {
	Vocab     int     `json:"vocab"`     // vocabulary size (token ids are < Vocab)
	Dim       int     `json:"dim"`       // model width
	Layers    int     `json:"layers"`    // number of transformer blocks
	Heads     int     `json:"heads"`     // attention (query) heads
	KVHeads   int     `json:"kvHeads"`   // key/value heads (grouped-query attention); Heads % KVHeads == 0
	FFN       int     `json:"ffn"`       // SwiGLU hidden width
	SeqLen    int     `json:"seqLen"`    // training context length
	RopeTheta float64 `json:"ropeTheta"` // RoPE base
	NormEps   float64 `json:"normEps"`   // RMSNorm epsilon
	Tokenizer string  `json:"tokenizer"` // tokenizer the vocabulary belongs to: byte, gpt2, cl100k_base
}

// Default values for the fields a preset or spec may leave out.
const (
	DefaultRopeTheta = 10000.0
	DefaultNormEps   = 1e-5
)

var presets = map[string]Config{
	"tiny":       {Vocab: 256, Dim: 64, Layers: 2, Heads: 4, KVHeads: 4, FFN: 176, SeqLen: 64, Tokenizer: "byte"},
	"small":      {Vocab: 256, Dim: 256, Layers: 4, Heads: 8, KVHeads: 8, FFN: 688, SeqLen: 256, Tokenizer: "byte"},
	"medium":     {Vocab: 50257, Dim: 512, Layers: 8, Heads: 8, KVHeads: 8, FFN: 1376, SeqLen: 512, Tokenizer: "gpt2"},
	"gpt2-shape": {Vocab: 50257, Dim: 768, Layers: 12, Heads: 12, KVHeads: 12, FFN: 2048, SeqLen: 1024, Tokenizer: "gpt2"},
}

// PresetNames lists the preset names in a stable order.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return presets[names[i]].NumParams() < presets[names[j]].NumParams() })
	return names
}

// Preset returns the named configuration with defaults filled in.
func Preset(name string) (Config, error) {
	c, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown model preset %q (allowed: %s)", name, strings.Join(PresetNames(), ", "))
	}
	c.RopeTheta = DefaultRopeTheta
	c.NormEps = DefaultNormEps
	return c, nil
}

// HeadDim is the per-head width.
func (c Config) HeadDim() int { return c.Dim / c.Heads }

// Validate reports the first field that makes the configuration unusable.
func (c Config) Validate() error {
	pos := []struct {
		name string
		v    int
	}{{"vocab", c.Vocab}, {"dim", c.Dim}, {"layers", c.Layers}, {"heads", c.Heads}, {"kvHeads", c.KVHeads}, {"ffn", c.FFN}, {"seqLen", c.SeqLen}}
	for _, p := range pos {
		if p.v <= 0 {
			return fmt.Errorf("model.%s must be > 0, got %d", p.name, p.v)
		}
	}
	if c.Dim%c.Heads != 0 {
		return fmt.Errorf("model.dim (%d) must be a multiple of model.heads (%d)", c.Dim, c.Heads)
	}
	if c.HeadDim()%2 != 0 {
		return fmt.Errorf("model.dim/model.heads = %d must be even for RoPE", c.HeadDim())
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("model.heads (%d) must be a multiple of model.kvHeads (%d)", c.Heads, c.KVHeads)
	}
	if c.RopeTheta <= 0 {
		return fmt.Errorf("model.ropeTheta must be > 0, got %g", c.RopeTheta)
	}
	if c.NormEps <= 0 {
		return fmt.Errorf("model.normEps must be > 0, got %g", c.NormEps)
	}
	return nil
}

// NumParams counts the parameters of the full (unsharded) model: untied
// embedding and LM head, per block q/k/v/o, gate/up/down and two norms, and
// the final norm.
func (c Config) NumParams() int64 {
	d, hd := int64(c.Dim), int64(c.HeadDim())
	attn := d*int64(c.Heads)*hd*2 + d*int64(c.KVHeads)*hd*2
	mlp := 3 * d * int64(c.FFN)
	block := attn + mlp + 2*d
	return 2*int64(c.Vocab)*d + int64(c.Layers)*block + d
}

// TrainFLOPsPerToken estimates the floating-point operations of one training
// token (forward + backward, no recomputation) at context length t: 6 per
// matmul weight (Kaplan et al. 2020, "Scaling Laws for Neural Language
// Models", §2.1: 2 forward, 4 backward), the embedding lookup excluded, plus
// causal attention's score and value products, 2·t·d per layer forward on
// average (half of the t×t scores are masked), times 3 for training.
func (c Config) TrainFLOPsPerToken(t int) float64 {
	matmul := float64(c.NumParams()) - float64(c.Vocab*c.Dim) - float64((2*c.Layers+1)*c.Dim)
	attn := 2 * float64(t) * float64(c.Heads*c.HeadDim())
	return 6*matmul + 3*float64(c.Layers)*attn
}
