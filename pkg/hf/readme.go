package hf

import (
	"fmt"
	"strings"

	"github.com/ternml/tern/pkg/model"
)

func readmeText(c model.Config, tok tokenizerExport, opts WriteOptions, shards int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# tern model (LlamaForCausalLM)\n\n")
	if opts.Source != "" {
		fmt.Fprintf(&b, "Exported by `ternctl export` from %s (step %d).\n\n", opts.Source, opts.Step)
	}
	fmt.Fprintf(&b, "| field | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| parameters | %d |\n| vocab | %d |\n| dim | %d |\n| layers | %d |\n| heads / kv heads | %d / %d |\n| ffn | %d |\n| context (training) | %d |\n| rope theta | %g |\n| rms norm eps | %g |\n| tokenizer | %s |\n\n",
		c.NumParams(), c.Vocab, c.Dim, c.Layers, c.Heads, c.KVHeads, c.FFN, c.SeqLen, c.RopeTheta, c.NormEps, tok.name)
	b.WriteString("Weights are float32, untied (`lm_head.weight` is separate from `model.embed_tokens.weight`)")
	if shards > 1 {
		fmt.Fprintf(&b, ", in %d files listed by %s", shards, IndexFile)
	}
	b.WriteString(". tern's rotary embedding rotates the two halves of each head, the same convention as transformers' `rotate_half`, so q_proj and k_proj are stored unpermuted.\n\n")
	b.WriteString("```python\nfrom transformers import LlamaForCausalLM\nmodel = LlamaForCausalLM.from_pretrained(DIR)\n```\n\n")
	b.WriteString("## Tokenizer\n\n")
	b.WriteString(tok.note)
	return b.String()
}
