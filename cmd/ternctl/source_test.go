package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A cluster job's name stands for its checkpoint directory in export,
// generate and eval; a job without one, and a name no coordinator knows,
// are refused with what to do instead.
func TestExportGenerateEvalByJobName(t *testing.T) {
	addr := startCluster(t, 1)
	cache, ckpt := t.TempDir(), t.TempDir()
	cli := func(args ...string) result {
		return runCLI(t, false, append([]string{"--coordinator", addr}, args...)...)
	}
	tiny := "../../examples/tiny.yaml"
	if r := cli("apply", "-f", tiny, "--set", "steps=4", "--set", "data.cacheDir="+cache, "--set", "checkpoint.dir="+ckpt); r.code != 0 {
		t.Fatalf("apply: exit %d\n%s", r.code, r.stderr)
	}
	if r := cli("apply", "-f", tiny, "--set", "metadata.name=nockpt", "--set", "steps=2", "--set", "data.cacheDir="+cache); r.code != 0 {
		t.Fatalf("apply nockpt: exit %d\n%s", r.code, r.stderr)
	}
	for _, name := range []string{"tiny", "nockpt"} {
		if r := cli("wait", name); r.code != 0 {
			t.Fatalf("wait %s: exit %d\n%s", name, r.code, r.stderr)
		}
	}

	out := filepath.Join(t.TempDir(), "hf")
	if r := cli("export", "tiny", "--out", out); r.code != 0 || !strings.Contains(r.stdout, "exported step 4 of job tiny") {
		t.Fatalf("export tiny: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "config.json")); err != nil {
		t.Fatalf("export by job name wrote no config.json: %v", err)
	}
	if r := cli("generate", "tiny", "--prompt", "ab", "--max-tokens", "3", "--temperature", "0"); r.code != 0 {
		t.Fatalf("generate tiny: exit %d\n%s", r.code, r.stderr)
	}
	if r := cli("eval", "tiny", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, "perplexity") {
		t.Fatalf("eval tiny: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	for _, c := range []struct{ arg, want string }{
		{"nockpt", "writes no checkpoints (spec.checkpoint.dir is empty)"},
		{"nosuch", "neither a directory here nor a job on the coordinator"},
		{filepath.Join(t.TempDir(), "gone"), "does not exist"},
	} {
		r := cli("export", c.arg, "--out", filepath.Join(t.TempDir(), "x"))
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("export %s: exit %d, stderr %q; want an error containing %q", c.arg, r.code, r.stderr, c.want)
		}
	}
}
