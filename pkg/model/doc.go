// Package model is tern's LLaMA-style decoder: token embedding, RMSNorm, RoPE,
// causal grouped-query attention (blockwise online softmax, recomputed in
// backward), SwiGLU MLP, final norm and LM head with a fused softmax
// cross-entropy. Every layer has a hand-written forward and backward side by
// side, one concept per file, each checked against a float64 reference and
// finite differences in the tests. A Stage holds a contiguous range of blocks
// and optionally row shards of the input embedding and the LM head, so
// pipeline schedules can run the block range and the vocabulary passes as
// separate steps.
//
// Parameters use Hugging Face LLaMA names and layouts and carry a Role for
// optimizers. Initial values are drawn per (seed, name, global row), so every
// way of cutting the model into stages and shards starts from the same
// weights, and all kernels split work into fixed chunks (tensor.ParallelFor),
// so results are bitwise identical on any number of cores.
//
// Single process:
//
//	m, err := model.New(cfg, seed, false)
//	m.ZeroGrad()
//	loss, n := m.ForwardBackward(tokens, targets, B, T, 1/float32(B*T))
//
// One pipeline stage, per microbatch (activations live in Acts, so several
// microbatches may be in flight; the stage runs one operation at a time):
//
//	a := st.NewActs(B, T)
//	st.EmbedForward(tokens, x)               // each embedding shard; sum over shards
//	h := st.BlocksForward(a, x)
//	stats := st.HeadForward(a, h, targets)   // each head shard
//	loss, n := model.CombineHeadStats(allShards, gMax, gSum)
//	st.HeadBackward(a, h, targets, gMax, gSum, scale, dh)
//	dx := st.BlocksBackward(a, dh)
//	st.EmbedBackward(tokens, dx)
package model
