package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/hf"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/safetensors"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
)

// loadedModel is a whole model read for inference, with where it came from.
type loadedModel struct {
	m      *model.Model
	source string
	step   int64             // -1 for a Hugging Face directory
	job    *spec.TrainingJob // nil for a Hugging Face directory
}

// loadModel reads SOURCE: a tern checkpoint (root or step directory) or
// hf:DIR, a Hugging Face LLaMA directory; for a directory, tokenizer and
// seqLen (when set) override its tern_tokenizer and max_position_embeddings.
func loadModel(src, tokenizer string, seqLen int) (*loadedModel, error) {
	if dir, ok := spec.InitSource(src).HFDir(); ok {
		m, err := hf.OpenModel(dir, seqLen, tokenizer)
		if err != nil {
			return nil, err
		}
		return &loadedModel{m: m, source: src, step: -1}, nil
	}
	if strings.HasPrefix(src, spec.InitHFPrefix) {
		return nil, usagef("%q names no directory: write hf:DIR", src)
	}
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist (SOURCE is a checkpoint directory or hf:DIR)", src)
	}
	ck, err := hf.ReadCheckpoint(src)
	if err != nil {
		return nil, err
	}
	m, err := ck.Model()
	if err != nil {
		return nil, err
	}
	return &loadedModel{m: m, source: src, step: ck.Step, job: ck.Job}, nil
}

type evalFlags struct {
	batches    int
	batchSize  int
	file       string
	output     string
	tokens     string
	dumpLogits string
}

func newEvalCmd(e *env, cf *clusterFlags) *cobra.Command {
	var f evalFlags
	c := &cobra.Command{
		Use:   "eval SOURCE",
		Short: "Print a model's validation loss and perplexity on its job's held-out split",
		Long: "Evaluate a model on the held-out (validation) split of the job that trained it:\n" +
			"the mean next-token cross-entropy in nats and its exponential, the perplexity.\n\n" +
			"SOURCE is a checkpoint (root or step directory), whose manifest holds the job\n" +
			"spec, a cluster job's name (its spec.checkpoint.dir), or hf:DIR, a Hugging Face\n" +
			"LLaMA directory, which needs -f JOB.yaml for its data. The corpus is loaded and split exactly as training did. The model runs\n" +
			"with its true vocabulary: a vocabulary-parallel job's padding rows are not\n" +
			"classes here, so the loss can be a hair below the one training printed.",
		Example: "  ternctl eval ckpt\n" +
			"  ternctl eval ckpt --batches 0 -o json   # every held-out window\n" +
			"  ternctl eval hf:my-model -f job.yaml",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return evalRun(cmd, e, args[0], resolver(cmd, cf), &f)
		},
	}
	fl := c.Flags()
	fl.IntVar(&f.batches, "batches", -1, "held-out batches to evaluate; 0 = every window (default: the job's spec.eval.batches)")
	fl.IntVar(&f.batchSize, "batch-size", 0, "sequences per batch (default: the job's batch.microBatchSize)")
	fl.StringVarP(&f.file, "filename", "f", "", "job spec whose data to evaluate on (required for hf:DIR; overrides the checkpoint's)")
	fl.StringVarP(&f.output, "output", "o", "text", "format: text or json")
	// Interoperability checks: logits of fixed sequences, no data needed.
	fl.StringVar(&f.tokens, "tokens", "", "JSON file of equal-length token id lists; with --dump-logits")
	fl.StringVar(&f.dumpLogits, "dump-logits", "", "write the logits of --tokens to FILE (safetensors: tokens I32 [B,T], logits F32 [B,T,V])")
	_ = fl.MarkHidden("tokens")
	_ = fl.MarkHidden("dump-logits")
	_ = c.RegisterFlagCompletionFunc("output", fixedCompletion("text", "json"))
	return c
}

type evalResult struct {
	Source     string  `json:"source"`
	Step       int64   `json:"step,omitempty"`
	Loss       float64 `json:"loss"`
	Perplexity float64 `json:"perplexity"`
	Tokens     int     `json:"tokens"`
	Batches    int     `json:"batches"`
	BatchSize  int     `json:"batchSize"`
	SeqLen     int     `json:"seqLen"`
	Seconds    float64 `json:"seconds"`
}

func evalRun(cmd *cobra.Command, e *env, src string, resolve sourceResolver, f *evalFlags) error {
	if err := outputFlag(f.output); err != nil {
		return err
	}
	if (f.tokens == "") != (f.dumpLogits == "") {
		return usagef("--tokens and --dump-logits go together")
	}
	var job *spec.TrainingJob
	var err error
	seqLen := 0
	if f.file != "" && f.dumpLogits == "" {
		if job, err = loadJob(e, f.file, nil); err != nil {
			return err
		}
		want, err := job.Spec.Model.Resolve()
		if err != nil {
			return fmt.Errorf("%s: %w", f.file, err)
		}
		seqLen = want.SeqLen
	}
	src, err = resolve(src)
	if err != nil {
		return err
	}
	lm, err := loadModel(src, "", seqLen)
	if err != nil {
		return err
	}
	if f.dumpLogits != "" {
		return dumpLogits(lm.m, f.tokens, f.dumpLogits)
	}
	if job == nil {
		job = lm.job
	}
	if job == nil {
		return usagef("%s holds no job spec to take held-out data from: pass -f JOB.yaml", src)
	}
	c := lm.m.Config()
	if want, err := job.Spec.Model.Resolve(); err != nil {
		return err
	} else if want.SeqLen != c.SeqLen || want.Vocab != c.Vocab {
		return fmt.Errorf("the job's model (vocab %d, seqLen %d) does not match %s (vocab %d, seqLen %d)", want.Vocab, want.SeqLen, src, c.Vocab, c.SeqLen)
	}
	start := time.Now()
	sm, err := train.HeldOut(cmd.Context(), job, e.stderr)
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	bs := f.batchSize
	if bs == 0 {
		bs = job.Spec.Batch.MicroBatchSize
	}
	if bs < 1 {
		return usagef("--batch-size %d must be >= 1", bs)
	}
	nb := f.batches
	if nb < 0 {
		nb = job.Spec.Eval.Batches
	}
	if nb == 0 || nb > sm.EvalBatches(bs) {
		nb = sm.EvalBatches(bs)
	}
	T := c.SeqLen
	in, tg := make([]int32, bs*T), make([]int32, bs*T)
	var sum float64
	var count int
	for i := 0; i < nb; i++ {
		if err := sm.EvalBatch(i, bs, in, tg); err != nil {
			return fmt.Errorf("eval batch %d: %w", i, err)
		}
		if err := cmd.Context().Err(); err != nil {
			return &exitCodeError{exitInterrupted}
		}
		l, n := lm.m.Loss(in, tg, bs, T)
		sum += l
		count += n
	}
	res := evalResult{Source: src, Step: lm.step, Loss: sum / float64(max(count, 1)), Tokens: count, Batches: nb, BatchSize: bs, SeqLen: T,
		Seconds: time.Since(start).Seconds()}
	res.Perplexity = math.Exp(res.Loss)
	if f.output == "json" {
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s\n", b)
		return nil
	}
	fmt.Fprintf(e.stdout, "validation loss %.4f  perplexity %.3f  (%s tokens: %d batches of %d x %d)\n",
		res.Loss, res.Perplexity, fmtCount(float64(res.Tokens)), nb, bs, T)
	return nil
}

// dumpLogits writes the full forward pass's logits of the sequences in
// tokensFile, for comparison with another implementation.
func dumpLogits(m *model.Model, tokensFile, out string) error {
	b, err := os.ReadFile(tokensFile)
	if err != nil {
		return err
	}
	var seqs [][]int32
	if err := json.Unmarshal(b, &seqs); err != nil {
		return fmt.Errorf("%s: want a JSON list of token id lists: %w", tokensFile, err)
	}
	if len(seqs) == 0 || len(seqs[0]) == 0 {
		return fmt.Errorf("%s: no tokens", tokensFile)
	}
	bsz, t := len(seqs), len(seqs[0])
	flat := make([]int32, 0, bsz*t)
	for i, s := range seqs {
		if len(s) != t {
			return fmt.Errorf("%s: sequence %d has %d tokens, sequence 0 has %d; all must be equally long", tokensFile, i, len(s), t)
		}
		flat = append(flat, s...)
	}
	logits, err := m.Logits(flat, bsz, t)
	if err != nil {
		return fmt.Errorf("%s: %w", tokensFile, err)
	}
	ids := make([]byte, 0, 4*len(flat))
	for _, v := range flat {
		ids = append(ids, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	}
	return safetensors.WriteFile(out, []safetensors.Tensor{
		{Name: "tokens", DType: safetensors.DTypeI32, Shape: []int{bsz, t}, Data: ids},
		safetensors.F32("logits", []int{bsz, t, m.Config().Vocab}, logits),
	}, nil)
}
