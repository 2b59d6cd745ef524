package tensor

// Device is the set of kernels the model and the optimizers run, so that the
// layers in pkg/model can run on another device (a CUDA one, say) without
// change. It is deliberately not an autograd: every layer's forward and
// backward is a kernel of its own, and pkg/model decides the order of calls,
// the shapes and which activations are kept.
//
// Memory contract (what lets a kernel take a []float32 on any device):
//
//   - Every float32 buffer given to a kernel comes from the same device's
//     Alloc; sub-slices of such a buffer are fine. A device whose memory is
//     host-addressable (CUDA managed memory, or plain host memory on the CPU)
//     hands out slices that view it, so the host can still reach them.
//   - The host reads or writes such a buffer only while no kernel that uses
//     it is queued or running: after Sync, or before the buffer is first given
//     to a kernel (initialisation). Results that return to the host
//     (SumSquares) imply a Sync.
//   - Index arguments (token ids, targets, selected columns: []int32) and
//     scalars are host values: the device copies what it needs when the
//     kernel is called, and the caller may reuse them once it returns.
//   - Kernels may run asynchronously with respect to the host, in call
//     order. The CPU device runs each one to completion before returning and
//     its Sync does nothing.
//
// A device that cannot carry out a call (out of memory, a fault) panics with
// a message naming the kernel; so does the CPU device when lengths and shapes
// do not fit, which is a programming error. Callers do not call one device
// concurrently (a GPU device drives one stream from one locked OS thread);
// the CPU device happens to allow it.
//
// Unless stated, an output is overwritten ("writes") or added to
// ("accumulates") as the method says, and outputs must not alias inputs.
type Device interface {
	// Name identifies the device in logs and benchmark tables.
	Name() string
	// Alloc returns n zeroed float32s in the device's memory.
	Alloc(n int) []float32
	// Sync waits until every kernel called so far has finished, so the host
	// may read its outputs.
	Sync()

	// Gemm computes C = alpha·op(A)·op(B) + beta·C on row-major matrices,
	// with the contract of the package-level Gemm.
	Gemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)

	// Copy writes dst = src (equal lengths).
	Copy(dst, src []float32)
	// Zero writes +0 to every element of x.
	Zero(x []float32)
	// Scale computes x *= alpha.
	Scale(alpha float32, x []float32)
	// SumSquares returns Σ x[i]², accumulated in float64 (gradient norms).
	SumSquares(x []float32) float64
	// GatherColumns writes dst[r, j] = src[r, cols[j]] for r < rows, where src
	// is [rows, srcCols] and dst is [rows, len(cols)] (row-selected weight
	// gradients).
	GatherColumns(dst, src []float32, rows, srcCols int, cols []int32)

	// EmbeddingForward writes out[i, :] = w[tokens[i]−lo, :] for tokens in
	// the row shard [lo, hi) of the vocabulary and zero rows for the others;
	// w is [hi−lo, d], out [len(tokens), d].
	EmbeddingForward(out, w []float32, lo, hi, d int, tokens []int32)
	// EmbeddingBackward accumulates dw[tokens[i]−lo, :] += dout[i, :] for the
	// tokens in [lo, hi), in token order.
	EmbeddingBackward(dw, dout []float32, lo, hi, d int, tokens []int32)

	// RMSNormForward normalises the n rows of x [n, d]: y = x·r ∘ w with
	// r = 1/sqrt(mean(x²) + eps), kept in rstd [n] for the backward pass.
	RMSNormForward(y, rstd, x, w []float32, n, d int, eps float64)
	// RMSNormBackward accumulates into dx [n, d] and dw [d] the gradients of
	// <dy, y> from the forward pass that produced rstd.
	RMSNormBackward(dx, dw, dy, x, w, rstd []float32, n, d int)

	// RoPEForward rotates x [n, heads·hd] in place (rotate-half layout); the
	// position of row r is r mod t, and cos, sin are [t, hd/2] (RoPETables).
	RoPEForward(x, cos, sin []float32, n, t, heads, hd int)
	// RoPEBackward applies the inverse rotation to dx in place.
	RoPEBackward(dx, cos, sin []float32, n, t, heads, hd int)

	// SwiGLUForward writes h = silu(g) ∘ u (equal lengths).
	SwiGLUForward(h, g, u []float32)
	// SwiGLUBackward writes dg and du from dh; dg may alias dh.
	SwiGLUBackward(dg, du, dh, g, u []float32)

	// AttentionForward is causal grouped-query attention: it writes o and
	// the row log-sum-exp lse [B, H, T] the backward pass needs. q and o are
	// [B·T, H·hd], k and v [B·T, KV·hd].
	AttentionForward(o, lse, q, k, v []float32, sh AttnShape)
	// AttentionBackward writes dq, dk and dv, recomputing the attention
	// weights from q, k and lse.
	AttentionBackward(dq, dk, dv, dout, q, k, v, o, lse []float32, sh AttnShape)

	// CrossEntropyStats reads logits [len(targets), rows] of the vocabulary
	// rows [lo, lo+rows) and writes per token the max logit, Σ exp(logit −
	// max) and the target's logit (0 where the target is not in the shard or
	// is negative).
	CrossEntropyStats(max, sumExp, targetLogit, logits []float32, rows, lo int, targets []int32)
	// CrossEntropyBackward turns logits in place into the gradient of
	// scale·Σ loss, given the global per-token max and sum of exponentials of
	// all shards: (exp(z − gMax)/gSum − [row = target])·scale, and zero rows
	// for negative targets.
	CrossEntropyBackward(logits, gMax, gSum []float32, rows, lo int, targets []int32, scale float32)

	// AdamW applies one AdamW update to the parameter w in place from its
	// gradient g, updating the moments m and v (equal lengths).
	AdamW(w, g, m, v []float32, u AdamWUpdate)
}

// AttnShape is the shape of one attention call: B sequences of T tokens, H
// query heads and KV key/value heads (H a multiple of KV) of width HD.
type AttnShape struct{ B, T, H, KV, HD int }

// AdamWForm picks where ε and weight decay enter an AdamW update.
type AdamWForm uint8

// AdamW forms (pkg/optim documents both conventions).
const (
	// AdamWTorch is torch.optim.AdamW:
	//	w ← w·Decay − StepSize·m / (√v/BC2Sqrt + Eps)
	AdamWTorch AdamWForm = iota
	// AdamWHF is the Hugging Face transformers AdamW:
	//	w' ← w − StepSize·(m / (√v + Eps)),  w ← w' − Decay·w'
	AdamWHF
)

// AdamWUpdate holds the float32 constants of one AdamW step, computed by the
// optimizer in float64 and rounded once. Both forms first update the moments
// m ← β1·m + (1−β1)·g and v ← β2·v + (1−β2)·g².
type AdamWUpdate struct {
	Form         AdamWForm
	Beta1, Beta2 float32
	Eps          float32
	// StepSize is lr/(1−β1ᵗ) (AdamWTorch) or lr·√(1−β2ᵗ)/(1−β1ᵗ) (AdamWHF).
	StepSize float32
	// BC2Sqrt is √(1−β2ᵗ); AdamWTorch only.
	BC2Sqrt float32
	// Decay is the multiplier 1−lr·λ applied before the update (AdamWTorch;
	// 1 means none) or the fraction lr·λ removed after it (AdamWHF; 0 means
	// none).
	Decay float32
}
