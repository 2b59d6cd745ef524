// Package model is tern's LLaMA-style decoder: token embedding, RMSNorm, RoPE,
// causal grouped-query attention (blockwise online softmax, recomputed in
// backward), SwiGLU MLP, final norm and LM head with a fused softmax
// cross-entropy. Every layer has a hand-written forward and backward, each
// checked against a float64 reference and finite differences in the tests. A
// Stage holds a contiguous range of blocks and optionally row shards of the
// input embedding and the LM head, so pipeline schedules can run the block
// range and the vocabulary passes as separate steps.
//
// # Devices
//
// The math of each layer is a pair of kernels of a tensor.Device (for the CPU
// in pkg/tensor's cpu_*.go files); this package holds the orchestration:
// parameters and their shapes, which activations are saved or recomputed,
// and the order of kernel calls (block.go, head.go, linear.go, stage.go). A
// Stage computes on the device given with WithDevice, tensor.CPU{} by
// default, and takes every parameter, gradient, activation and scratch
// buffer from that device's Alloc. The forward and backward passes touch
// those buffers only through kernels, so another device (a CUDA one) needs
// no change here. The host reads device buffers only after a Sync:
// HeadForward and Model.ForwardBackward sync before they return; a pipeline
// caller syncs (Stage.Device().Sync()) before sending other outputs on.
// Parameter initialisation, the RoPE tables and combining the head shards'
// statistics run on the host, into fresh buffers or after a sync.
//
// Parameters use Hugging Face LLaMA names and layouts, carry a Role for
// optimizers and know their Device. Initial values are drawn per (seed,
// name, global row), so every way of cutting the model into stages and
// shards starts from the same weights, and the CPU kernels split work into
// fixed chunks (tensor.ParallelFor), so results are bitwise identical on any
// number of cores.
//
// Single process:
//
//	m, err := model.New(cfg, seed, false) // or model.New(cfg, seed, false, model.WithDevice(dev))
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
