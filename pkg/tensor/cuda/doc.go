// Package cuda is a tensor.Device on an NVIDIA GPU, loaded at run time with
// purego: no cgo and nothing from CUDA at build time, so the same static
// binaries run on machines with and without a GPU.
//
// At New the package dlopens three libraries, searching for each in turn the
// dynamic linker's own path (LD_LIBRARY_PATH, the ldconfig cache), the
// directory in TERN_CUDA_LIB_DIR, LD_LIBRARY_PATH's entries, the standard
// CUDA directories and the nvidia/*/lib directories of the pip wheels
// PyTorch installs:
//
//	libcuda.so.1                    the driver API: context, stream, memory, modules, launches
//	libnvrtc.so.{13,12,11.2}        compiles kernels.cu (embedded) to CUBIN for the GPU found
//	libcublas.so.{13,12,11}         every Gemm, as cublasGemmEx
//
// A library that is missing gives a *LibraryError naming the files tried and
// the directories searched; a failing CUDA call gives an *Error naming the
// call, what the device was doing and the CUDA status (CUDA_ERROR_...).
//
// # Threads and queue
//
// A CUDA context is current per OS thread, so one goroutine, locked with
// runtime.LockOSThread, owns the context, its one stream, the cuBLAS handle
// and the compiled kernels. Device methods check their arguments on the
// caller's goroutine (a bad shape panics there, naming the argument), copy
// the host index arguments, and queue a command; kernels then run in call
// order while the caller goes on. Sync, SumSquares and Alloc wait. A command
// that fails poisons the device: the next call panics with the error.
//
// # Memory
//
// tensor.Device hands kernels []float32 slices that the host may also read
// and write (parameter initialisation, losses after Sync), so Alloc returns
// CUDA managed memory, carved from 64 MiB chunks at 256-byte alignment and
// kept until Close. The device never takes more than Options.MaxBytes, by
// default 90% of the GPU memory free at start: managed memory is not to be
// oversubscribed on a shared GPU. Every pointer a kernel receives is checked
// to lie in those chunks. Token ids, targets and column lists go to the GPU
// through a pinned staging ring; scratch (partial sums, attention's row
// dots) is plain device memory.
//
// # Precision and reproducibility
//
// Parameters, gradients, optimizer state and every non-GEMM kernel are
// float32. Options.Precision picks the GEMM: FP32 (CUDA cores), TF32
// (tensor cores, operands rounded inside cuBLAS) or BF16 (a kernel rounds
// both operands to bfloat16 into scratch, then cuBLAS multiplies them on
// the tensor cores); all accumulate in float32 and write float32. BF16 also
// moves attention's matrix products onto the tensor cores (below). No kernel here uses atomics, and every reduction has a
// fixed order (SumSquares: fixed grid of float64 partials; RMSNorm's gain
// gradient: fixed row chunks; embedding gradient: the host groups token
// positions by row so one block sums each row in token order), so a run is
// bitwise repeatable on the same GPU model, driver and cuBLAS version.
// Options.Reproducible also turns cuBLAS's pedantic math on. Results differ
// from the CPU device in the last bits (different summation orders and
// exp implementations): the GPU tests state the tolerances.
//
// # Kernels
//
// kernels.cu holds one CUDA C kernel (or a short sequence) per Device
// method, each the GPU twin of a cpu_*.go kernel with the same formula and
// paper reference. Attention is causal grouped-query attention with an
// online softmax (FlashAttention-2's algorithm on the CUDA cores, in
// float32): for head widths up to 128, blocks of 32 query (or key) rows walk
// 32-key tiles staged in shared memory, one key per lane, eight rows per
// warp; wider heads fall back to one warp per row. The backward pass
// recomputes the probabilities from the saved log-sum-exp in two kernels,
// one owning dQ rows and one owning dK/dV rows, so no sum needs atomics.
//
// In BF16 precision attention instead runs on the tensor cores (attn_tc.go):
// Q, K, V (and dO) are packed to [B, heads, T, hd] bfloat16, and batched
// cuBLAS GEMMs compute the scaled scores S = s·QKᵀ of each (sequence, KV
// head) pair, its group·T query rows at once, so grouped-query attention
// shares K and V without copies and dK, dV sum over the group inside the
// GEMM. A float32 kernel takes the causal row log-sum-exp and writes the
// probabilities in bfloat16 for O = PV; the backward recomputes S, forms
// dP = dO·Vᵀ, and a second kernel writes P and dS = P∘(dP − D) in bfloat16
// for dV = PᵀdO, dK = s·dSᵀQ and dQ = s·dS·K. The T×T matrices live in
// scratch, a chunk of pairs at a time (at most 2²⁶ scores: 768 MiB); a
// shape whose single pair exceeds that, or Options.FloatAttention, keeps
// the float32 kernels. The masked half of each score matrix is computed
// and discarded: that costs less than the float32 kernels' arithmetic.
//
// Adam-mini (pkg/optim) updates on the GPU through Device.AdamMini, which
// pkg/optim finds by interface: one thread block per block of the
// partition sums g² in double, or, for blocks larger than 8192 elements
// (per-head and whole-tensor blocks), partial sums per 4096 elements, one
// thread per block adding them in order, then the update by chunks. Its
// results equal the CPU's bit for bit in the GPU tests.
//
// BF16 GEMM operands whose rows are not 16-byte aligned, or whose inner
// dimension is not a multiple of 8 (a 50257-token vocabulary), are
// repacked aligned and zero-padded while they are rounded, since cuBLAS's
// tensor-core kernels run 2–3× slower on them (Options.NoGemmPadding turns
// this off for comparison).
//
// Measured on an H200 (BENCHMARKS.md, section CUDA): at gpt2-shape with
// B=4, T=64 a training step takes 9 ms with TF32 GEMMs, about a third of
// PyTorch eager's; at B=16, T=1024 in BF16 it takes 109.5 ms against
// PyTorch's 103.6 (0.95× its tokens/s, MFU 12.1%; 122 ms without the
// padding, 204 ms with the float32 attention kernels as well).
//
// # Limits
//
//   - Host reads of device buffers happen after Sync (tensor.Device's
//     contract); the pipeline-parallel exchange syncs before it sends,
//     receives or runs a collective, so pipeline stages may share a GPU
//     (one process and context each) or use one each.
//   - One device per process drives one GPU; data parallelism across GPUs
//     runs one process per GPU (worker --gpu N).
//   - BF16 attention's scratch grows with T²: about 12 bytes per score of
//     a chunk, plus the packed operands.
//   - Buffers are never freed before Close (tensor.Device has no Free).
//
// # Use
//
//	dev, err := cuda.New(cuda.Options{Precision: cuda.TF32})
//	if err != nil { ... }               // no GPU, no driver, no cuBLAS: the error says which
//	defer dev.Close()
//	m, err := model.New(cfg, seed, false, model.WithDevice(dev))
//
// Tests that need a GPU carry the gpu build tag (go test -tags gpu); the
// rest run everywhere. make gpu-bundle builds them with the binaries into
// out/gpu-bundle, and its run.sh runs them on a GPU machine.
package cuda
