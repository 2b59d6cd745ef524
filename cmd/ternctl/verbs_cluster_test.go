package main

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// logs, pause, resume, top and the times and ETA of get and describe,
// against a real coordinator and workers.
func TestClusterLogsPauseResumeTop(t *testing.T) {
	addr := startCluster(t, 1, 1)
	cli := func(args ...string) result {
		return runCLI(t, false, append([]string{"--coordinator", addr}, args...)...)
	}
	ckpt := t.TempDir()
	if r := cli("apply", "-f", "../../examples/tiny.yaml", "--set", "metadata.name=long", "--set", "steps=100000",
		"--set", "eval.everySteps=0", "--set", "checkpoint.dir="+ckpt, "--set", "checkpoint.everySteps=1000", "--set", "data.cacheDir="+t.TempDir()); r.code != 0 {
		t.Fatalf("apply: exit %d\n%s", r.code, r.stderr)
	}
	eventually(t, "three committed steps", func() bool { return getJob(t, addr, "long").CommittedStep >= 3 })

	r := cli("get", "jobs", "long", "-o", "json")
	var v jobView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Created == nil || v.Started == nil || v.Finished != nil ||
		v.ETASeconds == nil || *v.ETASeconds <= 0 || v.StepMS == nil || len(v.Attempts) != 1 {
		t.Fatalf("get jobs long -o json (%v):\n%s", err, r.stdout)
	}
	if r := cli("get", "jobs"); r.code != 0 || !regexp.MustCompile(`NAME\s+PHASE\s+PROGRESS\s+LOSS\s+TOKENS/S\s+ETA\s+AGE\s+REASON`).MatchString(r.stdout) {
		t.Fatalf("get jobs:\n%s", r.stdout)
	}
	r = cli("get", "workers", "-o", "json")
	var ws struct{ Items []workerView }
	if err := json.Unmarshal([]byte(r.stdout), &ws); err != nil || len(ws.Items) != 2 || ws.Items[0].Pid != int32(os.Getpid()) || ws.Items[0].Registered == nil {
		t.Fatalf("get workers -o json (%v):\n%s", err, r.stdout)
	}

	// Logs: one rank's tail unprefixed, every rank's merged with prefixes.
	r = cli("logs", "long", "--rank", "0", "--tail", "2")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[1], "step ") {
		t.Fatalf("logs --rank 0 --tail 2: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("logs", "long", "--timestamps"); r.code != 0 || !regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\S+ \[attempt 1 rank 0\] step \d+/100000 loss`).MatchString(r.stdout) {
		t.Fatalf("logs --timestamps: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("logs", "long", "--rank", "3"); r.code != exitError || !strings.Contains(r.stderr, "job \"long\" has ranks 0 to 0, not 3") {
		t.Fatalf("logs --rank 3: exit %d\n%s", r.code, r.stderr)
	}
	// Following, then Ctrl-C: the command ends cleanly and the job goes
	// on; the same for top -w.
	interrupt(t, addr, func(ctx context.Context) {
		r := runCLICtx(ctx, false, "--coordinator", addr, "top", "long", "-w")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "job/long  Running") {
			t.Errorf("top -w: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
	interrupt(t, addr, func(ctx context.Context) {
		r := runCLICtx(ctx, false, "--coordinator", addr, "logs", "long", "-f", "--since", "1h")
		if r.code != 0 || !strings.Contains(r.stdout, "] step ") {
			t.Errorf("logs -f: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	// Pause and resume.
	if r := cli("pause", "long"); r.code != 0 || r.stdout != "job/long paused\n" || !strings.Contains(r.stderr, "continues from it") {
		t.Fatalf("pause: exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("pause", "long"); r.code != exitError || !strings.Contains(r.stderr, "already paused") {
		t.Fatalf("pause again: exit %d\n%s", r.code, r.stderr)
	}
	if v := getJob(t, addr, "long"); v.Phase != "Paused" {
		t.Fatalf("after pause: %s", v.Phase)
	}
	if r := cli("resume", "long"); r.code != 0 || r.stdout != "job/long resumed\n" {
		t.Fatalf("resume: exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
	eventually(t, "attempt 2 running", func() bool {
		v := getJob(t, addr, "long")
		return v.Attempt == 2 && v.Phase == "Running" && len(v.Ranks) == 1 && v.Ranks[0].Step > 0
	})
	r = cli("describe", "job", "long")
	if r.code != 0 || !strings.Contains(r.stdout, "Created:") || !regexp.MustCompile(`(?m)^  1\s+\S+ ago\s+\S+\s+0\s+\d+\s+paused by the user`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^  2\s+\S+ ago\s+\S+\s+[1-9]\d*\s+\d+\s+running`).MatchString(r.stdout) || !strings.Contains(r.stdout, "Paused") {
		t.Fatalf("describe: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("logs", "long", "--attempt", "2", "--rank", "0"); r.code != 0 || !strings.Contains(r.stdout, "attempt 2 resumes from checkpoint "+ckpt) {
		t.Fatalf("logs of attempt 2: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = cli("top", "long")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "job/long  Running  attempt 2  restarts 0/3\n") || !strings.Contains(r.stdout, "|*") || !strings.Contains(r.stdout, "step\n") {
		t.Fatalf("top: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("cancel", "long"); r.code != 0 {
		t.Fatalf("cancel: exit %d\n%s", r.code, r.stderr)
	}
	// Over: -f and -w show what there is and end.
	if r := cli("logs", "long", "-f", "--tail", "1"); r.code != 0 || strings.Count(r.stdout, "\n") != 1 || !strings.Contains(r.stderr, "job/long is Cancelled") {
		t.Fatalf("logs -f of a cancelled job: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("top", "long", "-w"); r.code != 0 || strings.Count(r.stdout, "job/long  Cancelled") != 1 {
		t.Fatalf("top -w of a cancelled job: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("resume", "long"); r.code != exitError || !strings.Contains(r.stderr, "only a paused job can resume") {
		t.Fatalf("resume a cancelled job: exit %d\n%s", r.code, r.stderr)
	}
}

func TestNewVerbsWithoutCoordinator(t *testing.T) {
	addr := deadAddr(t)
	for _, args := range [][]string{{"logs", "x"}, {"logs", "x", "-f"}, {"pause", "x"}, {"resume", "x"}, {"top", "x"}, {"top", "x", "-w"}} {
		r := runCLI(t, false, append([]string{"--coordinator", addr}, args...)...)
		if r.code != exitConnection || !strings.HasPrefix(r.stderr, "error: no coordinator at "+addr) || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr:\n%s", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, args := range [][]string{{"logs"}, {"logs", "x", "--rank", "-2"}, {"logs", "x", "--since", "-1m"}, {"logs", "x", "--attempt", "-1"},
		{"top", "x", "--width", "5"}, {"top", "x", "--height", "1000"}, {"pause"}, {"resume", "a", "b"}} {
		r := runCLI(t, false, append([]string{"--coordinator", addr}, args...)...)
		if r.code != exitUsage || !strings.HasPrefix(r.stderr, "error: ") {
			t.Errorf("%v: exit %d, stderr:\n%s", args, r.code, r.stderr)
		}
	}
}

// interrupt runs f with a context cancelled, like a Ctrl-C, once the job
// "long" has committed two more steps.
func interrupt(t *testing.T, addr string, f func(ctx context.Context)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	from := getJob(t, addr, "long").CommittedStep
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel()
		deadline := time.Now().Add(clusterDeadline)
		for time.Now().Before(deadline) {
			r := runCLI(t, false, "--coordinator", addr, "get", "jobs", "long", "-o", "json")
			var v jobView
			if json.Unmarshal([]byte(r.stdout), &v) == nil && v.CommittedStep >= from+2 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	f(ctx)
	<-done
	if v := getJob(t, addr, "long"); v.Phase != "Running" {
		t.Fatalf("after the interrupt the job is %s", v.Phase)
	}
}
