// Command bench measures tern's CUDA device on one GPU: cuBLAS GEMM
// throughput through tensor.Device.Gemm, and the training step (forward,
// backward, AdamW) of a model preset at a given batch shape and GEMM
// precision, with model FLOP utilisation.
//
//	bench -gemm                                   # 4096³ in fp32, tf32, bf16
//	bench -preset gpt2-shape -b 4 -t 64 -precision tf32 -steps 30
//
// Tokens are uniform random ids (the loss stays near ln vocab, as in a
// freshly initialised model); the step time is the median of the timed
// steps, each ending in a device Sync.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/tensor/cuda"
)

// peakTFLOPs is the dense peak of an H100/H200 SXM (NVIDIA H100 datasheet:
// FP32 67, TF32 tensor 494.7, BF16 tensor 989.4 TFLOP/s without sparsity).
var peakTFLOPs = map[cuda.Precision]float64{cuda.FP32: 67, cuda.TF32: 494.7, cuda.BF16: 989.4}

func main() {
	preset := flag.String("preset", "gpt2-shape", "model preset")
	b := flag.Int("b", 4, "sequences per step")
	t := flag.Int("t", 64, "tokens per sequence")
	prec := flag.String("precision", "tf32", "GEMM precision: fp32, tf32 or bf16")
	steps := flag.Int("steps", 30, "timed steps")
	warmup := flag.Int("warmup", 3, "untimed steps first")
	gemm := flag.Bool("gemm", false, "measure 4096³ GEMM throughput instead of training steps")
	gpuN := flag.Int("gpu", 0, "GPU ordinal")
	prof := flag.Bool("profile", false, "also time every kernel call (with a sync after each) and print where a step's time goes")
	optName := flag.String("optim", "adamw", "optimizer: adamw or adam-mini")
	floatAttn := flag.Bool("float-attn", false, "bf16: keep attention on the float32 kernels instead of the tensor cores")
	noPad := flag.Bool("no-gemm-pad", false, "bf16: keep GEMM operands at their leading dimensions (no aligned repacking)")
	headGemm := flag.Bool("head-gemm", false, "measure the gpt2-shape LM head's three BF16 GEMMs (B·T = 16384), with and without aligned repacking")
	flag.Parse()
	if *headGemm {
		if err := headGemmBench(*gpuN); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*preset, *b, *t, *prec, *steps, *warmup, *gemm, *gpuN, *prof, *optName, *floatAttn, *noPad); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(preset string, b, t int, precName string, steps, warmup int, gemm bool, gpuN int, prof bool, optName string, floatAttn, noPad bool) error {
	if gemm {
		for _, p := range []cuda.Precision{cuda.FP32, cuda.TF32, cuda.BF16} {
			if err := gemmBench(p, gpuN); err != nil {
				return err
			}
		}
		return nil
	}
	p, err := cuda.ParsePrecision(precName)
	if err != nil {
		return err
	}
	dev, err := cuda.New(cuda.Options{Ordinal: gpuN, Precision: p, FloatAttention: floatAttn, NoGemmPadding: noPad})
	if err != nil {
		return err
	}
	defer dev.Close()
	cfg, err := model.Preset(preset)
	if err != nil {
		return err
	}
	if t > cfg.SeqLen {
		return fmt.Errorf("-t %d exceeds the preset's context %d", t, cfg.SeqLen)
	}
	start := time.Now()
	m, err := model.New(cfg, 1, false, model.WithDevice(dev))
	if err != nil {
		return err
	}
	opt, err := newOptimizer(optName, m, cfg)
	if err != nil {
		return err
	}
	init := time.Since(start)
	r := rand.New(rand.NewPCG(1, 2))
	tokens, targets := make([]int32, b*t), make([]int32, b*t)
	var times []time.Duration
	var loss float64
	for s := 0; s < warmup+steps; s++ {
		for i := range tokens {
			tokens[i], targets[i] = int32(r.IntN(cfg.Vocab)), int32(r.IntN(cfg.Vocab))
		}
		t0 := time.Now()
		m.ZeroGrad()
		sum, n := m.ForwardBackward(tokens, targets, b, t, 1/float32(b*t))
		opt.Step(1e-4)
		dev.Sync()
		if s >= warmup {
			times = append(times, time.Since(t0))
		}
		loss = sum / float64(n)
	}
	slices.Sort(times)
	med := times[len(times)/2]
	tokS := float64(b*t) / med.Seconds()
	flops := cfg.TrainFLOPsPerToken(t) * tokS
	in := dev.Info()
	if prof {
		pd := newProfiled(dev)
		pm, err := model.New(cfg, 1, false, model.WithDevice(pd))
		if err != nil {
			return err
		}
		popt, err := optim.NewAdamW(pm.Params(), optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1})
		if err != nil {
			return err
		}
		const profSteps = 3
		for s := 0; s <= profSteps; s++ {
			if s == 1 {
				pd.reset() // the first step pays for page migration and cuBLAS set-up
			}
			pm.ZeroGrad()
			pm.ForwardBackward(tokens, targets, b, t, 1/float32(b*t))
			popt.Step(1e-4)
			dev.Sync()
		}
		pd.report(os.Stdout, profSteps)
	}
	mem := dev.Memory()
	np := float64(cfg.NumParams())
	attn := "tensor-cores"
	if p != cuda.BF16 || floatAttn {
		attn = "float32"
	}
	if p == cuda.BF16 && noPad {
		attn += ",no-gemm-pad"
	}
	fmt.Printf("gpu=%q preset=%s params=%d B=%d T=%d precision=%s attention=%s optim=%s init=%.1fs step_ms_median=%.2f step_ms_min=%.2f tokens_per_s=%.0f tflops=%.1f mfu=%.1f%% loss=%.4f used_mib=%d scratch_mib=%d used_bytes_per_param=%.1f total_bytes_per_param=%.1f\n",
		in.GPU, preset, cfg.NumParams(), b, t, p, attn, opt.Name(), init.Seconds(), ms(med), ms(times[0]), tokS, flops/1e12, 100*flops/1e12/peakTFLOPs[p], loss,
		mem.Used>>20, mem.Scratch>>20, float64(mem.Used)/np, float64(mem.Used+mem.Scratch)/np)
	return nil
}

// newOptimizer builds the optimizer the step uses, with the torch baseline's
// AdamW settings (Adam-mini takes the same ones, as its reference code asks).
func newOptimizer(name string, m *model.Model, cfg model.Config) (optim.Optimizer, error) {
	switch name {
	case "adamw":
		return optim.NewAdamW(m.Params(), optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1})
	case "adam-mini":
		c := optim.DefaultAdamMiniConfig().ForModel(cfg)
		c.Beta2, c.WeightDecay = 0.95, 0.1
		return optim.NewAdamMini(m.Params(), c)
	}
	return nil, fmt.Errorf("-optim %q unknown (allowed: adamw, adam-mini)", name)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func gemmBench(p cuda.Precision, gpuN int) error {
	dev, err := cuda.New(cuda.Options{Ordinal: gpuN, Precision: p})
	if err != nil {
		return err
	}
	defer dev.Close()
	const n, reps = 4096, 30
	a, bb, c := dev.Alloc(n*n), dev.Alloc(n*n), dev.Alloc(n*n)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range a {
		a[i], bb[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	for range 5 {
		dev.Gemm(false, true, n, n, n, 1, a, n, bb, n, 0, c, n)
	}
	dev.Sync()
	t0 := time.Now()
	for range reps {
		dev.Gemm(false, true, n, n, n, 1, a, n, bb, n, 0, c, n)
	}
	dev.Sync()
	el := time.Since(t0).Seconds() / reps
	fmt.Printf("gemm gpu=%q precision=%s m=n=k=%d ms=%.3f tflops=%.1f\n", dev.Info().GPU, p, n, el*1e3, 2*float64(n)*n*n/el/1e12)
	return nil
}

// headGemmBench times the three GEMMs of the gpt2-shape LM head at
// B·T = 16384 (logits, input gradient, weight gradient) in BF16, with the
// operands repacked to aligned rows (the default) and without.
func headGemmBench(gpuN int) error {
	const n, v, d, reps = 16384, 50257, 768, 10
	for _, noPad := range []bool{true, false} {
		dev, err := cuda.New(cuda.Options{Ordinal: gpuN, Precision: cuda.BF16, NoGemmPadding: noPad})
		if err != nil {
			return err
		}
		x, w, z, dx, dw := dev.Alloc(n*d), dev.Alloc(v*d), dev.Alloc(n*v), dev.Alloc(n*d), dev.Alloc(v*d)
		r := rand.New(rand.NewPCG(5, 6))
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		for i := range w {
			w[i] = float32(r.NormFloat64() * 0.02)
		}
		for _, g := range []struct {
			name string
			f    func()
		}{
			{"logits 16384x50257x768 tB", func() { dev.Gemm(false, true, n, v, d, 1, x, d, w, d, 0, z, v) }},
			{"dx 16384x768x50257", func() { dev.Gemm(false, false, n, d, v, 1, z, v, w, d, 0, dx, d) }},
			{"dw 50257x768x16384 tA", func() { dev.Gemm(true, false, v, d, n, 1, z, v, x, d, 1, dw, d) }},
		} {
			for range 2 {
				g.f()
			}
			dev.Sync()
			t0 := time.Now()
			for range reps {
				g.f()
			}
			dev.Sync()
			el := time.Since(t0).Seconds() / reps
			fmt.Printf("head-gemm gpu=%q pad=%v %s ms=%.3f tflops=%.1f\n", dev.Info().GPU, !noPad, g.name, el*1e3, 2*float64(n)*v*d/el/1e12)
		}
		if err := dev.Close(); err != nil {
			return err
		}
	}
	return nil
}
