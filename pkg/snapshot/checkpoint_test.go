package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ternml/tern/pkg/safetensors"
)

// testState builds a small but varied state: whole F32 weights, a sharded
// tensor holding rows [2, 5) of a 10-row global tensor, a BF16 tensor, an
// AdamW slot, and a scalar.
func testState(step int64) *State {
	w := make([]float32, 12)
	for i := range w {
		w[i] = float32(i)*0.25 - 1 + float32(step)
	}
	emb := make([]float32, 3*4)
	for i := range emb {
		emb[i] = float32(i) * -0.5
	}
	return &State{
		Step:    step,
		Job:     "tiny",
		Created: time.Date(2026, 11, 25, 12, 0, 0, 123, time.UTC),
		Spec:    json.RawMessage(`{"model":{"dim":4},"steps":100}`),
		Cursor:  json.RawMessage(`{"epoch":0,"index":` + jsonInt(step*8) + `}`),
		RNG:     json.RawMessage(`"AAECAwQ="`),
		Tensors: []Tensor{
			Whole(safetensors.F32("model.layers.0.mlp.up_proj.weight", []int{3, 4}, w)),
			{Tensor: safetensors.F32("model.embed_tokens.weight", []int{3, 4}, emb), GlobalShape: []int{10, 4}, RowLo: 2, RowHi: 5},
			Whole(safetensors.BF16("model.norm.weight", []int{4}, []float32{1, 1, 0.5, 2})),
			Whole(safetensors.F32("optim.model.layers.0.mlp.up_proj.weight.exp_avg", []int{3, 4}, w)),
			{Tensor: safetensors.F32("optim.step", []int{}, []float32{float32(step)})},
		},
	}
}

func jsonInt(v int64) string { b, _ := json.Marshal(v); return string(b) }

func save(t *testing.T, dir string, st *State, keep int) string {
	t.Helper()
	p, err := Save(dir, st, keep)
	if err != nil {
		t.Fatalf("Save step %d: %v", st.Step, err)
	}
	return p
}

func requireSame(t *testing.T, got, want *State) {
	t.Helper()
	if got.Step != want.Step || got.Job != want.Job || !got.Created.Equal(want.Created) {
		t.Fatalf("header: got step %d job %q created %v, want %d %q %v", got.Step, got.Job, got.Created, want.Step, want.Job, want.Created)
	}
	for _, f := range []struct {
		name      string
		got, want json.RawMessage
	}{{"Spec", got.Spec, want.Spec}, {"Cursor", got.Cursor, want.Cursor}, {"RNG", got.RNG, want.RNG}, {"Extra", got.Extra, want.Extra}} {
		if !bytes.Equal(f.got, f.want) {
			t.Errorf("%s: got %s, want %s", f.name, f.got, f.want)
		}
	}
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for i, w := range want.Tensors {
		if w.GlobalShape == nil {
			w = Whole(w.Tensor)
		}
		g := got.Tensors[i]
		if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) ||
			!slices.Equal(g.GlobalShape, w.GlobalShape) || g.RowLo != w.RowLo || g.RowHi != w.RowHi {
			t.Errorf("tensor %d: got %s %s%v global %v rows [%d,%d) %x\nwant %s %s%v global %v rows [%d,%d) %x",
				i, g.Name, g.DType, g.Shape, g.GlobalShape, g.RowLo, g.RowHi, g.Data,
				w.Name, w.DType, w.Shape, w.GlobalShape, w.RowLo, w.RowHi, w.Data)
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st := testState(7)
	p := save(t, dir, st, 0)
	if p != filepath.Join(dir, "step-00000007") {
		t.Fatalf("saved at %s", p)
	}
	for _, path := range []string{p, dir} {
		got, err := Load(path)
		if err != nil {
			t.Fatalf("Load(%s): %v", path, err)
		}
		requireSame(t, got, st)
	}
	ents, _ := os.ReadDir(p)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{ManifestName, rankFile}) {
		t.Fatalf("step dir holds %v", names)
	}
	// The rank file is a plain safetensors file other tools can open.
	f, err := safetensors.Open(filepath.Join(p, rankFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Metadata()["format"] != "pt" || len(f.Names()) != len(st.Tensors) {
		t.Fatalf("rank file metadata %v names %v", f.Metadata(), f.Names())
	}
}

func TestSaveIsDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	pa, pb := save(t, a, testState(3), 0), save(t, b, testState(3), 0)
	for _, name := range []string{ManifestName, rankFile} {
		x, _ := os.ReadFile(filepath.Join(pa, name))
		y, _ := os.ReadFile(filepath.Join(pb, name))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two saves of the same state", name)
		}
	}
}

func TestLatestIgnoresIncomplete(t *testing.T) {
	dir := t.TempDir()
	if _, err := Latest(dir); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("Latest on empty dir: %v", err)
	}
	save(t, dir, testState(5), 0)
	save(t, dir, testState(20), 0)
	// A newer save that crashed before its manifest, and names that are
	// not canonical step directories.
	for _, d := range []string{"step-00000030", "step-40", "step-000000050", "other"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "step-00000030", rankFile), []byte("partial"), 0o644)
	os.WriteFile(filepath.Join(dir, "step-000000050", ManifestName), []byte("{}"), 0o644)
	got, err := Latest(dir)
	if err != nil || got != StepDir(dir, 20) {
		t.Fatalf("Latest = %s, %v; want step 20", got, err)
	}
	st, err := Load(dir)
	if err != nil || st.Step != 20 {
		t.Fatalf("Load(root) step %v, %v", st, err)
	}
	// Saving the crashed step again replaces the debris.
	save(t, dir, testState(30), 0)
	if st, err := Load(dir); err != nil || st.Step != 30 {
		t.Fatalf("after re-save: %v, %v", st, err)
	}
	if _, err := Save(dir, testState(30), 0); !errors.Is(err, ErrStepExists) {
		t.Fatalf("second Save of a complete step: %v, want ErrStepExists", err)
	}
}

func stepsOnDisk(t *testing.T, dir string) (complete, incomplete []int64) {
	t.Helper()
	ents, err := scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.complete {
			complete = append(complete, e.step)
		} else {
			incomplete = append(incomplete, e.step)
		}
	}
	return
}

func TestKeepPrunes(t *testing.T) {
	dir := t.TempDir()
	// Debris from an interrupted save older than what follows, and one
	// newer than everything (possibly a save still running elsewhere).
	os.MkdirAll(StepDir(dir, 2), 0o755)
	os.MkdirAll(StepDir(dir, 99), 0o755)
	for _, s := range []int64{10, 20, 30, 40} {
		save(t, dir, testState(s), 2)
	}
	c, inc := stepsOnDisk(t, dir)
	if !slices.Equal(c, []int64{40, 30}) || !slices.Equal(inc, []int64{99}) {
		t.Fatalf("after keep=2: complete %v incomplete %v; want [40 30] and [99]", c, inc)
	}
	// Saving an older step (a job resumed from an earlier checkpoint) must
	// keep the one just written even though it is not among the newest.
	save(t, dir, testState(15), 1)
	c, _ = stepsOnDisk(t, dir)
	if !slices.Equal(c, []int64{40, 15}) {
		t.Fatalf("after saving step 15 with keep=1: complete %v, want [40 15]", c)
	}
	// keep <= 0 keeps everything.
	save(t, dir, testState(50), 0)
	if c, _ = stepsOnDisk(t, dir); !slices.Equal(c, []int64{50, 40, 15}) {
		t.Fatalf("keep=0: complete %v", c)
	}
}

// damage describes one way a saved checkpoint gets broken and the error
// Load must give.
type damage struct {
	name   string
	break_ func(t *testing.T, stepDir string)
	want   string
}

func editManifest(t *testing.T, stepDir string, edit func(m *Manifest)) {
	t.Helper()
	p := filepath.Join(stepDir, ManifestName)
	m, err := ReadManifest(stepDir)
	if err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ := json.Marshal(m)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// dataOffset returns the file offset of the first byte of tensor name.
func dataOffset(t *testing.T, stepDir, name string) int64 {
	f, err := safetensors.Open(filepath.Join(stepDir, rankFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in, _ := f.Info(name)
	return f.DataOffset() + in.Begin
}

func TestLoadDamaged(t *testing.T) {
	const victim = "model.embed_tokens.weight"
	cases := []damage{
		{"manifest missing", func(t *testing.T, d string) { os.Remove(filepath.Join(d, ManifestName)) },
			"no manifest.json: the checkpoint is incomplete"},
		{"manifest bad JSON", func(t *testing.T, d string) {
			os.WriteFile(filepath.Join(d, ManifestName), []byte(`{"format": "tern-checkpoint", "step": `), 0o644)
		}, "manifest.json: checkpoint corrupt: not a valid manifest"},
		{"manifest trailing data", func(t *testing.T, d string) {
			p := filepath.Join(d, ManifestName)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, append(b, '}'), 0o644)
		}, "data after the JSON object"},
		{"manifest unknown version", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) { m.Version = FormatVersion + 1 })
		}, fmt.Sprintf("format version %d is not supported", FormatVersion+1)},
		{"manifest step disagrees with dir", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) { m.Step = 8 })
		}, "manifest is for step 8 but the directory is for step 7"},
		{"manifest file escapes dir", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) {
				m.Files[0].Name = "../x"
				for i := range m.Tensors {
					m.Tensors[i].File = "../x"
				}
			})
		}, `name "../x" is not a plain file name`},
		{"file missing", func(t *testing.T, d string) { os.Remove(filepath.Join(d, rankFile)) },
			rankFile + ": checkpoint corrupt: file listed in the manifest is missing"},
		{"file truncated", func(t *testing.T, d string) {
			p := filepath.Join(d, rankFile)
			fi, _ := os.Stat(p)
			os.Truncate(p, fi.Size()-5)
		}, "(truncated or overwritten)"},
		{"byte flipped in tensor", func(t *testing.T, d string) {
			p := filepath.Join(d, rankFile)
			b, _ := os.ReadFile(p)
			b[dataOffset(t, d, victim)+5] ^= 0x10
			os.WriteFile(p, b, 0o644)
		}, `tensor "model.embed_tokens.weight": CRC32C`},
		{"byte flipped in header padding", func(t *testing.T, d string) {
			p := filepath.Join(d, rankFile)
			b, _ := os.ReadFile(p)
			b[8+1] = '{' // the header now starts {{: no longer JSON
			os.WriteFile(p, b, 0o644)
		}, "safetensors: invalid"},
		{"tensor absent from file", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) {
				extra := m.Tensors[0]
				extra.Name = "model.layers.9.ghost"
				m.Tensors = append(m.Tensors, extra)
			})
		}, `tensor "model.layers.9.ghost" is in the manifest but not in the file`},
		{"tensor absent from manifest", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) { m.Tensors = m.Tensors[1:] })
		}, `tensor "model.layers.0.mlp.up_proj.weight" is in the file but not in the manifest`},
		{"shape mismatch", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) {
				m.Tensors[0].Shape = []int{4, 3}
				m.Tensors[0].GlobalShape = []int{4, 3}
				m.Tensors[0].Rows = [2]int{0, 4}
			})
		}, `tensor "model.layers.0.mlp.up_proj.weight": shape [3 4] in the file, manifest says [4 3]`},
		{"dtype mismatch", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) {
				m.Tensors[0].DType = "I32"
			})
		}, `dtype F32 in the file, manifest says I32`},
		{"row range inconsistent", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) { m.Tensors[1].Rows = [2]int{8, 11} })
		}, `tensor "model.embed_tokens.weight": rows [8, 11) outside [0, 10)`},
		{"file checksum", func(t *testing.T, d string) {
			editManifest(t, d, func(m *Manifest) { m.Files[0].CRC32C ^= 1 })
		}, "file CRC32C"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := save(t, dir, testState(7), 0)
			c.break_(t, p)
			st, err := Load(p)
			if err == nil {
				t.Fatalf("Load accepted a damaged checkpoint (step %d)", st.Step)
			}
			if st != nil {
				t.Errorf("Load returned a state alongside the error")
			}
			t.Logf("error: %v", err)
			if c.name != "manifest missing" && !errors.Is(err, ErrCorrupt) {
				t.Errorf("error does not wrap ErrCorrupt")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, c.want)
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the step directory", err)
			}
		})
	}
}

func TestLoadBadPath(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "empty"), 0o755)
	os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o644)
	cases := []struct{ path, want string }{
		{filepath.Join(dir, "empty"), "neither a checkpoint step directory"},
		{filepath.Join(dir, "file"), "is not a directory"},
		{filepath.Join(dir, "nope"), "no such file"},
	}
	for _, c := range cases {
		if _, err := Load(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load(%s) = %v, want error containing %q", c.path, err, c.want)
		}
	}
	if _, err := Load(filepath.Join(dir, "empty")); !errors.Is(err, ErrNoCheckpoint) {
		t.Errorf("Load(empty root) does not wrap ErrNoCheckpoint: %v", err)
	}
}

func TestSaveRejectsBadState(t *testing.T) {
	cases := []struct {
		name string
		edit func(st *State)
		want string
	}{
		{"negative step", func(st *State) { st.Step = -1 }, "step -1 is negative"},
		{"cursor not JSON", func(st *State) { st.Cursor = json.RawMessage(`{index:`) }, "Cursor is not valid JSON"},
		{"duplicate tensor", func(st *State) { st.Tensors = append(st.Tensors, st.Tensors[0]) }, "appears twice"},
		{"rows do not match shape", func(st *State) { st.Tensors[1].RowHi = 6 }, "hold 4 rows but the shape [3 4] has 3"},
		{"data short", func(st *State) { st.Tensors[0].Data = st.Tensors[0].Data[:4] }, "needs 48 bytes"},
		{"sharded on a later dim", func(st *State) { st.Tensors[1].GlobalShape = []int{10, 8} }, "only the first may be sharded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			st := testState(1)
			c.edit(st)
			if _, err := Save(dir, st, 0); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Save error %v, want one containing %q", err, c.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("rejected Save left %d entries", len(ents))
			}
		})
	}
}

// BenchmarkSaveLoad measures a durable save (with fsyncs) and a verified load
// of a 64 MiB state: the checkpoint cost a training loop pays every N steps.
func BenchmarkSaveLoad(b *testing.B) {
	const tensors, rows, cols = 16, 1024, 1024 // 16 × 4 MiB F32
	st := &State{Step: 0, Job: "bench"}
	v := make([]float32, rows*cols)
	for i := range v {
		v[i] = float32(i)
	}
	for i := range tensors {
		st.Tensors = append(st.Tensors, Whole(safetensors.F32("w"+jsonInt(int64(i)), []int{rows, cols}, v)))
	}
	dir := b.TempDir()
	b.SetBytes(tensors * rows * cols * 4)
	b.Run("save", func(b *testing.B) {
		b.SetBytes(tensors * rows * cols * 4)
		for range b.N {
			st.Step++ // the benchmark body runs several times: never reuse a step
			if _, err := Save(dir, st, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("load", func(b *testing.B) {
		b.SetBytes(tensors * rows * cols * 4)
		for range b.N {
			if _, err := Load(dir); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzParseManifest feeds damaged manifests to the parser: it must reject or
// accept without panicking, and whatever it accepts must be self-consistent.
func FuzzParseManifest(f *testing.F) {
	dir := f.TempDir()
	p, err := Save(dir, testState(7), 0)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := os.ReadFile(filepath.Join(p, ManifestName))
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"format":"tern-checkpoint","version":1,"step":7,"files":[],"tensors":[]}`))
	f.Add([]byte(`{"format":"tern-checkpoint","version":1,"step":7,"files":[{"name":"a","size":4}],` +
		`"tensors":[{"name":"x","file":"a","dtype":"F32","shape":[1],"global_shape":[4],"rows":[3,4]}]}`))
	f.Add([]byte(`{"format":"tern-checkpoint","version":2,"step":7,"files":[{"name":"a","size":4},{"name":"b","size":4}],` +
		`"tensors":[{"name":"x","file":"a","dtype":"F32","shape":[1],"global_shape":[2],"rows":[0,1]},` +
		`{"name":"x","file":"b","dtype":"F32","shape":[1],"global_shape":[2],"rows":[1,2]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b, "step-00000007")
		if err != nil {
			if m != nil {
				t.Fatal("manifest returned with an error")
			}
			return
		}
		if m.Step != 7 {
			t.Fatalf("accepted a manifest for step %d in the directory of step 7", m.Step)
		}
		files := map[string]bool{}
		for _, fe := range m.Files {
			if !validName(fe.Name) {
				t.Fatalf("accepted file name %q", fe.Name)
			}
			files[fe.Name] = true
		}
		for _, te := range m.Tensors {
			if !files[te.File] {
				t.Fatalf("tensor %q in unlisted file %q", te.Name, te.File)
			}
			if err := checkRows(te.Shape, te.GlobalShape, te.Rows[0], te.Rows[1]); err != nil {
				t.Fatalf("accepted inconsistent rows: %v", err)
			}
		}
	})
}
