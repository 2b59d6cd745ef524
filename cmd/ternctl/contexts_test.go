package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestContexts(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "sub", "config")
	t.Setenv("TERN_CONFIG", cfg)
	t.Setenv("TERN_COORDINATOR", "")
	cli := func(args ...string) result { t.Helper(); return runCLI(t, false, args...) }

	if r := cli("config", "get-contexts"); r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "No contexts in "+cfg) {
		t.Fatalf("get-contexts, none: exit %d %q\n%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("config", "current-context"); r.code != exitError || !strings.Contains(r.stderr, "no current context") {
		t.Fatalf("current-context, none: exit %d\n%s", r.code, r.stderr)
	}
	dead := deadAddr(t)
	if r := cli("config", "set-context", "lab", "--coordinator", dead); r.code != 0 || r.stdout != "Context \"lab\" created.\n" {
		t.Fatalf("set-context: exit %d %q\n%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("config", "set-context", "other", "--coordinator", "127.0.0.1:9", "--current"); r.code != 0 {
		t.Fatalf("set-context other: exit %d\n%s", r.code, r.stderr)
	}
	if r := cli("config", "use-context", "lab"); r.code != 0 || r.stdout != "Switched to context \"lab\".\n" {
		t.Fatalf("use-context: exit %d %q\n%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("config", "current-context"); r.code != 0 || r.stdout != "lab\n" {
		t.Fatalf("current-context: exit %d %q", r.code, r.stdout)
	}
	r := cli("config", "get-contexts")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[1], "*") || !strings.Contains(lines[1], "lab") || !strings.Contains(lines[1], dead) ||
		strings.HasPrefix(lines[2], "*") {
		t.Fatalf("get-contexts: exit %d\n%s", r.code, r.stdout)
	}
	if r := cli("config", "get-contexts", "-o", "name"); r.stdout != "lab\nother\n" {
		t.Fatalf("get-contexts -o name: %q", r.stdout)
	}

	// Cluster commands go to the current context's coordinator, unless
	// TERN_COORDINATOR or --coordinator say otherwise.
	if r := cli("get", "jobs"); r.code != exitConnection || !strings.Contains(r.stderr, "no coordinator at "+dead) {
		t.Fatalf("get jobs via the context: exit %d\n%s", r.code, r.stderr)
	}
	env := deadAddr(t)
	t.Setenv("TERN_COORDINATOR", env)
	if r := cli("get", "jobs"); !strings.Contains(r.stderr, "no coordinator at "+env) {
		t.Fatalf("TERN_COORDINATOR over the context:\n%s", r.stderr)
	}
	flag := deadAddr(t)
	if r := cli("--coordinator", flag, "get", "jobs"); !strings.Contains(r.stderr, "no coordinator at "+flag) {
		t.Fatalf("--coordinator over TERN_COORDINATOR:\n%s", r.stderr)
	}
	t.Setenv("TERN_COORDINATOR", "")

	// The context's token file is what --token-file defaults to. Something
	// listens at the address, so that reading the token is what fails.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tok := filepath.Join(t.TempDir(), "missing-token")
	if r := cli("config", "set-context", "lab", "--token-file", tok, "--coordinator", l.Addr().String()); r.code != 0 || r.stdout != "Context \"lab\" modified.\n" {
		t.Fatalf("set-context --token-file: exit %d %q\n%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("get", "jobs"); r.code == 0 || !strings.Contains(r.stderr, tok) {
		t.Fatalf("get jobs with the context's token file missing: exit %d\n%s", r.code, r.stderr)
	}

	// The file round-trips through view, and is the user's alone.
	r = cli("config", "view")
	var view ternConfig
	if err := yaml.UnmarshalStrict([]byte(r.stdout), &view); err != nil || view.CurrentContext != "lab" || len(view.Contexts) != 2 ||
		view.Contexts[0].Coordinator != l.Addr().String() || view.Contexts[0].TokenFile != tok {
		t.Fatalf("view: %v\n%s", err, r.stdout)
	}
	if st, err := os.Stat(cfg); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v", st, err)
	}

	// Mistakes name what is wrong.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"config", "use-context", "nosuch"}, exitError, `no context named "nosuch" (have: lab, other)`},
		{[]string{"config", "set-context", "new"}, exitUsage, `context "new" is new: pass --coordinator`},
		{[]string{"config", "set-context", "bad name", "--coordinator", "127.0.0.1:1"}, exitUsage, "context name \"bad name\""},
		{[]string{"config", "set-context", "x", "--coordinator", "nohostport"}, exitUsage, "is not host:port"},
		{[]string{"config", "view", "-o", "xml"}, exitUsage, "allowed: yaml, json"},
		{[]string{"config", "delete-context", "nosuch"}, exitError, "no context named"},
	} {
		if r := cli(tc.args...); r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr:\n%s", tc.args, r.code, r.stderr)
		}
	}

	if r := cli("config", "delete-context", "lab"); r.code != 0 {
		t.Fatalf("delete-context: exit %d\n%s", r.code, r.stderr)
	}
	if r := cli("config", "current-context"); r.code != exitError {
		t.Fatalf("current-context after deleting it: exit %d %q", r.code, r.stdout)
	}
	// With no current context, the default address is back.
	if got := coordinatorDefault(); got != defaultCoordinator {
		t.Fatalf("default with no current context: %s", got)
	}

	// A broken file is reported by config commands, with its path.
	if err := os.WriteFile(cfg, []byte("current-context: a\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := cli("config", "view"); r.code != exitError || !strings.Contains(r.stderr, cfg) || !strings.Contains(r.stderr, "bogus") {
		t.Fatalf("view of a broken file: exit %d\n%s", r.code, r.stderr)
	}
}
