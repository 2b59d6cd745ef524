// Package model is tern's LLaMA-style decoder: token embedding, RMSNorm, RoPE,
// causal grouped-query attention (blockwise online softmax, recomputed in
// backward), SwiGLU MLP, final norm and LM head with a fused softmax
// cross-entropy. Every layer has a hand-written forward and backward side by
// side. A Stage holds a contiguous range of blocks and optionally row shards of
// the input embedding and the LM head, so pipeline schedules can run the block
// range and the vocabulary passes as separate steps.
package model
