package main

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
)

const planTestJob = `apiVersion: tern/v1
kind: TrainingJob
metadata: {name: unit}
spec:
  steps: 30
  model: {preset: tiny}
  data: {kind: text, text: "hello world, hello plan", tokenizer: byte}
`

func TestPlanJSONIsOneObject(t *testing.T) {
	r := runCLI(t, false, "plan", "-f", writeJob(t, planTestJob), "-o", "json", "--set", "optimizer.name=grass")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	var p map[string]any
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("stdout has more than one JSON value:\n%s", r.stdout)
	}
	if p["job"] != "unit" || p["optimizer"] != "grass" || p["data_source"] != "inline-text" || p["data_bytes"] != 24.0 {
		t.Fatalf("plan = %v", p)
	}
	var sum float64
	for _, k := range []string{"weights_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "workspace_bytes", "data_bytes", "transient_bytes", "runtime_bytes"} {
		v, ok := p[k].(float64)
		if !ok || v < 0 {
			t.Fatalf("%s = %v", k, p[k])
		}
		sum += v
	}
	if p["total_bytes"] != sum || p["transient_bytes"].(float64) == 0 {
		t.Fatalf("total %v, lines sum to %v; transient %v (GRASS's top-r selection forms full gradients)", p["total_bytes"], sum, p["transient_bytes"])
	}
	per := p["bytes_per_param"].(map[string]any)
	if per["weights"] != 4.0 {
		t.Fatalf("weights take %v bytes per parameter, want 4", per["weights"])
	}
}

func TestPlanText(t *testing.T) {
	r := runCLI(t, false, "plan", "-f", writeJob(t, planTestJob))
	if r.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	for _, w := range []string{"job unit: model tiny", "optimizer adamw", "COMPONENT", "weights ", "4.00", "tokenised corpus (inline-text)", "TOTAL", "predicted peak RSS", "a first run that tokenises it adds up to 16.0 MiB"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
		}
	}
	bpe := strings.Replace(planTestJob, "preset: tiny}", "preset: tiny, vocab: 50257, tokenizer: gpt2}", 1)
	bpe = strings.Replace(bpe, "tokenizer: byte", "tokenizer: gpt2", 1)
	r = runCLI(t, false, "plan", "-f", writeJob(t, bpe))
	if r.code != 0 || !strings.Contains(r.stdout, "unknown") {
		t.Fatalf("BPE corpus: exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestPlanBadSpec(t *testing.T) {
	job := writeJob(t, strings.Replace(planTestJob, "steps: 30", "steps: 30\n  batch: {microBatchSize: 0}\n  optimizer: {name: adam}", 1))
	r := runCLI(t, false, "plan", "-f", job, "-o", "json")
	if r.code != 1 || r.stdout != "" {
		t.Fatalf("exit %d (want 1), stdout %q", r.code, r.stdout)
	}
	for _, w := range []string{"spec.optimizer.name", "spec.batch.microBatchSize"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	if r := runCLI(t, false, "plan"); r.code != 2 {
		t.Fatalf("no -f: exit %d, want 2 (usage)", r.code)
	}
	if r := runCLI(t, false, "plan", "-f", writeJob(t, planTestJob), "-o", "yaml"); r.code != 2 {
		t.Fatalf("-o yaml: exit %d, want 2 (usage)", r.code)
	}
}
