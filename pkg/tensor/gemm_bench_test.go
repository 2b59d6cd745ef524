package tensor

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkGemm reports GFLOP/s for the shapes that dominate a training step
// (M = tokens): forward x·Wᵀ (NT), input gradient dY·W (NN), weight gradient
// dW += dYᵀ·X (TN, beta=1), and an attention block. Run with -cpu 1,2 and
// TERN_GEMM=go|openblas to compare backends.
func BenchmarkGemm(b *testing.B) {
	for _, s := range []struct {
		name           string
		transA, transB bool
		m, n, k        int
		beta           float32
	}{
		{"fwd_NT_512x768x768", false, true, 512, 768, 768, 0},
		{"fwd_NT_512x3072x768", false, true, 512, 3072, 768, 0},
		{"dX_NN_512x768x3072", false, false, 512, 768, 3072, 0},
		{"dW_TN_768x768x512_acc", true, false, 768, 768, 512, 1},
		{"dW_TN_3072x768x2048_acc", true, false, 3072, 768, 2048, 1},
		{"attn_NT_64x64x64", false, true, 64, 64, 64, 0},
		{"square_1024", false, false, 1024, 1024, 1024, 0},
	} {
		b.Run(fmt.Sprintf("%s/%s", GemmBackend(), s.name), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 1))
			a, bb, c := randSlice(r, s.m*s.k), randSlice(r, s.k*s.n), make([]float32, s.m*s.n)
			lda, ldb := s.k, s.n
			if s.transA {
				lda = s.m
			}
			if s.transB {
				ldb = s.k
			}
			b.ResetTimer()
			for b.Loop() {
				Gemm(s.transA, s.transB, s.m, s.n, s.k, 1, a, lda, bb, ldb, s.beta, c, s.n)
			}
			b.ReportMetric(2*float64(s.m)*float64(s.n)*float64(s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
