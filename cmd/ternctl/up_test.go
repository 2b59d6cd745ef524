package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ternml/tern/pkg/localcluster"
)

// buildTern builds ternctl, coordinator and worker into one directory, as
// make build does, since up looks for the other two next to ternctl.
func buildTern(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+string(os.PathSeparator), "../ternctl", "../coordinator", "../worker")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// ternctlProc runs the built ternctl as its own process, with tern's home
// and config in home and no TERN_COORDINATOR, so only the contexts that up
// writes say where the coordinator is.
type ternctlProc struct {
	t    *testing.T
	bin  string
	home string
}

func (p ternctlProc) run(args ...string) result {
	p.t.Helper()
	cmd := exec.Command(filepath.Join(p.bin, "ternctl"), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TERN_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TERN_HOME="+p.home, "TERN_CONFIG="+filepath.Join(p.home, "config"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		p.t.Fatalf("ternctl %v: %v", args, err)
	}
	return result{code, out.String(), errb.String()}
}

// workers is what get workers -o json says about each worker, by name.
func (p ternctlProc) workers() (map[string]map[string]any, bool) {
	r := p.run("get", "workers", "-o", "json")
	if r.code != 0 {
		return nil, false
	}
	var list struct{ Items []map[string]any }
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		p.t.Fatalf("get workers -o json: %v\n%s", err, r.stdout)
	}
	m := map[string]map[string]any{}
	for _, w := range list.Items {
		m[w["name"].(string)] = w
	}
	return m, true
}

// registeredAs reports whether worker name is connected as the process
// pid: the pid it registered with is the one the state file records.
func registeredAs(ws map[string]map[string]any, name string, pid int) bool {
	w, ok := ws[name]
	if !ok || w["connected"] != true {
		return false
	}
	v, ok := w["pid"].(float64)
	return ok && int(v) == pid
}

func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return true
	}
	// Reaped by nobody yet (our own children are not among these): a
	// zombie is gone too.
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] == "Z"
}

func allPids(st *localcluster.State) []int {
	ps := []int{st.Supervisor.PID}
	for _, p := range st.Procs {
		ps = append(ps, p.PID)
	}
	return ps
}

func TestLocalCluster(t *testing.T) {
	bin := buildTern(t)

	t.Run("restart", func(t *testing.T) {
		home := t.TempDir()
		dir := filepath.Join(home, "local")
		tc := ternctlProc{t, bin, home}
		r := tc.run("up", "--workers", "2", "--spares", "1", "--listen", "127.0.0.1:0", "--grace", "5s", "-o", "json")
		if r.code != 0 {
			t.Fatalf("up: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		var st localcluster.State
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("up -o json: %v\n%s", err, r.stdout)
		}
		stopped := false
		t.Cleanup(func() {
			if !stopped {
				tc.run("down")
			}
		})
		if st.Dir != dir || len(st.Workers()) != 3 || st.Procs[0].Role != localcluster.RoleCoordinator {
			t.Fatalf("state after up: %+v", st)
		}
		for _, pid := range allPids(&st) {
			if pid <= 0 || processGone(pid) {
				t.Fatalf("pid %d of %+v is not running", pid, st)
			}
		}
		// The local context is current: no --coordinator needed.
		if r := tc.run("config", "current-context"); r.code != 0 || r.stdout != "local\n" {
			t.Fatalf("current-context: exit %d, %q %s", r.code, r.stdout, r.stderr)
		}
		ws, ok := tc.workers()
		if !ok {
			t.Fatal("get workers failed right after up")
		}
		for _, p := range st.Workers() {
			if !registeredAs(ws, p.Name, p.PID) {
				t.Fatalf("worker %s (pid %d) not registered as such: %v", p.Name, p.PID, ws)
			}
		}
		if labels, _ := ws["spare-1"]["labels"].(map[string]any); labels["spare"] != "true" {
			t.Fatalf("spare-1's labels: %v", ws["spare-1"])
		}

		if r := tc.run("up", "--workers", "2"); r.code != 0 || !strings.Contains(r.stdout, "already up in "+dir) {
			t.Fatalf("second up: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}

		// kill -9 a worker: the supervisor starts it again, under the same
		// name, and the new process registers.
		victim, _ := st.Proc("worker-1")
		if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var again localcluster.Proc
		eventually(t, "worker-1 restarted", func() bool {
			s, err := localcluster.ReadState(dir)
			if err != nil {
				t.Fatalf("state: %v", err)
			}
			again, _ = s.Proc("worker-1")
			return again.PID != 0 && again.PID != victim.PID && again.Restarts == 1
		})
		if !strings.Contains(again.LastExit, "killed") {
			t.Errorf("worker-1's last exit %q: want it to say killed", again.LastExit)
		}
		eventually(t, "the restarted worker-1 registered", func() bool {
			ws, ok := tc.workers()
			return ok && registeredAs(ws, "worker-1", again.PID)
		})
		if !processGone(victim.PID) {
			t.Errorf("the killed worker-1 (pid %d) is still there", victim.PID)
		}
		final, err := localcluster.ReadState(dir)
		if err != nil {
			t.Fatal(err)
		}

		r = tc.run("down")
		stopped = true
		if r.code != 0 || !strings.Contains(r.stdout, "stopped (coordinator and 3 workers); logs kept") {
			t.Fatalf("down: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		for _, pid := range append(allPids(final), victim.PID) {
			if !processGone(pid) {
				t.Errorf("pid %d still runs after down", pid)
			}
		}
		if _, err := localcluster.ReadState(dir); !errors.Is(err, localcluster.ErrNotUp) {
			t.Errorf("state after down: %v, want none", err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "logs", "worker-1.log")); err != nil || strings.Count(string(b), "----") != 2 {
			t.Errorf("worker-1.log after down (%v): want the two starts in it:\n%s", err, b)
		}
		if r := tc.run("down"); r.code != 0 || !strings.Contains(r.stderr, "No local cluster is up in "+dir) {
			t.Fatalf("down with nothing up: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("port-in-use", func(t *testing.T) { testPortInUse(t, bin) })

	t.Run("no-restart", func(t *testing.T) {
		home := t.TempDir()
		dir := filepath.Join(t.TempDir(), "c")
		tc := ternctlProc{t, bin, home}
		r := tc.run("up", "--dir", dir, "--workers", "1", "--no-restart", "--listen", "127.0.0.1:0", "--context", "c1", "--grace", "5s", "-o", "json")
		if r.code != 0 {
			t.Fatalf("up: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		t.Cleanup(func() { tc.run("down", "--dir", dir) })
		var st localcluster.State
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatal(err)
		}
		victim, _ := st.Proc("worker-1")
		if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		supLog := filepath.Join(dir, "logs", "supervisor.log")
		eventually(t, "the supervisor deciding about worker-1", func() bool {
			b, _ := os.ReadFile(supLog)
			return strings.Contains(string(b), "not restarting worker-1 (--no-restart)")
		})
		s, err := localcluster.ReadState(dir)
		if err != nil {
			t.Fatal(err)
		}
		if p, _ := s.Proc("worker-1"); p.PID != 0 || p.Restarts != 0 || !strings.Contains(p.LastExit, "killed") {
			t.Fatalf("worker-1 after kill -9 with --no-restart: %+v", p)
		}
		if b, _ := os.ReadFile(supLog); strings.Contains(string(b), "restarting worker-1 in") {
			t.Fatalf("worker-1 was scheduled for a restart:\n%s", b)
		}

		// A supervisor killed outright leaves the coordinator running:
		// up refuses to start over it, and down stops it.
		if err := syscall.Kill(st.Supervisor.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the supervisor gone", func() bool { return processGone(st.Supervisor.PID) })
		if r := tc.run("up", "--dir", dir, "--listen", "127.0.0.1:0"); r.code != 1 || !strings.Contains(r.stderr, "lost its supervisor but coordinator (pid") {
			t.Fatalf("up over a leftover coordinator: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		r = tc.run("down", "--dir", dir, "--purge")
		if r.code != 0 || !strings.Contains(r.stderr, "stopped what it left running: coordinator (pid") || !strings.Contains(r.stdout, "logs removed") {
			t.Fatalf("down: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if !processGone(st.Procs[0].PID) {
			t.Errorf("the coordinator (pid %d) still runs after down", st.Procs[0].PID)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after down --purge: %v, want it gone", dir, err)
		}
	})
}

func testPortInUse(t *testing.T, bin string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	home := t.TempDir()
	tc := ternctlProc{t, bin, home}
	r := tc.run("up", "--listen", l.Addr().String())
	if r.code != exitError || !strings.Contains(r.stderr, "cannot listen on "+l.Addr().String()) || !strings.Contains(r.stderr, "pass --listen 127.0.0.1:0") {
		t.Fatalf("up on a port in use: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	dir := filepath.Join(home, "local")
	for _, f := range []string{"state.json", "spec.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after a failed up: %v", f, err)
		}
	}
	if r := tc.run("down"); r.code != 0 || !strings.Contains(r.stderr, "No local cluster is up") {
		t.Errorf("down after a failed up: exit %d\n%s", r.code, r.stderr)
	}
}

func TestUpBadFlags(t *testing.T) {
	t.Setenv("TERN_HOME", t.TempDir())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"up", "--workers", "0"}, "--workers 0: a cluster needs at least 1 worker"},
		{[]string{"up", "--slots", "0"}, "--slots 0"},
		{[]string{"up", "--spares", "-1"}, "--spares -1 is negative"},
		{[]string{"up", "--listen", "0.0.0.0:7070"}, "loopback only"},
		{[]string{"up", "--listen", "nonsense"}, "is not host:port"},
		{[]string{"up", "--workers", "60", "--spares", "10"}, "at most 64 worker processes"},
		{[]string{"down", "--grace", "-1s"}, "--grace -1s is negative"},
	} {
		r := runCLI(t, false, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr:\n%s", tc.args, r.code, r.stderr)
		}
	}
}

func TestDownNothingUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "none")
	r := runCLI(t, false, "down", "--dir", dir)
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "No local cluster is up in "+dir+": nothing to stop.") {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
}
