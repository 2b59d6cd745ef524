// Package tensor holds tern's CPU compute kernels: float32 and bf16 storage, a
// cache-blocked GEMM with an AVX2/FMA assembly micro-kernel (pure-Go fallback),
// and the elementwise and reduction kernels the model and optimizers call.
//
// Determinism: every kernel partitions work by fixed block sizes that depend only
// on the problem shape, never on GOMAXPROCS or scheduling, and no reduction is
// split across goroutines in a data-dependent order. Results are therefore
// bitwise identical on any core count.
package tensor
