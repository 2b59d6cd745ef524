// Package compress holds the codecs that DeMo's compressed gradient exchange
// (Peng, Quesnelle & Kingma 2024, "DeMo: Decoupled Momentum Optimization",
// arXiv 2411.19870) shares between the optimizer and the network layer: the
// chunked DCT-II, per-chunk top-k, value packing, a validated wire format for
// one rank's payload, and the deterministic combine of all ranks' payloads.
// It is pure: no I/O and no state beyond cached bases; the transform spreads
// chunks over cores (tensor.ParallelFor) with results independent of the
// core count.
//
// # Transform
//
// A tensor is cut into chunks (Grid): a 2-D tensor R×C into n1×n2 blocks, a
// 1-D tensor of length L into n1-chunks (as the L×1 column). The chunk side
// along a dimension is the target (64 by default) when the dimension is at
// least that large, the whole dimension otherwise. Where the target does
// not divide the dimension, the tensor is padded with zeros to the next
// multiple: the padded coefficients are part of the transform (they can be
// selected and sent) and the inverse crops them away. The reference instead
// takes the largest divisor below the target, which for a prime dimension
// is 1 and sends every element with its own index. Each block B becomes
// Y = D·B·Dᵀ with D the orthonormal DCT-II basis (Basis), computed with
// float64 sums of exact float32 products so that every machine gets the
// same bits (Transform).
//
// # Selection and packing
//
// TopK keeps the k coefficients of largest magnitude per chunk (ties to the
// smaller index), indices within a chunk as uint16 (a chunk holds at most
// 65536 coefficients). Values travel as bfloat16 (BF16) or as 1-bit signs
// with one bfloat16 scale per chunk (Sign; see its comment for why a scale).
//
// # Wire format
//
// A Layout fixes the tensors of a payload, in order: 2-D tensors sparse,
// 1-D tensors dense (every value a bfloat16, rounded as the sparse values
// are, in both value formats). It is derived identically on every rank from
// the model, so shapes are never sent; the header carries a layout hash and
// each tensor's kind, count and k, which Decode checks along with every
// length, index and value before anything is used. Payload lengths are exact
// and known in advance (Layout.Bytes, PayloadBytes):
//
//	header  20 + 9·tensors bytes
//	sparse  chunks · (2k + 2k)            bf16
//	        chunks · (2k + ⌈k/8⌉ + 2)     sign
//	dense   2 · elements                  bf16, in both formats
//
// At the defaults (64×64 chunks, k = 32) that is 128 bytes per 4096
// weights with bf16 values and 70 with signs, against 384 for the
// reference's int64 indices and float32 values. The header's version
// byte (2) changes whenever the encoding does: version 1 sent dense tensors
// as float32, and Decode rejects a payload of any other version by name.
//
// # Combine
//
// ScatterMean turns all ranks' sparse entries into dense coefficients, each
// the mean over the ranks that selected it; MeanDense averages dense
// tensors. Both sum in float64 in rank order, so every rank decodes the same
// bits from the same payloads, which DeMo needs because it never
// re-synchronises weights.
//
// Usage, per step on every rank:
//
//	l, _ := compress.NewLayout(shapes, compress.Options{Chunk: 64, TopK: 32, Format: compress.BF16})
//	tr := compress.NewTransform()
//	tr.Forward(g, x, coeffs); compress.TopK(g, coeffs, k, idx, val)
//	payload, _ := l.Encode(nil, tensors)
//	// exchange payloads, then for each rank r: parts[r], _ = l.Decode(payloads[r], parts[r])
//	compress.ScatterMean(coeffs, g, k, partsOfTensor); tr.Inverse(g, coeffs, x)
package compress
