// Package hf converts between tern's model and the Hugging Face LLaMA
// checkpoint layout (LlamaForCausalLM): a directory with config.json,
// generation_config.json, model.safetensors (or model-0000i-of-0000n
// shards with model.safetensors.index.json) and tokenizer files.
//
// tern's parameters already carry Hugging Face names and layouts (Linear
// weights [out, in], model.layers.N.self_attn.q_proj.weight, ...), and its
// RoPE rotates the two halves of each head (x[i] with x[i+hd/2]), which is
// transformers' rotate_half convention, so q_proj and k_proj rows are
// written as they are: no permutation is needed in either direction. (Meta's
// original checkpoints rotate interleaved pairs, which is why transformers'
// conversion script permutes them; tern never had that layout.) The
// independent check in scripts/interop/check_hf.py compares logits with
// transformers itself.
//
// Export (Gather, then Write) assembles a checkpoint's parameters from every
// pipeline stage and vocabulary shard, drops the rows a vocabulary-parallel
// job padded the vocabulary with, and writes float32 tensors. Import (Open,
// then Dir.Load) reads a directory through the validating safetensors
// reader, widens bf16 and fp16 to float32, and checks every tensor's shape
// against the model it fills, naming the tensor and both shapes on a
// mismatch.
package hf
