package job

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/coordinator/sched"
)

// Scenario scripts, in the manner of etcd raft's interaction tests: each
// testdata/*.txt file is a list of commands, each followed by "----" and
// the output it must produce, up to a blank line. Lines starting with #
// are comments. Run `go test ./pkg/coordinator/job -rewrite` to regenerate
// the outputs, then read the diff before committing it.
//
// Commands:
//
//	submit name=N dp=D pp=P | world=W  maxRestarts=R shrink=1 minDP=M microBatches=B
//	event KIND [positional] key=value...   feed one event (see parseEvent)
//	cluster NAME=SLOTS[,node=X][,rack=Y][,spare]... [spareSlots=N]
//	place      answer the outstanding placement request with pkg/coordinator/sched
//	restart    encode the record, restore it as a new coordinator would, print Reconcile
//	state      print the record as JSON

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt")

type scriptCase struct {
	pre  []string // comments and blank lines before the command
	line int      // line number of the command
	cmd  string
	want []string
}

type script struct {
	cases   []scriptCase
	trailer []string
}

func parseScript(text string) (*script, error) {
	lines := strings.Split(text, "\n")
	s := &script{}
	var pre []string
	for i := 0; i < len(lines); {
		l := lines[i]
		if l == "" || strings.HasPrefix(l, "#") {
			pre = append(pre, l)
			i++
			continue
		}
		c := scriptCase{pre: pre, line: i + 1, cmd: l}
		pre = nil
		i++
		if i >= len(lines) || lines[i] != "----" {
			return nil, fmt.Errorf("line %d: command %q is not followed by ----", c.line, l)
		}
		for i++; i < len(lines) && lines[i] != ""; i++ {
			c.want = append(c.want, lines[i])
		}
		s.cases = append(s.cases, c)
	}
	s.trailer = pre
	return s, nil
}

func (s *script) format(outputs [][]string) string {
	var lines []string
	for i, c := range s.cases {
		lines = append(lines, c.pre...)
		lines = append(lines, c.cmd, "----")
		lines = append(lines, outputs[i]...)
	}
	lines = append(lines, s.trailer...)
	return strings.Join(lines, "\n")
}

func scriptFiles(t *testing.T) []string {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts in testdata: %v", err)
	}
	return files
}

func loadScript(t *testing.T, path string) *script {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseScript(string(data))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

// runScript runs every command of s in a fresh environment. If restoreAfter
// is k ≥ 0, the job is encoded and restored after command k, silently, as a
// coordinator restart would do.
func runScript(t *testing.T, path string, s *script, restoreAfter int) [][]string {
	e := &env{t: t}
	var outs [][]string
	for i, c := range s.cases {
		e.where = fmt.Sprintf("%s:%d", path, c.line)
		outs = append(outs, e.run(c.cmd))
		if i == restoreAfter && e.job != nil {
			e.job = roundTrip(t, e.where, e.job)
		}
	}
	return outs
}

func TestScripts(t *testing.T) {
	for _, path := range scriptFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			s := loadScript(t, path)
			outs := runScript(t, path, s, -1)
			if *rewrite {
				if err := os.WriteFile(path, []byte(s.format(outs)), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			for i, c := range s.cases {
				if !slices.Equal(outs[i], c.want) {
					t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, c.line, c.cmd, strings.Join(outs[i], "\n"), strings.Join(c.want, "\n"))
				}
			}
		})
	}
}

// TestScriptsSurviveRestore replays every script with the job record
// encoded and restored after each command in turn: a coordinator that
// restarts at any point and continues from etcd must produce the same
// output as one that never stopped.
func TestScriptsSurviveRestore(t *testing.T) {
	for _, path := range scriptFiles(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			s := loadScript(t, path)
			base := runScript(t, path, s, -1)
			for k := range s.cases {
				got := runScript(t, path, s, k)
				for i := range got {
					if !slices.Equal(got[i], base[i]) {
						t.Fatalf("restored after %q (line %d): command %q (line %d) gave\n%s\ninstead of\n%s",
							s.cases[k].cmd, s.cases[k].line, s.cases[i].cmd, s.cases[i].line,
							strings.Join(got[i], "\n"), strings.Join(base[i], "\n"))
					}
				}
			}
		})
	}
}

func roundTrip(t *testing.T, where string, j *Job) *Job {
	t.Helper()
	data, err := json.Marshal(j)
	if err != nil {
		t.Fatalf("%s: encode: %v", where, err)
	}
	r, err := Restore(data)
	if err != nil {
		t.Fatalf("%s: restore: %v\n%s", where, err, data)
	}
	again, _ := json.Marshal(r)
	if string(again) != string(data) {
		t.Fatalf("%s: record changed in a round trip:\n%s\n%s", where, data, again)
	}
	return r
}

// env is one scenario: a job, a simulated cluster for `place`, and the
// placement request waiting for an answer.
type env struct {
	t          *testing.T
	where      string
	job        *Job
	workers    []sched.Worker
	spareSlots int
	request    Action
}

func (e *env) fatalf(format string, args ...any) {
	e.t.Helper()
	e.t.Fatalf("%s: "+format, append([]any{e.where}, args...)...)
}

func (e *env) run(line string) []string {
	pos, kv := tokenize(e, line)
	cmd, pos := pos[0], pos[1:]
	switch cmd {
	case "submit":
		a := args{e: e, kv: kv}
		spec := Spec{Name: a.str("name", "job"), DP: a.int("dp", 1), PP: a.int("pp", 1), MaxRestarts: a.int("maxRestarts", 0),
			Shrink: a.int("shrink", 0) == 1, MinDP: a.int("minDP", 0), MicroBatches: a.int("microBatches", 0)}
		if w := a.int("world", 0); w > 0 {
			spec.DP, spec.PP = w, 1
		}
		a.done()
		j, acts, err := New(spec)
		if err != nil {
			return []string{"error: " + err.Error()}
		}
		e.job, e.request = j, nil
		return e.report(acts)
	case "event":
		if e.job == nil {
			e.fatalf("event before submit")
		}
		ev := parseEvent(e, pos, kv)
		before, _ := json.Marshal(e.job)
		acts, err := e.job.Step(ev)
		return e.checkStep(before, acts, err)
	case "cluster":
		e.parseCluster(pos, kv)
		return []string{"ok"}
	case "place":
		return e.place()
	case "restart":
		e.job = roundTrip(e.t, e.where, e.job)
		out := []string{"coordinator restarted; reconcile:"}
		return append(out, e.report(e.job.Reconcile())...)
	case "state":
		data, _ := json.MarshalIndent(e.job, "", "  ")
		return strings.Split(string(data), "\n")
	}
	e.fatalf("unknown command %q", cmd)
	return nil
}

// checkStep enforces Step's contract on every event: a rejected event
// changes nothing, and the record changes exactly when Persist says so.
func (e *env) checkStep(before []byte, acts []Action, err error) []string {
	after, _ := json.Marshal(e.job)
	if err != nil {
		if string(after) != string(before) {
			e.fatalf("rejected event changed the job:\n%s\n%s", before, after)
		}
		if len(acts) > 0 {
			e.fatalf("rejected event returned actions %v", acts)
		}
		return []string{"error: " + err.Error()}
	}
	persisted := len(acts) > 0 && acts[0] == Persist{Version: e.job.Version}
	for _, a := range acts[min(len(acts), 1):] {
		if _, ok := a.(Persist); ok {
			e.fatalf("Persist is not the first action: %v", acts)
		}
	}
	if persisted == (string(after) == string(before)) {
		e.fatalf("persist %v but record changed %v:\n%s\n%s", persisted, string(after) != string(before), before, after)
	}
	if len(acts) == 0 {
		return []string{"no change"}
	}
	return e.report(acts)
}

// report prints the job's state and the actions, and remembers the latest
// placement request for `place`.
func (e *env) report(acts []Action) []string {
	j := e.job
	out := []string{
		fmt.Sprintf("%s v%d attempt=%d restarts=%d/%d step=%d", j.Phase, j.Version, j.Attempt, j.Restarts, j.Spec.MaxRestarts, j.CommittedStep),
		"  reason: " + j.Reason,
	}
	if j.DP > 0 {
		out = append(out, fmt.Sprintf("  shrunk: dp=%d of %d growing=%v", j.DP, j.Spec.DP, j.Growing))
	}
	if r := j.Recovery; r != nil {
		line := fmt.Sprintf("  recovery: ranks=%s avoid=%s launched=%v", ints(r.Ranks), strings.Join(r.Avoid, ","), r.Launched)
		if r.Sources != nil {
			line += " sources=" + ints(r.Sources)
		}
		out = append(out, line)
	}
	for _, a := range acts {
		out = append(out, "> "+a.String())
		switch a.(type) {
		case RequestPlacement, RequestReplacement, RequestGrowth:
			e.request = a
		}
	}
	return out
}

// place answers the outstanding request with the real scheduler over the
// simulated cluster, with the job's own slots marked used while it holds
// them (except those of ranks being replaced, whose processes are gone).
func (e *env) place() []string {
	if e.request == nil {
		e.fatalf("place: no placement was requested")
	}
	c := sched.Cluster{SpareSlots: e.spareSlots}
	j := e.job
	for _, w := range e.workers {
		w.Used = nil
		if j.HoldsSlots() {
			for _, p := range j.Assignment {
				if p.Worker == w.Name && (j.Recovery == nil || !slices.Contains(j.Recovery.Ranks, p.Rank)) {
					w.Used = append(w.Used, p.Slot)
				}
			}
		}
		c.Workers = append(c.Workers, w)
	}
	var (
		a       sched.Assignment
		err     error
		attempt int
	)
	switch r := e.request.(type) {
	case RequestPlacement:
		a, err = sched.Place(c, r.Layout)
		attempt = r.Attempt
	case RequestReplacement:
		a, err = sched.Replace(c, r.Layout, j.Assignment, r.Ranks, r.Avoid)
		attempt = r.Attempt
	case RequestGrowth:
		a, err = sched.Grow(c, r.Layout, j.Assignment, nil)
		attempt = r.Attempt
	}
	var ev Event = Placed{Attempt: attempt, Assignment: a}
	if ce := (*sched.CapacityError)(nil); errors.As(err, &ce) {
		ev = Unplaceable{Attempt: attempt, Reason: ce.Error()}
	} else if err != nil {
		e.fatalf("place: %v", err)
	}
	before, _ := json.Marshal(j)
	acts, err := j.Step(ev)
	if err == nil {
		if _, ok := ev.(Placed); ok {
			e.request = nil
		}
	}
	return e.checkStep(before, acts, err)
}

func (e *env) parseCluster(pos []string, kv map[string]string) {
	if len(pos) > 0 {
		e.fatalf("cluster: unexpected %q", pos)
	}
	e.workers, e.spareSlots = nil, 0
	for _, name := range slices.Sorted(maps.Keys(kv)) {
		spec := kv[name]
		if name == "spareSlots" {
			e.spareSlots = atoi(e, spec)
			continue
		}
		parts := strings.Split(spec, ",")
		w := sched.Worker{Name: name, Slots: atoi(e, parts[0])}
		for _, p := range parts[1:] {
			k, v, ok := strings.Cut(p, "=")
			switch {
			case p == "spare":
				w.Spare = true
			case ok && (k == sched.LabelNode || k == sched.LabelRack):
				if w.Labels == nil {
					w.Labels = map[string]string{}
				}
				w.Labels[k] = v
			default:
				e.fatalf("cluster: worker %s: unknown option %q", name, p)
			}
		}
		e.workers = append(e.workers, w)
	}
}

// parseEvent builds an event from "event KIND ...". An attempt left out is
// the one the event would normally name: the next attempt for placement
// answers, the current one otherwise.
func parseEvent(e *env, pos []string, kv map[string]string) Event {
	if len(pos) == 0 {
		e.fatalf("event: which one?")
	}
	kind := pos[0]
	a := args{e: e, kv: kv}
	cur := a.int("attempt", e.job.Attempt)
	next := a.int("attempt", e.job.Attempt+1)
	var ev Event
	switch kind {
	case "capacity-changed":
		ev = CapacityChanged{}
	case "placed":
		ev = Placed{Attempt: next, Assignment: parseAssign(e, a.str("assign", ""))}
	case "unplaceable":
		ev = Unplaceable{Attempt: next, Reason: a.str("reason", "")}
	case "ranks-started":
		ev = RanksStarted{Attempt: cur}
	case "step-committed":
		ev = StepCommitted{Attempt: cur, Step: int64(a.int("step", 0))}
	case "rank-failed":
		_, exited := kv["exit"]
		ev = RankFailed{Attempt: cur, Rank: a.int("rank", 0), Worker: a.str("worker", ""), Reason: a.str("reason", ""), Exited: exited, ExitStatus: a.int("exit", 0)}
	case "worker-lost":
		ev = WorkerLost{Worker: a.str("worker", ""), Reason: a.str("reason", "")}
	case "finished":
		ev = Finished{Attempt: cur, Step: int64(a.int("step", 0))}
	case "cancel":
		ev = Cancel{}
	case "pause":
		ev = Pause{}
	case "resume":
		ev = Resume{}
	case "recovery-done":
		ev = RecoveryDone{Attempt: cur, Step: int64(a.int("step", 0))}
	case "timer":
		if len(pos) != 2 {
			e.fatalf("event timer: name the timer (start, recovery or shrink)")
		}
		ev = TimerFired{Timer: Timer(pos[1]), Attempt: cur}
		pos = pos[1:]
	default:
		e.fatalf("unknown event %q", kind)
	}
	if len(pos) > 1 {
		e.fatalf("event %s: unexpected %q", kind, pos[1:])
	}
	a.done()
	return ev
}

// parseAssign reads "w1,w1,w2/3": rank i on the i-th worker, in the next
// slot of that worker unless one is given after a slash.
func parseAssign(e *env, s string) sched.Assignment {
	var a sched.Assignment
	next := map[string]int{}
	for r, f := range strings.Split(s, ",") {
		name, slot, ok := strings.Cut(f, "/")
		p := sched.Placement{Rank: r, Worker: name, Slot: next[name]}
		if ok {
			p.Slot = atoi(e, slot)
		}
		next[name] = p.Slot + 1
		a = append(a, p)
	}
	return a
}

// tokenize splits a command line on spaces; key="quoted value" keeps its
// spaces. Words without '=' are positional.
func tokenize(e *env, line string) ([]string, map[string]string) {
	var pos []string
	kv := map[string]string{}
	for rest := strings.TrimSpace(line); rest != ""; rest = strings.TrimSpace(rest) {
		end := strings.IndexByte(rest, ' ')
		if q := strings.Index(rest, `="`); q >= 0 && (end < 0 || q < end) {
			n := strings.IndexByte(rest[q+2:], '"')
			if n < 0 {
				e.fatalf("unterminated quote in %q", line)
			}
			kv[rest[:q]] = rest[q+2 : q+2+n]
			rest = rest[q+3+n:]
			continue
		}
		if end < 0 {
			end = len(rest)
		}
		word := rest[:end]
		rest = rest[end:]
		if k, v, ok := strings.Cut(word, "="); ok {
			kv[k] = v
		} else {
			pos = append(pos, word)
		}
	}
	if len(pos) == 0 {
		e.fatalf("empty command")
	}
	return pos, kv
}

// args hands out key=value arguments and complains about any left unused,
// so a typo in a script fails loudly instead of being ignored.
type args struct {
	e    *env
	kv   map[string]string
	used []string
}

func (a *args) str(k, def string) string {
	a.used = append(a.used, k)
	if v, ok := a.kv[k]; ok {
		return v
	}
	return def
}

func (a *args) int(k string, def int) int {
	a.used = append(a.used, k)
	if v, ok := a.kv[k]; ok {
		return atoi(a.e, v)
	}
	return def
}

func (a *args) done() {
	for k := range a.kv {
		if !slices.Contains(a.used, k) {
			a.e.fatalf("unknown argument %q", k)
		}
	}
}

func atoi(e *env, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		e.fatalf("%q is not a number", s)
	}
	return n
}
