package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/ternml/tern/pkg/atomicfile"

	"github.com/ternml/tern/pkg/safetensors"
)

// castagnoli is the CRC32C table; Go computes it with the SSE4.2 / ARMv8 CRC
// instructions, so checksumming costs far less than the disk write.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Tensor is one tensor of a rank's state plus where it sits in the global
// tensor. A nil GlobalShape means the tensor is whole (not sharded).
type Tensor struct {
	safetensors.Tensor
	GlobalShape  []int
	RowLo, RowHi int // rows [RowLo, RowHi) of GlobalShape[0] held here
}

// Whole wraps an unsharded tensor: its global shape is its shape and it
// holds every row.
func Whole(t safetensors.Tensor) Tensor {
	st := Tensor{Tensor: t, GlobalShape: slices.Clone(t.Shape)}
	if len(t.Shape) > 0 {
		st.RowHi = t.Shape[0]
	}
	return st
}

// State is everything a rank needs to resume: the step just completed, the
// tensors (weights, optimizer state), and the caller's opaque JSON for the job
// spec, data cursor, RNG state and anything else. Load returns the JSON
// fields compacted (json.Compact).
type State struct {
	Step    int64
	Job     string
	Created time.Time // Save uses the current time when zero
	Spec    json.RawMessage
	Cursor  json.RawMessage
	RNG     json.RawMessage
	Extra   json.RawMessage
	Tensors []Tensor
}

// rankFile is the single tensor file a one-process job writes: RankFile(0),
// so its checkpoint looks like a multi-rank one with one rank.
const rankFile = "rank-00000.safetensors"

// checkHeader checks the non-tensor fields of a state can be written.
func checkHeader(st *State) error {
	if st.Step < 0 {
		return fmt.Errorf("step %d is negative", st.Step)
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"Spec", st.Spec}, {"Cursor", st.Cursor}, {"RNG", st.RNG}, {"Extra", st.Extra}} {
		if len(f.raw) > 0 && !json.Valid(f.raw) {
			return fmt.Errorf("state field %s is not valid JSON", f.name)
		}
	}
	return nil
}

// normalize checks a state can be written and returns its tensors with
// whole-tensor sharding filled in.
func normalize(st *State) ([]Tensor, error) {
	if err := checkHeader(st); err != nil {
		return nil, err
	}
	return normalizeTensors(st.Tensors)
}

// normalizeTensors fills in whole-tensor sharding and checks the tensors of
// one file: valid, distinctly named, with consistent row ranges.
func normalizeTensors(in []Tensor) ([]Tensor, error) {
	ts := make([]Tensor, len(in))
	seen := make(map[string]bool, len(ts))
	for i, t := range in {
		if t.GlobalShape == nil {
			t = Whole(t.Tensor)
		}
		if err := t.Tensor.Validate(); err != nil {
			return nil, err
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("tensor %q appears twice in the state", t.Name)
		}
		seen[t.Name] = true
		if err := checkRows(t.Shape, t.GlobalShape, t.RowLo, t.RowHi); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		ts[i] = t
	}
	return ts, nil
}

// newManifest fills in a manifest's header from st; files and tensors are
// the caller's.
func newManifest(st *State) Manifest {
	created := st.Created
	if created.IsZero() {
		created = time.Now()
	}
	return Manifest{
		Format: FormatName, Version: 1, Step: st.Step, Created: created.UTC(),
		Job: st.Job, Spec: st.Spec, Cursor: st.Cursor, RNG: st.RNG, Extra: st.Extra,
	}
}

// Save writes st as the checkpoint DIR/step-NNNNNNNN and returns that path.
// Tensor files are made durable before the manifest, which is written last
// (temporary file, fsync, rename, fsync of the directory), so a crash at any
// point leaves either a complete checkpoint or an ignored incomplete one.
// A leftover incomplete directory for the same step is replaced; a complete
// one is never overwritten (ErrStepExists).
//
// After a successful write Save prunes: it keeps the newest keep complete
// checkpoints (all of them when keep <= 0) and never the one just written,
// and removes incomplete directories older than the newest complete one. If
// only pruning fails, Save returns the new path together with the error.
func Save(dir string, st *State, keep int) (string, error) {
	ts, err := normalize(st)
	if err != nil {
		return "", fmt.Errorf("save checkpoint step %d: %w", st.Step, err)
	}
	stepDir := StepDir(dir, st.Step)
	if err := prepareStepDir(dir, stepDir); err != nil {
		return "", fmt.Errorf("save checkpoint %s: %w", stepDir, err)
	}
	// "format": "pt" is what transformers expects in a safetensors file's
	// metadata; the step lets a lone file be traced to its checkpoint.
	meta := map[string]string{"format": "pt", "tern.step": fmt.Sprint(st.Step)}
	sh, err := writeShard(stepDir, rankFile, ts, meta)
	if err != nil {
		os.RemoveAll(stepDir) // no manifest yet, so nothing can be using it
		return "", fmt.Errorf("save checkpoint %s: %w", stepDir, err)
	}
	m := newManifest(st)
	m.Files, m.Tensors = []FileEntry{sh.File}, sh.Tensors
	return commitManifest(dir, stepDir, &m, keep)
}

// writeShard writes ts as the tensor file name of stepDir and returns its
// manifest entries.
func writeShard(stepDir, name string, ts []Tensor, meta map[string]string) (Shard, error) {
	sh := Shard{Tensors: make([]TensorEntry, 0, len(ts))}
	plain := make([]safetensors.Tensor, len(ts))
	for i, t := range ts {
		plain[i] = t.Tensor
		sh.Tensors = append(sh.Tensors, TensorEntry{
			Name: t.Name, File: name, DType: t.DType,
			Shape: nonNil(t.Shape), GlobalShape: nonNil(t.GlobalShape), Rows: [2]int{t.RowLo, t.RowHi},
			CRC32C: crc32.Checksum(t.Data, castagnoli),
		})
	}
	fe, err := writeTensorFile(filepath.Join(stepDir, name), plain, meta)
	if err != nil {
		return Shard{}, err
	}
	sh.File = fe
	return sh, nil
}

// commitManifest writes m as stepDir's manifest, the step's commit point,
// then prunes the root as Save describes. If the manifest cannot be written
// the step directory is removed: without a manifest nothing can use it.
func commitManifest(root, stepDir string, m *Manifest, keep int) (string, error) {
	mb, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return "", fmt.Errorf("save checkpoint %s: encode manifest: %w", stepDir, err)
	}
	if err := atomicfile.Write(filepath.Join(stepDir, ManifestName), 0o644, func(w io.Writer) error {
		_, err := w.Write(append(mb, '\n'))
		return err
	}); err != nil {
		if _, serr := os.Stat(filepath.Join(stepDir, ManifestName)); serr != nil {
			os.RemoveAll(stepDir)
		}
		return "", fmt.Errorf("save checkpoint %s: %w", stepDir, err)
	}
	if err := prune(root, keep, m.Step); err != nil {
		return stepDir, fmt.Errorf("checkpoint saved at %s, but pruning older ones failed: %w", stepDir, err)
	}
	return stepDir, nil
}

func nonNil(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

// prepareStepDir creates an empty step directory, clearing the remains of an
// earlier save of the same step that never wrote its manifest.
func prepareStepDir(root, stepDir string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(stepDir, ManifestName)); err == nil {
		return ErrStepExists
	}
	if err := os.RemoveAll(stepDir); err != nil {
		return fmt.Errorf("remove incomplete %s: %w", stepDir, err)
	}
	if err := os.Mkdir(stepDir, 0o755); err != nil {
		return err
	}
	return atomicfile.SyncDir(root)
}

// countingCRC checksums and counts what passes through it.
type countingCRC struct {
	w   io.Writer
	crc uint32
	n   int64
}

func (c *countingCRC) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	c.n += int64(n)
	return n, err
}

func writeTensorFile(path string, ts []safetensors.Tensor, meta map[string]string) (FileEntry, error) {
	var cw *countingCRC
	err := atomicfile.Write(path, 0o644, func(w io.Writer) error {
		cw = &countingCRC{w: w}
		return safetensors.Write(cw, ts, meta)
	})
	if err != nil {
		return FileEntry{}, err
	}
	return FileEntry{Name: filepath.Base(path), Size: cw.n, CRC32C: cw.crc}, nil
}

// stepEntry is one step-NNNNNNNN directory found under a root.
type stepEntry struct {
	step     int64
	path     string
	complete bool
}

// scan lists the step directories of root, newest first. A directory is
// complete when its manifest exists: the manifest is renamed into place
// only after everything else is durable.
func scan(root string) ([]stepEntry, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var out []stepEntry
	for _, e := range ents {
		step, ok := parseStepName(e.Name())
		if !ok || !e.IsDir() {
			continue
		}
		p := filepath.Join(root, e.Name())
		fi, err := os.Stat(filepath.Join(p, ManifestName))
		out = append(out, stepEntry{step: step, path: p, complete: err == nil && fi.Mode().IsRegular()})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].step > out[b].step })
	return out, nil
}

// Latest returns the newest complete step directory under root.
func Latest(root string) (string, error) {
	ents, err := scan(root)
	if err != nil {
		return "", fmt.Errorf("find latest checkpoint in %s: %w", root, err)
	}
	for _, e := range ents {
		if e.complete {
			return e.path, nil
		}
	}
	return "", fmt.Errorf("%w in %s: no %sNNNNNNNN directory with a %s", ErrNoCheckpoint, root, stepPrefix, ManifestName)
}

// prune applies Save's retention rule; protect is the step just written.
func prune(root string, keep int, protect int64) error {
	ents, err := scan(root)
	if err != nil {
		return err
	}
	newest := int64(-1)
	kept := 0
	var errs []error
	for _, e := range ents {
		if !e.complete {
			continue
		}
		if newest < 0 {
			newest = e.step
		}
		if keep <= 0 || kept < keep || e.step == protect {
			kept++
			continue
		}
		// Drop the manifest first: a crash halfway through RemoveAll then
		// leaves an incomplete directory, never a complete-looking one with
		// files missing.
		if err := os.Remove(filepath.Join(e.path, ManifestName)); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := atomicfile.SyncDir(e.path); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(e.path); err != nil {
			errs = append(errs, err)
		}
	}
	for _, e := range ents {
		// An incomplete directory newer than every complete one may be a
		// save in progress; older ones are debris from interrupted saves.
		if !e.complete && e.step < newest && e.step != protect {
			if err := os.RemoveAll(e.path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Load reads and verifies a checkpoint. path is either a step directory or a
// checkpoint root, in which case the newest complete step is loaded. Every
// file's size and CRC32C, and every tensor's dtype, shape and CRC32C, are
// checked against the manifest before the state is returned; a damaged
// newest checkpoint is an error, never silently replaced by an older one.
//
// The tensors come in manifest order. A checkpoint written by several ranks
// may hold one tensor name several times, each with its own row range.
func Load(path string) (*State, error) { return LoadSelected(path, nil) }

// LoadSelected is Load for a reader that needs only some tensors, such as
// one pipeline stage resuming: it returns the tensors for which want is
// true and reads only the files that hold at least one of them. Each file
// it reads is verified whole, exactly as Load does; files it skips are not
// read at all. A nil want selects every tensor.
func LoadSelected(path string, want func(TensorEntry) bool) (*State, error) {
	stepDir, err := resolve(path)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	st, err := loadStep(stepDir, want)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", stepDir, err)
	}
	return st, nil
}

func resolve(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory (want a checkpoint root or a %sNNNNNNNN directory)", path, stepPrefix)
	}
	if _, err := os.Stat(filepath.Join(path, ManifestName)); err == nil {
		return path, nil
	}
	if _, ok := parseStepName(filepath.Base(path)); ok {
		return "", fmt.Errorf("%s has no %s: the checkpoint is incomplete (its save did not finish)", path, ManifestName)
	}
	latest, err := Latest(path)
	if errors.Is(err, ErrNoCheckpoint) {
		return "", fmt.Errorf("%s is neither a checkpoint step directory (no %s) nor a checkpoint root (no complete %sNNNNNNNN directories): %w",
			path, ManifestName, stepPrefix, ErrNoCheckpoint)
	}
	return latest, err
}

func loadStep(stepDir string, want func(TensorEntry) bool) (*State, error) {
	m, err := readManifest(stepDir)
	if err != nil {
		return nil, err
	}
	chosen := make([]bool, len(m.Tensors))
	needFile := make(map[string]bool, len(m.Files))
	for i, te := range m.Tensors {
		if want == nil || want(te) {
			chosen[i] = true
			needFile[te.File] = true
		}
	}
	// A tensor is identified by its file and name: names repeat across the
	// files of a multi-rank step, never within one file.
	type key struct{ file, name string }
	read := make(map[key]safetensors.Tensor, len(m.Tensors))
	for _, fe := range m.Files {
		if !needFile[fe.Name] {
			continue
		}
		ts, err := verifyFile(stepDir, fe, m.Tensors)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fe.Name, err)
		}
		for _, t := range ts {
			read[key{fe.Name, t.Name}] = t
		}
	}
	st := &State{
		Step: m.Step, Job: m.Job, Created: m.Created,
		Spec: m.Spec, Cursor: m.Cursor, RNG: m.RNG, Extra: m.Extra,
		Tensors: make([]Tensor, 0, len(m.Tensors)),
	}
	for i, te := range m.Tensors {
		if !chosen[i] {
			continue
		}
		st.Tensors = append(st.Tensors, Tensor{
			Tensor: read[key{te.File, te.Name}], GlobalShape: te.GlobalShape, RowLo: te.Rows[0], RowHi: te.Rows[1],
		})
	}
	return st, nil
}

// verifyFile reads one tensor file whole and checks it against the manifest:
// size, the tensor set, each tensor's dtype, shape and checksum, then the
// checksum of the whole file (which also covers the header). Tensors are
// checked before the file checksum so that a flipped data byte is reported
// against the tensor that holds it.
func verifyFile(stepDir string, fe FileEntry, entries []TensorEntry) ([]safetensors.Tensor, error) {
	path := filepath.Join(stepDir, fe.Name)
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, corruptf("file listed in the manifest is missing")
		}
		return nil, err
	}
	if fi.Size() != fe.Size {
		return nil, corruptf("size %d bytes, manifest says %d (truncated or overwritten)", fi.Size(), fe.Size)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != fe.Size {
		return nil, corruptf("read %d bytes, manifest says %d (file changed while loading)", len(b), fe.Size)
	}
	f, err := safetensors.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	var out []safetensors.Tensor
	want := make(map[string]bool)
	for _, te := range entries {
		if te.File != fe.Name {
			continue
		}
		want[te.Name] = true
		info, ok := f.Info(te.Name)
		if !ok {
			return nil, corruptf("tensor %q is in the manifest but not in the file", te.Name)
		}
		if info.DType != te.DType {
			return nil, corruptf("tensor %q: dtype %s in the file, manifest says %s", te.Name, info.DType, te.DType)
		}
		if !slices.Equal(info.Shape, te.Shape) {
			return nil, corruptf("tensor %q: shape %v in the file, manifest says %v", te.Name, info.Shape, te.Shape)
		}
		t, err := f.Read(te.Name)
		if err != nil {
			return nil, err
		}
		if got := crc32.Checksum(t.Data, castagnoli); got != te.CRC32C {
			return nil, corruptf("tensor %q: CRC32C %08x, manifest says %08x (data damaged)", te.Name, got, te.CRC32C)
		}
		out = append(out, t)
	}
	for _, name := range f.Names() {
		if !want[name] {
			return nil, corruptf("tensor %q is in the file but not in the manifest", name)
		}
	}
	if got := crc32.Checksum(b, castagnoli); got != fe.CRC32C {
		return nil, corruptf("file CRC32C %08x, manifest says %08x (header or padding damaged)", got, fe.CRC32C)
	}
	return out, nil
}
