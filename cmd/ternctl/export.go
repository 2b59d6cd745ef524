package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/hf"
)

type exportFlags struct {
	out      string
	maxShard string
	output   string
}

func newExportCmd(e *env, cf *clusterFlags) *cobra.Command {
	var f exportFlags
	c := &cobra.Command{
		Use:   "export CHECKPOINT|JOB --out DIR",
		Short: "Write a checkpoint as a Hugging Face LLaMA model directory",
		Long: "Write a checkpoint's weights as a Hugging Face LlamaForCausalLM directory that\n" +
			"transformers loads with from_pretrained: float32 safetensors (split into several\n" +
			"files with an index above --max-shard-size), config.json, generation_config.json,\n" +
			"tokenizer files where tern can produce them (GPT-2's vocab.json and merges.txt)\n" +
			"and a README.md.\n\n" +
			"CHECKPOINT is a checkpoint root (its newest complete step is used) or one step\n" +
			"directory. Every pipeline stage's file and vocabulary shard is gathered and the\n" +
			"rows a vocabulary-parallel job padded the vocabulary with are dropped. JOB, a\n" +
			"cluster job's name, means its spec.checkpoint.dir, which must be readable here.",
		Example: "  ternctl export ckpt --out my-model\n" +
			"  ternctl export ckpt/step-00000600 --out my-model --max-shard-size 500MiB",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exportRun(e, args[0], resolver(cmd, cf), &f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.out, "out", "", "directory to write (created; earlier weight files in it are replaced)")
	fl.StringVar(&f.maxShard, "max-shard-size", "2GiB", "split the weights into files of at most this size (bytes, or with KiB/MiB/GiB/KB/MB/GB)")
	fl.StringVarP(&f.output, "output", "o", "text", "format: text or json")
	_ = c.MarkFlagDirname("out")
	_ = c.RegisterFlagCompletionFunc("output", fixedCompletion("text", "json"))
	return c
}

// parseSize reads a byte count such as 2GiB, 500MB or 1048576.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mul    int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	num, mul := strings.TrimSpace(s), int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mul = strings.TrimSpace(n), u.mul
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || v*float64(mul) > 1<<62 {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, optionally with KiB, MiB, GiB, KB, MB or GB", s)
	}
	return int64(v * float64(mul)), nil
}

type exportResult struct {
	Dir     string   `json:"dir"`
	Job     string   `json:"job,omitempty"`
	Step    int64    `json:"step"`
	Params  int64    `json:"params"`
	Bytes   int64    `json:"bytes"`
	Files   []string `json:"files"`
	Seconds float64  `json:"seconds"`
}

func exportRun(e *env, src string, resolve sourceResolver, f *exportFlags) error {
	if err := outputFlag(f.output); err != nil {
		return err
	}
	if f.out == "" {
		return usagef("no output directory: pass --out DIR")
	}
	maxShard, err := parseSize(f.maxShard)
	if err != nil {
		return usagef("--max-shard-size: %v", err)
	}
	start := time.Now()
	src, err = resolve(src)
	if err != nil {
		return err
	}
	ck, err := hf.ReadCheckpoint(src)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	w, err := hf.Write(f.out, ck.Config, ck.Tensors, hf.WriteOptions{MaxShardBytes: maxShard, Source: src, Step: ck.Step})
	if err != nil {
		return err
	}
	res := exportResult{Dir: f.out, Job: ck.Job.Metadata.Name, Step: ck.Step, Params: ck.Config.NumParams(),
		Bytes: w.Bytes, Files: w.Files, Seconds: time.Since(start).Seconds()}
	if f.output == "json" {
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s\n", b)
		return nil
	}
	fmt.Fprintf(e.stdout, "exported step %d of job %s (%s params, %s of float32 weights in %d file(s)) to %s in %.1fs\n",
		res.Step, res.Job, fmtCount(float64(res.Params)), fmtBytes(res.Bytes), len(w.WeightFile), res.Dir, res.Seconds)
	fmt.Fprintf(e.stdout, "files: %s\n", strings.Join(res.Files, ", "))
	return nil
}
