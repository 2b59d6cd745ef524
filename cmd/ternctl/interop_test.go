package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/safetensors"
)

// interopJob trains a small model for a few steps on inline text, with a
// validation split, and checkpoints at the end.
const interopJob = `apiVersion: tern/v1
kind: TrainingJob
metadata: {name: interop}
spec:
  seed: 3
  steps: 4
  model: {vocab: 256, dim: 32, layers: 2, heads: 4, kvHeads: 2, ffn: 64, seqLen: 32, tokenizer: byte}
  data:
    kind: text
    valFraction: 0.3
    text: |
      package main

      import "fmt"

      func main() {
      	for i := 0; i < 10; i++ {
      		fmt.Println("hello, world", i)
      	}
      }
  batch: {microBatchSize: 2}
  eval: {everySteps: 0}
`

func trainedCheckpoint(t *testing.T) (job, ckpt string) {
	t.Helper()
	job = writeJob(t, strings.Replace(interopJob, "text: |", "cacheDir: "+t.TempDir()+"\n    text: |", 1))
	ckpt = filepath.Join(t.TempDir(), "ckpt")
	r := runCLI(t, false, "train", "-f", job, "--checkpoint-dir", ckpt, "-q", "-o", "json")
	if r.code != 0 {
		t.Fatalf("train: exit %d\n%s", r.code, r.stderr)
	}
	return job, ckpt
}

func TestExportGenerateEval(t *testing.T) {
	job, ckpt := trainedCheckpoint(t)
	out := filepath.Join(t.TempDir(), "hf")
	r := runCLI(t, false, "export", ckpt, "--out", out, "--max-shard-size", "40KiB", "-o", "json")
	if r.code != 0 {
		t.Fatalf("export: exit %d: %s", r.code, r.stderr)
	}
	var ex exportResult
	if err := json.Unmarshal([]byte(r.stdout), &ex); err != nil {
		t.Fatalf("export -o json: %v\n%s", err, r.stdout)
	}
	if ex.Step != 4 || ex.Job != "interop" || len(ex.Files) < 5 {
		t.Fatalf("export result %+v", ex)
	}
	if _, err := os.Stat(filepath.Join(out, "model.safetensors.index.json")); err != nil {
		t.Fatalf("40 KiB shards: %v", err)
	}

	// Greedy generation is the same from the checkpoint and from its export.
	gen := func(src string, extra ...string) generateResult {
		t.Helper()
		args := append([]string{"generate", src, "--prompt", "func main", "--max-tokens", "12", "-o", "json"}, extra...)
		r := runCLI(t, false, args...)
		if r.code != 0 {
			t.Fatalf("generate %s: exit %d: %s", src, r.code, r.stderr)
		}
		var g generateResult
		if err := json.Unmarshal([]byte(r.stdout), &g); err != nil {
			t.Fatalf("generate -o json: %v\n%s", err, r.stdout)
		}
		return g
	}
	a, b := gen(ckpt, "--temperature", "0"), gen("hf:"+out, "--temperature", "0")
	if len(a.Tokens) != 12 || !slices.Equal(a.Tokens, b.Tokens) {
		t.Fatalf("greedy from checkpoint %q (%v), from export %q", a.Text, a.Tokens, b.Text)
	}
	s1, s2 := gen(ckpt, "--seed", "9", "--top-k", "20"), gen(ckpt, "--seed", "9", "--top-k", "20")
	if !slices.Equal(s1.Tokens, s2.Tokens) {
		t.Fatalf("same seed sampled %q and %q", s1.Text, s2.Text)
	}
	// Text mode streams the same continuation to stdout.
	r = runCLI(t, false, "generate", ckpt, "--prompt", "func main", "--max-tokens", "12", "--temperature", "0")
	if want := string(bytesOf(a.Tokens)) + "\n"; r.code != 0 || r.stdout != want || !strings.Contains(r.stderr, "tokens/s") {
		t.Fatalf("generate text: exit %d stdout %q (want %q) stderr %q", r.code, r.stdout, want, r.stderr)
	}

	// Eval: loss and perplexity on the held-out split, the same from the
	// checkpoint and from the export with the job file.
	ev := func(args ...string) evalResult {
		t.Helper()
		r := runCLI(t, false, append([]string{"eval", "-o", "json"}, args...)...)
		if r.code != 0 {
			t.Fatalf("eval %v: exit %d: %s", args, r.code, r.stderr)
		}
		var e evalResult
		if err := json.Unmarshal([]byte(r.stdout), &e); err != nil {
			t.Fatalf("eval -o json: %v\n%s", err, r.stdout)
		}
		return e
	}
	e1, e2 := ev(ckpt), ev("hf:"+out, "-f", job)
	if e1.Tokens == 0 || math.IsNaN(e1.Loss) || e1.Loss <= 0 || math.Abs(e1.Perplexity-math.Exp(e1.Loss)) > 1e-9*e1.Perplexity {
		t.Fatalf("eval %+v", e1)
	}
	if e1.Loss != e2.Loss || e1.Tokens != e2.Tokens {
		t.Fatalf("eval of the checkpoint %+v and of its export %+v differ", e1, e2)
	}
	if r := runCLI(t, false, "eval", "hf:"+out); r.code != exitUsage || !strings.Contains(r.stderr, "-f JOB.yaml") {
		t.Fatalf("eval hf: without a job: exit %d %q", r.code, r.stderr)
	}

	// Logit dumps of the checkpoint and of its export are bitwise equal.
	toks := filepath.Join(t.TempDir(), "tokens.json")
	os.WriteFile(toks, []byte(`[[1,2,3,4,5,6],[250,100,32,10,9,0]]`), 0o644)
	dump := func(src string) []byte {
		t.Helper()
		p := filepath.Join(t.TempDir(), "logits.safetensors")
		if r := runCLI(t, false, "eval", src, "--tokens", toks, "--dump-logits", p); r.code != 0 {
			t.Fatalf("dump %s: %s", src, r.stderr)
		}
		f, err := safetensors.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		l, err := f.Read("logits")
		if err != nil || len(l.Shape) != 3 || l.Shape[0] != 2 || l.Shape[1] != 6 || l.Shape[2] != 256 {
			t.Fatalf("logits %v %v", l.Shape, err)
		}
		return l.Data
	}
	if string(dump(ckpt)) != string(dump("hf:"+out)) {
		t.Fatal("logits of the checkpoint and of its export differ")
	}
}

func bytesOf(ids []int32) []byte {
	b := make([]byte, len(ids))
	for i, v := range ids {
		b[i] = byte(v)
	}
	return b
}

func TestInteropUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"export", "x"}, exitUsage, "--out DIR"},
		{[]string{"export", "/nonexistent/ckpt", "--out", t.TempDir()}, exitError, "does not exist"},
		{[]string{"export", "x", "--out", "y", "--max-shard-size", "lots"}, exitUsage, "--max-shard-size"},
		{[]string{"generate", "x"}, exitUsage, "--prompt"},
		{[]string{"generate", "x", "--prompt", "a", "--temperature", "-1"}, exitUsage, "temperature"},
		{[]string{"generate", "hf:", "--prompt", "a"}, exitUsage, "hf:DIR"},
		{[]string{"generate", "/nonexistent", "--prompt", "a"}, exitError, "does not exist"},
		{[]string{"eval", "x", "--tokens", "t.json"}, exitUsage, "go together"},
		{[]string{"eval", "hf:" + t.TempDir()}, exitError, "no config.json"},
	} {
		r := runCLI(t, false, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"2GiB": 2 << 30, "500MB": 500e6, "1048576": 1 << 20, "1.5KiB": 1536, "10 MiB": 10 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "0", "GiB", "1TiB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}
