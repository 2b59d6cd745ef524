// Command dump writes the inputs and tern's results for the Hugging Face
// cross-check (scripts/crosscheck/llama_hf.py): a small LLaMA with grouped-query
// attention, its weights, a batch with an ignored target, tern's loss and
// gradients, and the weights after one AdamW step.
//
//	go run ./scripts/crosscheck/dump -out out/crosscheck.safetensors
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/safetensors"
)

func main() {
	out := flag.String("out", "out/crosscheck.safetensors", "output file")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "dump:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	cfg := model.Config{Vocab: 97, Dim: 48, Layers: 2, Heads: 6, KVHeads: 2, FFN: 128, SeqLen: 40,
		RopeTheta: 10000, NormEps: 1e-5, Tokenizer: "byte"}
	const b, t = 2, 40
	m, err := model.New(cfg, 7, false)
	if err != nil {
		return err
	}
	// Norm weights start at 1; move them so the check sees their gradients act.
	rng := uint64(12345)
	for _, p := range m.Params() {
		if p.Role == model.RoleNorm {
			for i := range p.W {
				rng = rng*6364136223846793005 + 1442695040888963407
				p.W[i] = 1 + 0.2*(float32(rng>>40)/float32(1<<24)-0.5)
			}
		}
	}
	var ts []safetensors.Tensor
	for _, p := range m.Params() {
		ts = append(ts, safetensors.F32(p.Name, p.Shape, append([]float32(nil), p.W...)))
	}
	tokens := make([]int32, b*t)
	targets := make([]int32, b*t)
	for i := range tokens {
		rng = rng*6364136223846793005 + 1442695040888963407
		tokens[i] = int32((rng >> 33) % uint64(cfg.Vocab))
	}
	for i := range targets {
		if (i+1)%t != 0 {
			targets[i] = tokens[i+1]
		} else {
			targets[i] = int32((i * 31) % cfg.Vocab)
		}
	}
	targets[5] = -1 // ignored
	ts = append(ts, i32("input_ids", []int{b, t}, tokens), i32("targets", []int{b, t}, targets))

	m.ZeroGrad()
	loss, n := m.ForwardBackward(tokens, targets, b, t, 1)
	ts = append(ts, f64("tern.loss_sum", loss))
	for _, p := range m.Params() {
		ts = append(ts, safetensors.F32("tern.grad."+p.Name, p.Shape, append([]float32(nil), p.G...)))
	}
	ocfg := optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	const lr = 1e-3
	o, err := optim.NewAdamW(m.Params(), ocfg)
	if err != nil {
		return err
	}
	o.Step(lr)
	for _, p := range m.Params() {
		ts = append(ts, safetensors.F32("tern.adamw."+p.Name, p.Shape, p.W))
	}
	cj, _ := json.Marshal(cfg)
	oj, _ := json.Marshal(map[string]float64{"lr": lr, "beta1": ocfg.Beta1, "beta2": ocfg.Beta2, "eps": ocfg.Eps, "weightDecay": ocfg.WeightDecay})
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := safetensors.WriteFile(out, ts, map[string]string{"format": "pt", "config": string(cj), "adamw": string(oj)}); err != nil {
		return err
	}
	fmt.Printf("wrote %s: loss_sum %.6f over %d tokens\n", out, loss, n)
	return nil
}

func i32(name string, shape []int, v []int32) safetensors.Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return safetensors.Tensor{Name: name, DType: "I32", Shape: shape, Data: b}
}

func f64(name string, v float64) safetensors.Tensor {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, math.Float64bits(v))
	return safetensors.Tensor{Name: name, DType: "F64", Shape: []int{1}, Data: b}
}
