// Package tensor holds tern's compute kernels behind one small interface,
// Device, and their CPU implementation: float32 and bf16 storage, a
// cache-blocked GEMM with an AVX2/FMA assembly micro-kernel (pure-Go
// fallback), the forward and backward kernels of the model's layers and the
// optimizer update.
//
// # Devices
//
// Device is the set of operations pkg/model and pkg/optim call, and nothing
// more: allocation and Sync; Gemm in all transpose forms; Copy, Zero, Scale,
// SumSquares and GatherColumns; and a forward/backward pair per layer —
// embedding gather and scatter-add on a vocabulary row shard, RMSNorm, RoPE
// (rotate-half), SwiGLU, causal grouped-query attention (blockwise online
// softmax, recomputed in backward), the LM head's shard-local softmax
// cross-entropy statistics and logit gradient — plus the AdamW update. It is
// not an autograd: pkg/model owns the order of calls, the shapes and which
// activations are kept. CPU implements Device here, one concept per file
// (cpu_rmsnorm.go, cpu_attention.go, ...), forward and backward side by side.
//
// Kernels take []float32 slices, so one interface fits a device whose memory
// the host can address: the Go heap on the CPU, CUDA managed memory
// (cuMemAllocManaged) on a GPU. The contract that makes this work:
//
//  1. Every float buffer a kernel sees comes from that device's Alloc
//     (sub-slices are fine). Model code allocates parameters, gradients,
//     activations and scratch that way.
//  2. Model code never reads or writes those buffers with Go loops in the
//     forward and backward passes: it only calls kernels. Index arguments
//     (token ids, targets, selected columns) are host []int32 values that a
//     device copies when called.
//  3. The host touches a device buffer only when no kernel that uses it is
//     queued: after Sync, or before the buffer is first given to a kernel
//     (initialisation). Kernels may run asynchronously in call order; a
//     result that returns a value (SumSquares) syncs. Reading the loss is
//     such a host read, so the model syncs before it.
//
// Host-side work that stays outside the kernels, once per run or per step
// after a sync: parameter initialisation and the RoPE tables (written into
// fresh buffers), combining the head shards' statistics into the loss
// (model.CombineHeadStats), checkpoint and snapshot I/O, optimizer state
// export and restore, the data-parallel gradient exchange, gradient clipping
// (pkg/optim's GradNorm and ClipGradNorm still call the package-level
// SumSquares and Scale; Device has both for when they take a device), and
// every optimizer but AdamW (and Adam-mini on a device that has its own
// AdamMini method, as pkg/tensor/cuda's does), whose updates read and write
// parameters on the host.
//
// The CUDA device is pkg/tensor/cuda: it loads the driver API, NVRTC and
// cuBLAS through purego (no cgo), allocates with cuMemAllocManaged (never
// more than the GPU has free), runs the layer kernels as NVRTC-compiled
// CUDA C and Gemm through cuBLAS (FP32, TF32 or BF16 on the tensor cores),
// and issues every call from one goroutine locked to the OS thread that
// holds its context. The interface has no Free: buffers live as long as the
// model, which allocates once per batch shape.
//
// # GEMM
//
// Gemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) computes
// C = alpha·op(A)·op(B) + beta·C on row-major matrices. The three layouts a
// training step needs are
//
//	forward      Y[M,N]  = X[M,K]·W[N,K]ᵀ     Gemm(false, true,  M, N, K, 1, x, K, w, K, 0, y, N)
//	input grad   dX[M,K] = dY[M,N]·W[N,K]     Gemm(false, false, M, K, N, 1, dy, N, w, K, 0, dx, K)
//	weight grad  dW[N,K] += dY[M,N]ᵀ·X[M,K]   Gemm(true, false,  N, K, M, 1, dy, N, x, K, 1, dw, K)
//
// The implementation follows BLIS (Van Zee & van de Geijn, ACM TOMS 41(3),
// 2015): blocks of B (kc×nc) and A (mc×kc) are packed into contiguous panels,
// whatever the transposition, and a 6×16 micro-kernel multiplies one A
// micro-panel by one B micro-panel. GEMM backends of the CPU device
// (SetGemmBackend, or the TERN_GEMM environment variable at start-up):
//
//	asm       blocked GEMM, AVX2/FMA Go-assembly kernel; default where the CPU has both
//	go        blocked GEMM, portable Go kernel (about 15× slower); default elsewhere
//	openblas  cblas_sgemm from libopenblas.so.0 via purego (no cgo); speed reference only
//
// # Determinism
//
// Every kernel partitions work by fixed block sizes that depend only on the
// problem shape, never on GOMAXPROCS or scheduling, and no reduction is split
// across goroutines in a data-dependent order. In Gemm the K dimension is
// never split across goroutines: each C element is accumulated by one kernel
// call per kc block, in increasing k. Sums over rows (the RMSNorm gain and
// embedding gradients) give each goroutine a column range and walk the rows
// in order; attention's key/value gradients give one goroutine a whole
// query-head group. Results of the asm and go backends are therefore bitwise
// identical on any core count and across calls (the two backends differ from
// each other in the last bits, since the assembly fuses multiply and add).
// OpenBLAS makes no such promise.
//
// # Vectors and bf16
//
// Axpy, Scale, Add, Copy and Zero are elementwise; SumSquares and Dot
// accumulate in float64 over fixed chunks combined in chunk order. BF16 is
// bfloat16 with round-to-nearest-even conversion (ToBF16, EncodeBF16,
// DecodeBF16). ParallelFor is the fixed-chunk parallel loop the CPU kernels
// and the other packages use.
package tensor
