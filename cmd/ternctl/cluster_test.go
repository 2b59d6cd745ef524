package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ternml/tern/pkg/coordinator"
	"github.com/ternml/tern/pkg/coordinator/store"
	"github.com/ternml/tern/pkg/worker"
)

// clusterDeadline bounds every wait for a condition; it only matters when
// a test is failing.
const clusterDeadline = 90 * time.Second

// startCluster runs a coordinator with an embedded etcd and one worker
// agent per entry of slots, all in this process over loopback gRPC, and
// returns the coordinator's address once every worker is connected.
func startCluster(t *testing.T, slots ...int) string {
	t.Helper()
	co, err := coordinator.New(coordinator.Options{Listen: "127.0.0.1:0", DataDir: t.TempDir(),
		Etcd: store.EmbedOptions{UnsafeNoFsync: true}})
	if err != nil {
		t.Fatal(err)
	}
	addr := co.Addr()
	ctx, cancel := context.WithCancel(context.Background())
	coDone := make(chan error, 1)
	go func() { coDone <- co.Run(ctx) }()
	var workerDone []chan error
	for i, n := range slots {
		a, err := worker.New(worker.Config{Coordinator: addr, Name: fmt.Sprintf("w%d", i+1), Slots: n, DrainTimeout: clusterDeadline})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		workerDone = append(workerDone, done)
	}
	t.Cleanup(func() {
		cancel()
		for i, d := range workerDone {
			if err := <-d; err != nil {
				t.Errorf("worker %d: %v", i+1, err)
			}
		}
		if err := <-coDone; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	})
	eventually(t, fmt.Sprintf("%d connected workers", len(slots)), func() bool {
		r := runCLI(t, false, "--coordinator", addr, "get", "workers", "-o", "json")
		if r.code != 0 {
			return false // still starting
		}
		var list struct{ Items []workerView }
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
			t.Fatalf("get workers -o json: %v\n%s", err, r.stdout)
		}
		n := 0
		for _, w := range list.Items {
			if w.Connected {
				n++
			}
		}
		return n == len(slots)
	})
	return addr
}

// eventually polls cond until it holds, failing the test at the deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(clusterDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v", what, clusterDeadline)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getJob(t *testing.T, addr, name string) jobView {
	t.Helper()
	r := runCLI(t, false, "--coordinator", addr, "get", "jobs", name, "-o", "json")
	if r.code != 0 {
		t.Fatalf("get jobs %s: exit %d\n%s", name, r.code, r.stderr)
	}
	var v jobView
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("get jobs %s -o json: %v\n%s", name, err, r.stdout)
	}
	return v
}

func TestClusterVerbs(t *testing.T) {
	addr := startCluster(t, 1, 1)
	cache := t.TempDir()
	tiny := "../../examples/tiny.yaml"
	cli := func(args ...string) result {
		return runCLI(t, false, append([]string{"--coordinator", addr}, args...)...)
	}

	// A job that fits runs to the end.
	r := cli("apply", "-f", tiny, "--set", "steps=10", "--set", "data.cacheDir="+cache)
	if r.code != 0 || r.stdout != "job/tiny created\n" {
		t.Fatalf("apply: exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("submit", "-f", tiny, "--set", "steps=10", "--set", "data.cacheDir="+cache); r.code != 0 || r.stdout != "job/tiny unchanged\n" {
		t.Fatalf("apply again: exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("wait", "tiny"); r.code != 0 || !strings.Contains(r.stderr, "job/tiny succeeded") {
		t.Fatalf("wait tiny: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	v := getJob(t, addr, "tiny")
	if v.Phase != "Succeeded" || v.CommittedStep != 10 || v.ProgressPercent != 100 || v.Summary == nil || v.LastLoss == nil {
		t.Fatalf("tiny after wait: %+v", v)
	}
	var sp struct {
		Spec struct{ Data struct{ Path string } }
	}
	if err := json.Unmarshal(v.Spec, &sp); err != nil || !filepath.IsAbs(sp.Spec.Data.Path) {
		t.Fatalf("spec.data.path sent as %q (%v): want it absolute", sp.Spec.Data.Path, err)
	}
	if r := cli("describe", "job", "tiny"); r.code != 0 || !regexp.MustCompile(`(?m)^Phase:\s+Succeeded$`).MatchString(r.stdout) || !strings.Contains(r.stdout, "Summary:") {
		t.Fatalf("describe: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// -w follows a job to its end; for one that is over, that is one row.
	r = cli("get", "jobs", "tiny", "-w")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); r.code != 0 || len(lines) != 2 || !strings.Contains(lines[1], "Succeeded") {
		t.Fatalf("get jobs tiny -w: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Shell completion offers the coordinator's job names.
	if r := cli("__complete", "wait", ""); r.code != 0 || !strings.HasPrefix(r.stdout, "tiny\n") {
		t.Fatalf("completion of wait: exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}

	// A job needing more slots than exist stays Pending, with a reason.
	if r := cli("apply", "-f", tiny, "--set", "metadata.name=big", "--set", "steps=10", "--set", "parallel.data=3", "--set", "data.cacheDir="+cache); r.code != 0 {
		t.Fatalf("apply big: exit %d\n%s", r.code, r.stderr)
	}
	r = cli("wait", "big", "--timeout", "1s")
	if r.code != exitTimeout || !strings.Contains(r.stderr, "timed out after 1s waiting for job/big: phase Pending") {
		t.Fatalf("wait big: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if v := getJob(t, addr, "big"); v.Phase != "Pending" || v.Reason == "" {
		t.Fatalf("big: phase %s, reason %q", v.Phase, v.Reason)
	}
	r = cli("get", "jobs")
	var bigRow string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(l, "big ") {
			bigRow = l
		}
	}
	if r.code != 0 || !strings.HasPrefix(r.stdout, "NAME") || !strings.Contains(bigRow, "Pending") || !strings.Contains(bigRow, "0/10 (0%)") {
		t.Fatalf("get jobs: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("get", "jobs", "-o", "name"); r.stdout != "job/big\njob/tiny\n" {
		t.Fatalf("get jobs -o name: %q", r.stdout)
	}

	// Cancelled: wait says so with exit 2; then the job can be deleted.
	if r := cli("cancel", "big"); r.code != 0 || r.stdout != "job/big cancelled\n" {
		t.Fatalf("cancel: exit %d, stdout %q\n%s", r.code, r.stdout, r.stderr)
	}
	if r := cli("wait", "big"); r.code != exitCancelled {
		t.Fatalf("wait cancelled: exit %d\n%s", r.code, r.stderr)
	}
	if r := cli("delete", "job", "big"); r.code != 0 || r.stdout != "job/big deleted\n" {
		t.Fatalf("delete: exit %d\n%s", r.code, r.stderr)
	}
	if r := cli("get", "jobs", "big"); r.code != exitError || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("get deleted job: exit %d\n%s", r.code, r.stderr)
	}
	if r := cli("wait", "nosuch"); r.code != exitConnection {
		t.Fatalf("wait nosuch: exit %d\n%s", r.code, r.stderr)
	}

	// A job whose corpus is missing fails on its worker: wait exits 1.
	if r := cli("apply", "-f", tiny, "--set", "metadata.name=broken", "--set", "data.path="+filepath.Join(t.TempDir(), "missing.txt"), "--set", "data.cacheDir="+cache); r.code != 0 {
		t.Fatalf("apply broken: exit %d\n%s", r.code, r.stderr)
	}
	if r := cli("wait", "broken"); r.code != exitError || !strings.Contains(r.stderr, "job/broken failed") {
		t.Fatalf("wait broken: exit %d\n%s", r.code, r.stderr)
	}

	r = cli("get", "workers")
	if r.code != 0 || !strings.Contains(r.stdout, "w1") || !strings.Contains(r.stdout, "w2") || !strings.Contains(r.stdout, "FREE") {
		t.Fatalf("get workers: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestApplyBadSpecPrintsFieldErrors(t *testing.T) {
	// Checked before connecting, so no coordinator is needed.
	p := writeJob(t, "apiVersion: tern/v1\nkind: TrainingJob\nmetadata: {name: bad}\nspec:\n  steps: -1\n  model: {preset: tiny}\n  optimizer: {name: nosuch}\n")
	r := runCLI(t, false, "--coordinator", deadAddr(t), "apply", "-f", p)
	if r.code != exitError || !strings.Contains(r.stderr, "2 problems:") ||
		!strings.Contains(r.stderr, "  spec.steps:") || !strings.Contains(r.stderr, "  spec.optimizer.name:") {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

func TestNoCoordinator(t *testing.T) {
	addr := deadAddr(t)
	for _, args := range [][]string{{"get", "jobs"}, {"get", "workers"}, {"wait", "x"}, {"cancel", "x"}, {"describe", "job", "x"}, {"apply", "-f", "../../examples/tiny.yaml"}} {
		r := runCLI(t, false, append([]string{"--coordinator", addr}, args...)...)
		want := "error: no coordinator at " + addr + ": start one with `coordinator` or pass --coordinator"
		if r.code != exitConnection || !strings.HasPrefix(r.stderr, want) || r.stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr:\n%s", args, r.code, r.stdout, r.stderr)
		}
	}
	t.Setenv("TERN_COORDINATOR", addr)
	if r := runCLI(t, false, "get", "jobs"); r.code != exitConnection || !strings.Contains(r.stderr, addr) {
		t.Errorf("with TERN_COORDINATOR: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

func TestWaitUsageExit3(t *testing.T) {
	for _, args := range [][]string{{"wait"}, {"wait", "a", "b"}, {"wait", "a", "--timeout", "soon"}, {"wait", "a", "--timeout", "-1s"}} {
		if r := runCLI(t, false, args...); r.code != exitConnection || !strings.HasPrefix(r.stderr, "error: ") {
			t.Errorf("%v: exit %d, stderr:\n%s", args, r.code, r.stderr)
		}
	}
}

func TestRPCFieldErrorsPrintOnePerLine(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "invalid").WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: "spec.data.path", Description: "must be absolute"},
		{Field: "spec.steps", Description: "must be positive"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printError(&b, rpcErr("127.0.0.1:7070", "apply job.yaml", st.Err()))
	want := "error: apply job.yaml: 2 problems:\n  spec.data.path: must be absolute\n  spec.steps: must be positive\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// deadAddr is a loopback address nothing listens on (a port just freed).
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
