package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ternml/tern/pkg/safetensors"
)

const (
	// FormatName identifies a tern checkpoint manifest.
	FormatName = "tern-checkpoint"
	// FormatVersion is the newest manifest version this package reads.
	// Version 2 lets one tensor name appear in several files, each holding
	// its own rows (a tensor sharded over ranks); version 1 lists every
	// name once. Writers record the oldest version that describes the
	// checkpoint, so a single-file checkpoint stays readable by builds that
	// know only version 1.
	FormatVersion = 2
	// ManifestName is the file whose presence marks a step directory
	// complete.
	ManifestName = "manifest.json"

	stepPrefix = "step-"
	stepDigits = 8
)

// ErrCorrupt is wrapped by every error that reports a checkpoint whose bytes
// do not match its manifest, or a manifest that is malformed.
var ErrCorrupt = errors.New("checkpoint corrupt")

// ErrNoCheckpoint is wrapped when a directory holds no complete checkpoint.
var ErrNoCheckpoint = errors.New("no complete checkpoint")

// ErrStepExists is returned by Save when a complete checkpoint for the step
// is already on disk; Save never overwrites one.
var ErrStepExists = errors.New("checkpoint for this step already exists")

// Manifest is the content of manifest.json.
type Manifest struct {
	Format  string          `json:"format"`
	Version int             `json:"version"`
	Step    int64           `json:"step"`
	Created time.Time       `json:"created"`
	Job     string          `json:"job,omitempty"`
	Spec    json.RawMessage `json:"spec,omitempty"`
	Cursor  json.RawMessage `json:"cursor,omitempty"`
	RNG     json.RawMessage `json:"rng,omitempty"`
	Extra   json.RawMessage `json:"extra,omitempty"`
	Files   []FileEntry     `json:"files"`
	Tensors []TensorEntry   `json:"tensors"`
}

// FileEntry describes one tensor file of a step directory.
type FileEntry struct {
	Name   string `json:"name"` // base name inside the step directory
	Size   int64  `json:"size"`
	CRC32C uint32 `json:"crc32c"`
}

// TensorEntry describes one tensor: where it is, what it is, and which rows
// of the global tensor it holds.
type TensorEntry struct {
	Name        string `json:"name"`
	File        string `json:"file"`
	DType       string `json:"dtype"`
	Shape       []int  `json:"shape"`        // as stored in the file
	GlobalShape []int  `json:"global_shape"` // of the whole, unsharded tensor
	Rows        [2]int `json:"rows"`         // [lo, hi) of GlobalShape[0]; [0, 0] for scalars
	CRC32C      uint32 `json:"crc32c"`
}

// StepDir returns the directory of step under root.
func StepDir(root string, step int64) string {
	return filepath.Join(root, fmt.Sprintf("%s%0*d", stepPrefix, stepDigits, step))
}

// parseStepName returns the step of a directory named like StepDir's output.
// Only the canonical spelling counts, so step-00000010 and step-000000010 can
// never both claim step 10.
func parseStepName(name string) (int64, bool) {
	digits, ok := strings.CutPrefix(name, stepPrefix)
	if !ok || len(digits) < stepDigits {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	step, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || filepath.Base(StepDir("", step)) != name {
		return 0, false
	}
	return step, true
}

// checkRows validates a tensor's sharding description against its local
// shape: same rank, same trailing dimensions, and a row range inside the
// global first dimension whose length is the local first dimension.
func checkRows(shape, global []int, lo, hi int) error {
	if len(shape) != len(global) {
		return fmt.Errorf("shape %v and global shape %v differ in rank", shape, global)
	}
	for i, d := range global {
		if d < 0 {
			return fmt.Errorf("global shape %v: dimension %d is negative", global, i)
		}
		if i > 0 && shape[i] != d {
			return fmt.Errorf("shape %v and global shape %v differ in dimension %d (only the first may be sharded)", shape, global, i)
		}
	}
	if len(global) == 0 {
		if lo != 0 || hi != 0 {
			return fmt.Errorf("scalar tensor has rows [%d, %d), want [0, 0)", lo, hi)
		}
		return nil
	}
	if lo < 0 || hi < lo || hi > global[0] {
		return fmt.Errorf("rows [%d, %d) outside [0, %d) of global shape %v", lo, hi, global[0], global)
	}
	if hi-lo != shape[0] {
		return fmt.Errorf("rows [%d, %d) hold %d rows but the shape %v has %d", lo, hi, hi-lo, shape, shape[0])
	}
	return nil
}

// validName accepts a plain file name inside the step directory, so a
// damaged or hostile manifest cannot point Load outside it.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && name != ManifestName &&
		!strings.ContainsAny(name, `/\`) && filepath.Base(name) == name
}

// checkShards validates the entries idx of ts, which share one name and sit
// in different files: parts of one tensor, so the same dtype and global
// shape, and row ranges that do not overlap.
func checkShards(ts []TensorEntry, idx []int) error {
	first := ts[idx[0]]
	if len(first.GlobalShape) == 0 {
		return corruptf("scalar tensor %q is in files %q and %q: a scalar has no rows to split", first.Name, first.File, ts[idx[1]].File)
	}
	parts := make([]TensorEntry, len(idx))
	for j, i := range idx {
		t := ts[i]
		if t.DType != first.DType || !slices.Equal(t.GlobalShape, first.GlobalShape) {
			return corruptf("tensor %q: %s %v in %q but %s %v in %q (shards of one tensor must agree)",
				t.Name, t.DType, t.GlobalShape, t.File, first.DType, first.GlobalShape, first.File)
		}
		parts[j] = t
	}
	slices.SortStableFunc(parts, func(a, b TensorEntry) int { return a.Rows[0] - b.Rows[0] })
	for j := 1; j < len(parts); j++ {
		a, b := parts[j-1], parts[j]
		if b.Rows[0] < a.Rows[1] {
			return corruptf("tensor %q: rows [%d, %d) in %q overlap rows [%d, %d) in %q",
				a.Name, b.Rows[0], b.Rows[1], b.File, a.Rows[0], a.Rows[1], a.File)
		}
	}
	return nil
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// ReadManifest reads and validates the manifest of one step directory. It
// checks the manifest's own consistency only; Load also checks the files.
func ReadManifest(stepDir string) (*Manifest, error) {
	m, err := readManifest(stepDir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stepDir, err)
	}
	return m, nil
}

// readManifest is ReadManifest with errors that name the manifest file but
// leave the step directory to the caller.
func readManifest(stepDir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(stepDir, ManifestName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no %s, so the checkpoint is incomplete (its save did not finish)", ManifestName)
		}
		return nil, err
	}
	return parseManifest(b, filepath.Base(stepDir))
}

// parseManifest decodes and validates manifest bytes; dirName, when it is a
// step directory name, must agree with the manifest's step.
func parseManifest(b []byte, dirName string) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName, corruptf("not a valid manifest: %v", err))
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestName, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: %w", ManifestName, corruptf("not a valid manifest: data after the JSON object"))
	}
	if step, ok := parseStepName(dirName); ok && step != m.Step {
		return nil, fmt.Errorf("%s: %w", ManifestName, corruptf("manifest is for step %d but the directory is for step %d", m.Step, step))
	}
	for _, raw := range []*json.RawMessage{&m.Spec, &m.Cursor, &m.RNG, &m.Extra} {
		if len(*raw) > 0 {
			var c bytes.Buffer
			if err := json.Compact(&c, *raw); err == nil {
				*raw = c.Bytes()
			}
		}
	}
	return &m, nil
}

func (m *Manifest) validate() error {
	if m.Format != FormatName {
		return corruptf("format is %q, want %q", m.Format, FormatName)
	}
	if m.Version < 1 || m.Version > FormatVersion {
		return corruptf("format version %d is not supported (this build reads 1 to %d)", m.Version, FormatVersion)
	}
	if m.Step < 0 {
		return corruptf("step %d is negative", m.Step)
	}
	files := make(map[string]bool, len(m.Files))
	for i, f := range m.Files {
		if !validName(f.Name) {
			return corruptf("files[%d]: name %q is not a plain file name inside the step directory", i, f.Name)
		}
		if files[f.Name] {
			return corruptf("files[%d]: %q listed twice", i, f.Name)
		}
		if f.Size < 0 {
			return corruptf("file %q: size %d is negative", f.Name, f.Size)
		}
		files[f.Name] = true
	}
	type fileTensor struct{ file, name string }
	inFile := make(map[fileTensor]bool, len(m.Tensors))
	shards := make(map[string][]int, len(m.Tensors)) // name -> indices into m.Tensors
	for i, t := range m.Tensors {
		k := fileTensor{t.File, t.Name}
		if inFile[k] || (m.Version < 2 && len(shards[t.Name]) > 0) {
			return corruptf("tensor %q listed twice", t.Name)
		}
		inFile[k] = true
		shards[t.Name] = append(shards[t.Name], i)
		if !files[t.File] {
			return corruptf("tensor %q: file %q is not in the manifest's file list", t.Name, t.File)
		}
		if _, err := safetensors.NumBytes(t.DType, t.Shape); err != nil {
			return corruptf("tensor %q: %v", t.Name, err)
		}
		if err := checkRows(t.Shape, t.GlobalShape, t.Rows[0], t.Rows[1]); err != nil {
			return corruptf("tensor %q: %v", t.Name, err)
		}
	}
	for _, t := range m.Tensors {
		if idx := shards[t.Name]; len(idx) > 1 {
			if err := checkShards(m.Tensors, idx); err != nil {
				return err
			}
			delete(shards, t.Name) // checked; in m.Tensors order, so errors are deterministic
		}
	}
	return nil
}
