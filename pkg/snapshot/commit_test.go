package snapshot

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata scripts")

// The commit protocol's scenarios are scripts under testdata/commit, in the
// style of etcd raft's: each block is a command, a "----" line, and the
// output the tracker must produce. Run with -rewrite to regenerate the
// outputs after a deliberate change, then read the diff.
func TestCommitScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/commit/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScript(t, f) })
	}
}

func runScript(t *testing.T, path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	s := &scriptState{}
	blocks := strings.Split(strings.TrimRight(string(raw), "\n")+"\n", "\n\n")
	for _, blk := range blocks {
		lines := strings.Split(strings.Trim(blk, "\n"), "\n")
		var cmdLines []string
		i := 0
		for ; i < len(lines) && lines[i] != "----"; i++ {
			cmdLines = append(cmdLines, lines[i])
		}
		want := ""
		if i < len(lines) {
			want = strings.Join(lines[i+1:], "\n")
		}
		var cmd string
		for _, l := range cmdLines {
			out.WriteString(l + "\n")
			if !strings.HasPrefix(l, "#") && strings.TrimSpace(l) != "" {
				cmd = l
			}
		}
		if cmd == "" {
			out.WriteString("\n")
			continue
		}
		got := strings.TrimRight(s.run(t, cmd), "\n")
		s.checkInvariants(t, cmd)
		out.WriteString("----\n" + got + "\n\n")
		if !*rewrite && got != want {
			t.Errorf("%s: %s\ngot:\n%s\nwant:\n%s", path, cmd, got, want)
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type scriptState struct {
	tr        *Tracker
	committed int64
	// reported[step] counts the ranks that reported step in the current
	// epoch, for the invariant that only fully reported steps commit.
	reported map[int64]map[int]bool
}

func args(t *testing.T, cmd string) (string, map[string]string) {
	f := strings.Fields(cmd)
	kv := map[string]string{}
	for _, a := range f[1:] {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			t.Fatalf("%q: argument %q is not key=value", cmd, a)
		}
		kv[k] = v
	}
	return f[0], kv
}

func num(t *testing.T, kv map[string]string, key string, def int64) int64 {
	v, ok := kv[key]
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s=%q: %v", key, v, err)
	}
	return n
}

func (s *scriptState) run(t *testing.T, cmd string) string {
	name, kv := args(t, cmd)
	if name != "init" && s.tr == nil {
		t.Fatalf("%q before init", cmd)
	}
	var acts []Action
	var err error
	switch name {
	case "init":
		n := int(num(t, kv, "ranks", 3))
		in := PlacementInput{Tolerate: int(num(t, kv, "m", 1)), DataShards: int(num(t, kv, "k", 0))}
		for r := range n {
			id := fmt.Sprintf("w%d", r)
			in.RankWorker = append(in.RankWorker, id)
			in.Workers = append(in.Workers, PlacementWorker{ID: id})
		}
		p, perr := Place(in)
		if perr != nil {
			return "error: " + perr.Error()
		}
		s.committed = num(t, kv, "committed", -1)
		s.tr, err = NewTracker("job", p, uint64(num(t, kv, "epoch", 1)), s.committed)
		if err != nil {
			return "error: " + err.Error()
		}
		s.reported = map[int64]map[int]bool{}
		return fmt.Sprintf("placement %v, %d fragments per rank", p.Code, p.Code.Fragments())
	case "report":
		r := Report{Rank: int(num(t, kv, "rank", 0)), Step: num(t, kv, "step", 0), Epoch: uint64(num(t, kv, "epoch", int64(s.tr.Epoch()))), StateBytes: num(t, kv, "bytes", 1000)}
		for i := range int(num(t, kv, "frags", int64(s.tr.placement.Code.Fragments()))) {
			r.FragmentCRCs = append(r.FragmentCRCs, uint32(r.Step*100+int64(r.Rank)*10+int64(i)))
		}
		r.StateCRC = uint32(r.Step*1000 + int64(r.Rank))
		acts, err = s.tr.Report(r)
		if err == nil {
			if s.reported[r.Step] == nil {
				s.reported[r.Step] = map[int]bool{}
			}
			s.reported[r.Step][r.Rank] = true
		}
	case "failed":
		acts, err = s.tr.StageFailed(int(num(t, kv, "rank", 0)), num(t, kv, "step", 0))
	case "persist":
		acts, err = s.tr.Persisted(num(t, kv, "step", 0))
	case "writefail":
		acts, err = s.tr.WriteFailed(num(t, kv, "step", 0))
	case "lost":
		var ranks []int
		for _, r := range strings.Split(kv["ranks"], ",") {
			n, _ := strconv.Atoi(r)
			ranks = append(ranks, n)
		}
		acts, err = s.tr.Lost(uint64(num(t, kv, "epoch", 0)), ranks...)
		if err == nil {
			s.reported = map[int64]map[int]bool{}
		}
	case "state":
		var b strings.Builder
		fmt.Fprintf(&b, "epoch %d, committed %d, pending %v", s.tr.Epoch(), s.tr.Committed(), s.tr.Pending())
		for _, p := range s.tr.Pending() {
			fmt.Fprintf(&b, "\nstep %d reported by %v", p, s.tr.Reported(p))
		}
		return b.String()
	default:
		t.Fatalf("unknown command %q", cmd)
	}
	if err != nil {
		return "error: " + err.Error()
	}
	if len(acts) == 0 {
		return "ok"
	}
	var lines []string
	for _, a := range acts {
		l := a.String()
		if a.Kind == Propose {
			for r := range a.Manifest.Ranks {
				if !s.reported[a.Step][r] {
					t.Fatalf("%q: proposed step %d, which rank %d never reported in this epoch", cmd, a.Step, r)
				}
			}
			b, err := MarshalPeerManifest(a.Manifest)
			if err != nil {
				t.Fatalf("%q: manifest: %v", cmd, err)
			}
			back, err := UnmarshalPeerManifest(b)
			if err != nil {
				t.Fatalf("%q: manifest round trip: %v", cmd, err)
			}
			l += fmt.Sprintf(" (manifest: %d ranks, %d bytes, rank 0 holders %v)", len(back.Ranks), len(b), holdersOf(back, 0))
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}

func holdersOf(m *PeerManifest, r int) []string {
	var hs []string
	for i := range m.Ranks[r].Holders {
		hs = append(hs, m.HolderOf(r, i))
	}
	return hs
}

// checkInvariants: the committed step never goes back (invariant 1 of
// research fault-tolerance.md §9.1).
func (s *scriptState) checkInvariants(t *testing.T, cmd string) {
	if s.tr == nil {
		return
	}
	if c := s.tr.Committed(); c < s.committed {
		t.Fatalf("%q: committed step went back from %d to %d", cmd, s.committed, c)
	}
	s.committed = s.tr.Committed()
}
