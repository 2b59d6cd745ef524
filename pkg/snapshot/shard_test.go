package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ternml/tern/pkg/safetensors"
)

// rankTensors is what rank r of a two-stage pipeline holds: rows
// [5r, 5r+5) of a 10-row embedding (same name on both ranks), a block
// weight of its own, and its optimizer state under a per-rank prefix.
func rankTensors(r int, step int64) []Tensor {
	emb := make([]float32, 5*4)
	for i := range emb {
		emb[i] = float32(r*100+i) + float32(step)
	}
	w := []float32{float32(r), 1, 2, 3}
	pre := "stage." + jsonInt(int64(r)) + "."
	return []Tensor{
		{Tensor: safetensors.F32("model.embed_tokens.weight", []int{5, 4}, emb), GlobalShape: []int{10, 4}, RowLo: 5 * r, RowHi: 5*r + 5},
		Whole(safetensors.F32("model.layers."+jsonInt(int64(r))+".input_layernorm.weight", []int{4}, w)),
		Whole(safetensors.F32(pre+"optim.model.embed_tokens.weight.exp_avg", []int{5, 4}, emb)),
		{Tensor: safetensors.F32(pre+"optim.step", []int{}, []float32{float32(step)})},
	}
}

func header(step int64) *State {
	return &State{
		Step: step, Job: "pp", Created: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
		Spec: json.RawMessage(`{"parallel":{"pipeline":2}}`), Cursor: json.RawMessage(`{"index":` + jsonInt(step) + `}`),
	}
}

// saveRanks writes step as ranks ranks would: each its shard, concurrently,
// then one commit.
func saveRanks(t *testing.T, dir string, step int64, ranks, keep int) string {
	t.Helper()
	shards := make([]Shard, ranks)
	errs := make([]error, ranks)
	var wg sync.WaitGroup
	for r := range ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shards[r], errs[r] = WriteShard(dir, step, r, rankTensors(r, step))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	p, err := Commit(dir, header(step), shards, keep)
	if err != nil {
		t.Fatalf("Commit step %d: %v", step, err)
	}
	return p
}

func TestShardedRoundTrip(t *testing.T) {
	dir := t.TempDir()
	// Debris of an interrupted earlier attempt at the same step, with more
	// ranks: Commit must not list it and must clear it.
	os.MkdirAll(StepDir(dir, 4), 0o755)
	os.WriteFile(filepath.Join(StepDir(dir, 4), RankFile(2)), []byte("stale"), 0o644)
	p := saveRanks(t, dir, 4, 2, 0)

	ents, _ := os.ReadDir(p)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{ManifestName, RankFile(0), RankFile(1)}; !slices.Equal(names, want) {
		t.Fatalf("step dir holds %v, want %v", names, want)
	}
	m, err := ReadManifest(p)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 2 || len(m.Files) != 2 || m.Files[0].Name != RankFile(0) || m.Files[1].Name != RankFile(1) {
		t.Fatalf("manifest version %d files %v", m.Version, m.Files)
	}

	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := header(4)
	want.Tensors = append(rankTensors(0, 4), rankTensors(1, 4)...)
	requireSame(t, got, want)
	// The two embedding shards together cover the global tensor.
	var rows [][2]int
	for _, ts := range got.Tensors {
		if ts.Name == "model.embed_tokens.weight" {
			rows = append(rows, [2]int{ts.RowLo, ts.RowHi})
		}
	}
	if !slices.Equal(rows, [][2]int{{0, 5}, {5, 10}}) {
		t.Fatalf("embedding rows %v", rows)
	}

	// One rank resuming reads only its own file: with the other one
	// damaged, selecting rank 1's tensors still loads, and selecting
	// everything does not.
	b, _ := os.ReadFile(filepath.Join(p, RankFile(0)))
	b[len(b)-1] ^= 0xff
	os.WriteFile(filepath.Join(p, RankFile(0)), b, 0o644)
	mine, err := LoadSelected(p, func(te TensorEntry) bool { return te.File == RankFile(1) })
	if err != nil {
		t.Fatalf("LoadSelected of rank 1's tensors: %v", err)
	}
	want.Tensors = rankTensors(1, 4)
	requireSame(t, mine, want)
	if _, err := Load(p); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), RankFile(0)) {
		t.Fatalf("Load with rank 0's file damaged: %v", err)
	}
}

// A single file, or several files with distinct names, needs nothing
// version 1 cannot say: such checkpoints stay readable by older builds.
func TestManifestVersionIsTheOldestThatFits(t *testing.T) {
	dir := t.TempDir()
	m, _ := ReadManifest(save(t, dir, testState(1), 0))
	if m.Version != 1 {
		t.Errorf("single-file Save wrote version %d, want 1", m.Version)
	}
	a, err := WriteShard(dir, 2, 0, []Tensor{Whole(safetensors.F32("a", []int{1}, []float32{1}))})
	if err != nil {
		t.Fatal(err)
	}
	b, err := WriteShard(dir, 2, 1, []Tensor{Whole(safetensors.F32("b", []int{1}, []float32{2}))})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Commit(dir, header(2), []Shard{a, b}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := ReadManifest(p); m.Version != 1 {
		t.Errorf("two files with distinct names: version %d, want 1", m.Version)
	}
}

func TestShardedDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	pa, pb := saveRanks(t, a, 3, 2, 0), saveRanks(t, b, 3, 2, 0)
	for _, name := range []string{ManifestName, RankFile(0), RankFile(1)} {
		x, _ := os.ReadFile(filepath.Join(pa, name))
		y, _ := os.ReadFile(filepath.Join(pb, name))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two saves of the same state", name)
		}
	}
}

func TestLatestIgnoresUncommittedShards(t *testing.T) {
	dir := t.TempDir()
	saveRanks(t, dir, 5, 2, 0)
	// Step 6: both ranks wrote, the commit never happened.
	for r := range 2 {
		if _, err := WriteShard(dir, 6, r, rankTensors(r, 6)); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := Latest(dir); err != nil || got != StepDir(dir, 5) {
		t.Fatalf("Latest = %s, %v; want step 5", got, err)
	}
	if st, err := Load(dir); err != nil || st.Step != 5 {
		t.Fatalf("Load(root): %v, %v", st, err)
	}
	if _, err := Load(StepDir(dir, 6)); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("Load of the uncommitted step: %v, want an error saying it is incomplete", err)
	}
	// A later committed step prunes the uncommitted debris below it, and
	// keep applies to multi-rank steps as to single-file ones.
	saveRanks(t, dir, 7, 2, 1)
	if c, inc := stepsOnDisk(t, dir); !slices.Equal(c, []int64{7}) || len(inc) != 0 {
		t.Fatalf("after step 7 with keep=1: complete %v incomplete %v", c, inc)
	}
}

func TestShardedStepExists(t *testing.T) {
	dir := t.TempDir()
	p := saveRanks(t, dir, 2, 2, 0)
	if _, err := WriteShard(dir, 2, 0, rankTensors(0, 2)); !errors.Is(err, ErrStepExists) {
		t.Errorf("WriteShard into a complete step: %v, want ErrStepExists", err)
	}
	m, _ := ReadManifest(p)
	if _, err := Commit(dir, header(2), []Shard{{File: m.Files[0]}}, 0); !errors.Is(err, ErrStepExists) {
		t.Errorf("second Commit: %v, want ErrStepExists", err)
	}
	if _, err := Load(p); err != nil {
		t.Errorf("the complete step was disturbed: %v", err)
	}
}

// Commit refuses shards that cannot form a checkpoint, before anything
// marks the step complete.
func TestCommitRejects(t *testing.T) {
	cases := []struct {
		name   string
		shards func(t *testing.T, dir string) []Shard
		st     func(st *State)
		want   string
	}{
		{"rank file missing", func(t *testing.T, dir string) []Shard {
			s := writeBoth(t, dir)
			os.Remove(filepath.Join(StepDir(dir, 1), RankFile(1)))
			return s
		}, nil, "rank-00001.safetensors is not in the step directory"},
		{"rank file resized", func(t *testing.T, dir string) []Shard {
			s := writeBoth(t, dir)
			os.WriteFile(filepath.Join(StepDir(dir, 1), RankFile(0)), []byte("x"), 0o644)
			return s
		}, nil, "rank-00000.safetensors has 1 bytes"},
		{"overlapping rows", func(t *testing.T, dir string) []Shard {
			s := writeBoth(t, dir)
			bad := rankTensors(1, 1)
			bad[0].RowLo, bad[0].RowHi = 4, 9
			var err error
			if s[1], err = WriteShard(dir, 1, 1, bad); err != nil {
				t.Fatal(err)
			}
			return s
		}, nil, `rows [4, 9) in "rank-00001.safetensors" overlap rows [0, 5) in "rank-00000.safetensors"`},
		{"global shapes differ", func(t *testing.T, dir string) []Shard {
			s := writeBoth(t, dir)
			bad := rankTensors(1, 1)
			bad[0].GlobalShape = []int{12, 4}
			var err error
			if s[1], err = WriteShard(dir, 1, 1, bad); err != nil {
				t.Fatal(err)
			}
			return s
		}, nil, "shards of one tensor must agree"},
		{"scalar in two files", func(t *testing.T, dir string) []Shard {
			var s []Shard
			for r := range 2 {
				sh, err := WriteShard(dir, 1, r, []Tensor{{Tensor: safetensors.F32("optim.step", []int{}, []float32{1})}})
				if err != nil {
					t.Fatal(err)
				}
				s = append(s, sh)
			}
			return s
		}, nil, "a scalar has no rows to split"},
		{"same file twice", func(t *testing.T, dir string) []Shard {
			s := writeBoth(t, dir)
			return []Shard{s[0], s[0]}
		}, nil, `"rank-00000.safetensors" listed twice`},
		{"entry names another file", func(t *testing.T, dir string) []Shard {
			s := writeBoth(t, dir)
			s[0].Tensors[0].File = RankFile(1)
			return s
		}, nil, `lists tensor "model.embed_tokens.weight" in file "rank-00001.safetensors"`},
		{"no shards", func(t *testing.T, dir string) []Shard { return nil }, nil, "no shards"},
		{"tensors in the header", writeBoth, func(st *State) { st.Tensors = rankTensors(0, 1) }, "leave it empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			shards := c.shards(t, dir)
			st := header(1)
			if c.st != nil {
				c.st(st)
			}
			_, err := Commit(dir, st, shards, 0)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Commit error %v, want one containing %q", err, c.want)
			}
			if _, err := os.Stat(filepath.Join(StepDir(dir, 1), ManifestName)); err == nil {
				t.Fatal("a rejected Commit wrote a manifest")
			}
		})
	}
}

func writeBoth(t *testing.T, dir string) []Shard {
	t.Helper()
	var s []Shard
	for r := range 2 {
		sh, err := WriteShard(dir, 1, r, rankTensors(r, 1))
		if err != nil {
			t.Fatal(err)
		}
		s = append(s, sh)
	}
	return s
}

func TestWriteShardRejects(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteShard(dir, 1, -1, nil); err == nil || !strings.Contains(err.Error(), "rank -1") {
		t.Errorf("negative rank: %v", err)
	}
	if _, err := WriteShard(dir, -1, 0, nil); err == nil || !strings.Contains(err.Error(), "step -1") {
		t.Errorf("negative step: %v", err)
	}
	dup := append(rankTensors(0, 1), rankTensors(0, 1)[0])
	if _, err := WriteShard(dir, 1, 0, dup); err == nil || !strings.Contains(err.Error(), "appears twice") {
		t.Errorf("a name twice in one rank's file: %v", err)
	}
}

// A committed multi-rank step damaged afterwards is reported by Load, naming
// the file at fault.
func TestLoadDamagedSharded(t *testing.T) {
	cases := []damage{
		{"rank file missing", func(t *testing.T, d string) { os.Remove(filepath.Join(d, RankFile(1))) },
			"rank-00001.safetensors: checkpoint corrupt: file listed in the manifest is missing"},
		{"manifest lists a file that is not there", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) {
				m.Files = append(m.Files, FileEntry{Name: RankFile(2), Size: 8})
				te := m.Tensors[1]
				te.File, te.Name = RankFile(2), "model.layers.2.input_layernorm.weight"
				m.Tensors = append(m.Tensors, te)
			})
		}, "rank-00002.safetensors: checkpoint corrupt: file listed in the manifest is missing"},
		{"shards overlap", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) {
				for i := range m.Tensors {
					if m.Tensors[i].Name == "model.embed_tokens.weight" && m.Tensors[i].File == RankFile(1) {
						m.Tensors[i].Rows = [2]int{3, 8}
					}
				}
			})
		}, "overlap rows [0, 5)"},
		{"shards in a version 1 manifest", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) { m.Version = 1 })
		}, `tensor "model.embed_tokens.weight" listed twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := saveRanks(t, dir, 7, 2, 0)
			c.break_(t, p)
			st, err := Load(p)
			if err == nil {
				t.Fatalf("Load accepted a damaged checkpoint (step %d)", st.Step)
			}
			t.Logf("error: %v", err)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %q\nwant ErrCorrupt naming %s and containing %q", err, p, c.want)
			}
		})
	}
}
