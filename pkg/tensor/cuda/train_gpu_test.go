//go:build gpu

package cuda

import (
	"math"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/tensor"
)

// trainLosses trains the small preset for steps AdamW steps on dev and
// returns the mean loss of every step. The batch is a fixed text, so the
// loss must fall.
func trainLosses(t *testing.T, dev tensor.Device, steps, b, tt int) []float64 {
	t.Helper()
	cfg, err := model.Preset("small")
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(cfg, 42, false, model.WithDevice(dev))
	if err != nil {
		t.Fatal(err)
	}
	opt, err := optim.NewAdamW(m.Params(), optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("tern trains transformer language models across many machines with little memory. ", 64)
	tokens, targets := make([]int32, b*tt), make([]int32, b*tt)
	for i := range tokens {
		row, col := i/tt, i%tt
		p := row*97 + col
		tokens[i], targets[i] = int32(text[p]), int32(text[p+1])
	}
	losses := make([]float64, steps)
	for s := range steps {
		m.ZeroGrad()
		sum, n := m.ForwardBackward(tokens, targets, b, tt, 1/float32(b*tt))
		losses[s] = sum / float64(n)
		opt.Step(3e-3)
	}
	dev.Sync()
	return losses
}

// TestGPUTrainSmallMatchesCPU trains the small preset on the CPU and on the
// GPU from the same seed and batch. FP32 GEMMs differ from the CPU only in
// summation order (relative 1e-6 per step), which AdamW's normalised steps
// can amplify a little over 12 steps: the curves must agree within 1e-3
// relative at every step. TF32 rounds GEMM inputs to 11 bits: 3e-2. A second
// FP32 run on the GPU must repeat the first bit for bit.
func TestGPUTrainSmallMatchesCPU(t *testing.T) {
	const steps, b, tt = 12, 4, 64
	cpuL := trainLosses(t, tensor.CPU{}, steps, b, tt)
	gpuL := trainLosses(t, gpu, steps, b, tt)
	if cpuL[steps-1] > 0.8*cpuL[0] {
		t.Fatalf("CPU loss went from %.4f to %.4f: the run does not learn, so it checks nothing", cpuL[0], cpuL[steps-1])
	}
	for s := range steps {
		rel := math.Abs(gpuL[s]-cpuL[s]) / cpuL[s]
		t.Logf("step %2d  cpu %.6f  gpu/fp32 %.6f  rel %.2g", s, cpuL[s], gpuL[s], rel)
		if rel > 1e-3 || math.IsNaN(gpuL[s]) {
			t.Errorf("step %d: GPU loss %.6f vs CPU %.6f (relative %.2g > 1e-3)", s, gpuL[s], cpuL[s], rel)
		}
	}
	again := trainLosses(t, gpu, steps, b, tt)
	for s := range steps {
		if again[s] != gpuL[s] {
			t.Errorf("step %d: second GPU run gave %v, first %v: not reproducible", s, again[s], gpuL[s])
		}
	}
	tf, err := New(Options{Precision: TF32})
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	tfL := trainLosses(t, tf, steps, b, tt)
	for s := range steps {
		rel := math.Abs(tfL[s]-cpuL[s]) / cpuL[s]
		t.Logf("step %2d  gpu/tf32 %.6f  rel %.2g", s, tfL[s], rel)
		if rel > 3e-2 || math.IsNaN(tfL[s]) {
			t.Errorf("step %d: TF32 loss %.6f vs CPU %.6f (relative %.2g > 3e-2)", s, tfL[s], cpuL[s], rel)
		}
	}
	// BF16: every GEMM and attention (on the tensor cores) rounds its
	// operands to 8 significant bits: 5e-2.
	bf, err := New(Options{Precision: BF16})
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	bfL := trainLosses(t, bf, steps, b, tt)
	for s := range steps {
		rel := math.Abs(bfL[s]-cpuL[s]) / cpuL[s]
		t.Logf("step %2d  gpu/bf16 %.6f  rel %.2g", s, bfL[s], rel)
		if rel > 5e-2 || math.IsNaN(bfL[s]) {
			t.Errorf("step %d: BF16 loss %.6f vs CPU %.6f (relative %.2g > 5e-2)", s, bfL[s], cpuL[s], rel)
		}
	}
}
