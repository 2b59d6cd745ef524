// Package tensor holds tern's CPU compute kernels: float32 and bf16 storage, a
// cache-blocked GEMM with an AVX2/FMA assembly micro-kernel (pure-Go fallback),
// and the elementwise and reduction kernels the model and optimizers call.
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
// micro-panel by one B micro-panel. Backends (SetGemmBackend, or the TERN_GEMM
// environment variable at start-up):
//
//	asm       blocked GEMM, AVX2/FMA Go-assembly kernel; default where the CPU has both
//	go        blocked GEMM, portable Go kernel (about 15× slower); default elsewhere
//	openblas  cblas_sgemm from libopenblas.so.0 via purego (no cgo); speed reference only
//
// Backend is the small device interface (Name, Gemm) that a GPU
// implementation will also satisfy; CPU is the implementation here.
//
// # Determinism
//
// Every kernel partitions work by fixed block sizes that depend only on the
// problem shape, never on GOMAXPROCS or scheduling, and no reduction is split
// across goroutines in a data-dependent order. In Gemm the K dimension is
// never split across goroutines: each C element is accumulated by one kernel
// call per kc block, in increasing k. Results of the asm and go backends are
// therefore bitwise identical on any core count and across calls (the two
// backends differ from each other in the last bits, since the assembly fuses
// multiply and add). OpenBLAS makes no such promise.
//
// # Vectors and bf16
//
// Axpy, Scale, Add and Zero are elementwise; SumSquares and Dot accumulate
// in float64 over fixed chunks combined in chunk order. BF16 is bfloat16 with
// round-to-nearest-even conversion (ToBF16, EncodeBF16, DecodeBF16).
// ParallelFor is the fixed-chunk parallel loop the other packages use.
package tensor
