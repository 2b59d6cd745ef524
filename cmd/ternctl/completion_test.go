package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// completions runs cobra's hidden __complete and returns the candidates,
// without the trailing directive line.
func completions(t *testing.T, args ...string) []string {
	t.Helper()
	r := runCLI(t, false, append([]string{"__complete"}, args...)...)
	if r.code != 0 {
		t.Fatalf("__complete %v: exit %d\n%s", args, r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], ":") {
		t.Fatalf("__complete %v: no directive line in %q", args, r.stdout)
	}
	var out []string
	for _, l := range lines[:len(lines)-1] {
		name, _, _ := strings.Cut(l, "\t") // a description may follow
		out = append(out, name)
	}
	return out
}

// jobVerbs are the commands whose argument is a job name, as the user
// types them before it.
var jobVerbs = [][]string{{"get", "jobs"}, {"describe", "job"}, {"wait"}, {"cancel"}, {"delete", "job"}, {"logs"}, {"pause"}, {"resume"}, {"top"}}

func TestCompletionOfJobNames(t *testing.T) {
	t.Setenv("TERN_CONFIG", filepath.Join(t.TempDir(), "config"))
	t.Setenv("TERN_COORDINATOR", "")
	addr := startCluster(t, 1)
	// Two slots wanted, one there: the job stays Pending, which is enough
	// for it to have a name.
	if r := runCLI(t, false, "--coordinator", addr, "apply", "-f", "../../examples/tiny.yaml", "--set", "metadata.name=pending-one",
		"--set", "parallel.data=2", "--set", "data.cacheDir="+t.TempDir()); r.code != 0 {
		t.Fatalf("apply: exit %d\n%s", r.code, r.stderr)
	}
	// Through the current context, as a shell would call it: no flags.
	if r := runCLI(t, false, "config", "set-context", "here", "--coordinator", addr, "--current"); r.code != 0 {
		t.Fatalf("set-context: %s", r.stderr)
	}
	verbs := 0
	entered := false
	root := newRootCmd(&env{}, &entered)
	for _, v := range jobVerbs {
		if c, _, err := root.Find(v[:1]); err != nil || c.Name() != v[0] {
			continue // a verb this build does not have
		}
		verbs++
		got := completions(t, append(v, "")...)
		if len(got) != 1 || got[0] != "pending-one" {
			t.Errorf("%v: completions %q, want the job's name", v, got)
		}
	}
	if verbs < len(jobVerbs) {
		t.Fatalf("only %d of the job verbs exist", verbs)
	}
	if got := completions(t, "config", "use-context", ""); len(got) != 1 || got[0] != "here" {
		t.Errorf("use-context: %q", got)
	}
	if got := completions(t, "get", ""); strings.Join(got, ",") != "jobs,workers" {
		t.Errorf("get: %q", got)
	}

	// Nothing answers: no candidates, no error, no delay beyond the dial.
	if r := runCLI(t, false, "config", "set-context", "here", "--coordinator", deadAddr(t)); r.code != 0 {
		t.Fatal(r.stderr)
	}
	for _, v := range jobVerbs[:3] {
		if got := completions(t, append(v, "")...); len(got) != 0 {
			t.Errorf("%v with no coordinator: %q, want nothing", v, got)
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_ternctl", "zsh": "#compdef ternctl", "fish": "complete -c ternctl"} {
		r := runCLI(t, false, "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: exit %d, script lacks %q\n%s", shell, r.code, want, r.stderr)
		}
	}
	if r := runCLI(t, false, "completion", "tcsh"); r.code != exitUsage {
		t.Errorf("completion tcsh: exit %d\n%s", r.code, r.stderr)
	}
}
