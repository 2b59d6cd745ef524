package parallel_test

import (
	"fmt"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/parallel"
)

// A two-stage, three-microbatch 1F1B step with the vocabulary split over
// both stages (Algorithm 2). A runtime walks s.Stages[stage] in order.
func ExampleBuild() {
	s, err := parallel.Build(parallel.Plan{PP: 2, M: 3})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(s)
	res, err := parallel.Simulate(s, parallel.UnitCosts(), parallel.SimOptions{AsyncCollectives: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("step %.0f, bubble %.3f, stage 0 holds %d microbatches\n", res.Makespan, res.Bubble, res.Stages[0].PeakInFlight)
	// Output:
	// stage 0: IF0 IFsum:0 IF1 IFsum:1 IF2 IFsum:2 F0 >A0 F1 >A1 C0:0 F2 >A2 S0 C1:0 C0:1 T0 S1 C1:1 <G0 B0 C0:2 IBbcast:0 T1 S2 C1:2 <G1 B1 T2 <G2 B2 IBbcast:1 IBbcast:2 IB0 IB1 IB2
	// stage 1: IF0 IFsum:0 IF1 IFsum:1 IF2 IFsum:2 <A0 F0 C0:0 <A1 F1 S0 C1:0 Loss0 C0:1 B0 >G0 T0 S1 C1:1 <A2 F2 Loss1 C0:2 IBbcast:0 B1 >G1 T1 S2 C1:2 Loss2 B2 >G2 T2 IBbcast:1 IBbcast:2 IB0 IB1 IB2
	// step 12, bubble 0.250, stage 0 holds 3 microbatches
}

// Parameter memory per stage for a cl100k-vocabulary model at PP=4, with
// float32 weights, gradients and AdamW moments (16 bytes per parameter).
func ExampleParamMemory() {
	cfg, _ := model.Preset("medium") // dim 512, 8 layers, FFN 1376
	cfg.Vocab = 100277               // cl100k_base
	for _, mode := range []parallel.VocabMode{parallel.VocabNaive, parallel.VocabParallel} {
		mem, err := parallel.ParamMemory(cfg, 4, mode, 16)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%-8s max/mean %.3f\n", mode, parallel.MaxOverMean(mem))
	}
	// Output:
	// naive    max/mean 1.802
	// parallel max/mean 1.000
}
