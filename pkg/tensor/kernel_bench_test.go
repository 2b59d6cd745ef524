package tensor

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkKernel measures the micro-kernel alone on L1-resident panels: the
// ceiling the blocked GEMM can approach.
func BenchmarkKernel(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	const kc = kcMax
	a, bp, c := randSlice(r, kc*mr), randSlice(r, kc*nr), make([]float32, mr*nr)
	for _, k := range []struct {
		name string
		asm  bool
	}{{"asm", true}, {"go", false}} {
		if k.asm && !hasAsmKernel {
			continue
		}
		j := gemmJob{asm: k.asm}
		b.Run(k.name, func(b *testing.B) {
			for b.Loop() {
				j.kernel(kc, &a[0], &bp[0], &c[0], nr, 1, 1)
			}
			b.ReportMetric(2*mr*nr*kc*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
