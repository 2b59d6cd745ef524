package hf

import (
	"fmt"

	"github.com/ternml/tern/pkg/model"
)

// TensorShape is one parameter of a LlamaForCausalLM with its full shape.
type TensorShape struct {
	Name  string
	Shape []int
}

// Names of the tensors outside the blocks.
const (
	EmbedName = "model.embed_tokens.weight"
	NormName  = "model.norm.weight"
	HeadName  = "lm_head.weight"
)

// Shapes lists every tensor of c's model in checkpoint order (embedding,
// blocks, final norm, head) with its unsharded, unpadded shape: the tensors
// an exported directory holds and an import must find. It mirrors
// model.NewStage's names; a test keeps the two equal.
func Shapes(c model.Config) []TensorShape {
	d, hd, f := c.Dim, c.HeadDim(), c.FFN
	out := []TensorShape{{EmbedName, []int{c.Vocab, d}}}
	for l := 0; l < c.Layers; l++ {
		pre := fmt.Sprintf("model.layers.%d.", l)
		out = append(out,
			TensorShape{pre + "input_layernorm.weight", []int{d}},
			TensorShape{pre + "self_attn.q_proj.weight", []int{c.Heads * hd, d}},
			TensorShape{pre + "self_attn.k_proj.weight", []int{c.KVHeads * hd, d}},
			TensorShape{pre + "self_attn.v_proj.weight", []int{c.KVHeads * hd, d}},
			TensorShape{pre + "self_attn.o_proj.weight", []int{d, c.Heads * hd}},
			TensorShape{pre + "post_attention_layernorm.weight", []int{d}},
			TensorShape{pre + "mlp.gate_proj.weight", []int{f, d}},
			TensorShape{pre + "mlp.up_proj.weight", []int{f, d}},
			TensorShape{pre + "mlp.down_proj.weight", []int{d, f}},
		)
	}
	return append(out, TensorShape{NormName, []int{d}}, TensorShape{HeadName, []int{c.Vocab, d}})
}

// isVocab reports whether a tensor's rows are vocabulary entries, which a
// vocabulary-parallel job shards over stages and pads.
func isVocab(name string) bool { return name == EmbedName || name == HeadName }

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
