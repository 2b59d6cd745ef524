package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ternml/tern/pkg/atomicfile"
)

// Shard is one rank's contribution to a multi-rank checkpoint: the file it
// wrote and the manifest entries of the tensors in it. WriteShard returns
// it; the committing rank collects every rank's (it encodes as JSON for the
// trip) and passes them to Commit.
type Shard struct {
	File    FileEntry     `json:"file"`
	Tensors []TensorEntry `json:"tensors"`
}

// RankFile is the name of the tensor file rank writes in a step directory.
func RankFile(rank int) string { return fmt.Sprintf("rank-%05d.safetensors", rank) }

// WriteShard writes rank's tensors as RankFile(rank) in the directory of
// step under dir, creating it when this rank is the first to arrive, and
// returns the entries the manifest needs. It writes no manifest: the step
// stays incomplete (ignored by Latest and Load) until one rank calls Commit
// with every rank's shard.
//
// Ranks write side by side, so unlike Save, WriteShard never clears the
// step directory; a file left by an earlier, interrupted attempt is replaced
// atomically, and Commit removes any other leftover. A tensor name may be
// written by several ranks, each with its own rows of the global tensor
// (Tensor.RowLo, RowHi); within one rank's file names are distinct.
// A step that is already complete is never written to (ErrStepExists).
func WriteShard(dir string, step int64, rank int, tensors []Tensor) (Shard, error) {
	if step < 0 {
		return Shard{}, fmt.Errorf("write checkpoint shard: step %d is negative", step)
	}
	if rank < 0 {
		return Shard{}, fmt.Errorf("write checkpoint shard of step %d: rank %d is negative", step, rank)
	}
	ts, err := normalizeTensors(tensors)
	if err != nil {
		return Shard{}, fmt.Errorf("write checkpoint shard of step %d rank %d: %w", step, rank, err)
	}
	stepDir := StepDir(dir, step)
	if err := joinStepDir(dir, stepDir); err != nil {
		return Shard{}, fmt.Errorf("write checkpoint shard %s rank %d: %w", stepDir, rank, err)
	}
	meta := map[string]string{"format": "pt", "tern.step": fmt.Sprint(step), "tern.rank": strconv.Itoa(rank)}
	sh, err := writeShard(stepDir, RankFile(rank), ts, meta)
	if err != nil {
		return Shard{}, fmt.Errorf("write checkpoint shard %s rank %d: %w", stepDir, rank, err)
	}
	return sh, nil
}

// joinStepDir makes sure the step directory exists without disturbing what
// other ranks have already written there.
func joinStepDir(root, stepDir string) error {
	if _, err := os.Stat(filepath.Join(stepDir, ManifestName)); err == nil {
		return ErrStepExists
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(stepDir, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil
		}
		return err
	}
	return atomicfile.SyncDir(root)
}

// Commit completes a multi-rank checkpoint of st.Step under dir: it checks
// that the shards form a valid manifest and that every file they name is in
// the step directory with the size its rank wrote, removes anything else
// there (leftovers of an interrupted attempt), and writes manifest.json
// last and atomically, exactly as Save does. It then prunes as Save does.
//
// st gives the manifest's header (step, job, spec, cursor, RNG, extra); its
// Tensors must be empty, since the tensors are the shards'. The files are
// listed in the order of shards. Every rank must have written into the same
// directory, so ranks on different machines need a shared file system.
func Commit(dir string, st *State, shards []Shard, keep int) (string, error) {
	if err := checkHeader(st); err != nil {
		return "", fmt.Errorf("commit checkpoint step %d: %w", st.Step, err)
	}
	if len(st.Tensors) > 0 {
		return "", fmt.Errorf("commit checkpoint step %d: State.Tensors holds %d tensors; Commit takes the tensors from the shards, so leave it empty", st.Step, len(st.Tensors))
	}
	if len(shards) == 0 {
		return "", fmt.Errorf("commit checkpoint step %d: no shards (at least one rank must have written a file)", st.Step)
	}
	stepDir := StepDir(dir, st.Step)
	if _, err := os.Stat(filepath.Join(stepDir, ManifestName)); err == nil {
		return "", fmt.Errorf("commit checkpoint %s: %w", stepDir, ErrStepExists)
	}
	m := newManifest(st)
	for i, sh := range shards {
		m.Files = append(m.Files, sh.File)
		for _, te := range sh.Tensors {
			if te.File != sh.File.Name {
				return "", fmt.Errorf("commit checkpoint %s: shard %d (file %q) lists tensor %q in file %q", stepDir, i, sh.File.Name, te.Name, te.File)
			}
			m.Tensors = append(m.Tensors, te)
		}
	}
	m.Version = requiredVersion(m.Tensors)
	if err := m.validate(); err != nil {
		return "", fmt.Errorf("commit checkpoint %s: the shards do not form a valid manifest: %w", stepDir, err)
	}
	if err := checkShardFiles(stepDir, m.Files); err != nil {
		return "", fmt.Errorf("commit checkpoint %s: %w", stepDir, err)
	}
	return commitManifest(dir, stepDir, &m, keep)
}

// requiredVersion is the oldest manifest version that can list ts.
func requiredVersion(ts []TensorEntry) int {
	seen := make(map[string]bool, len(ts))
	for _, t := range ts {
		if seen[t.Name] {
			return 2
		}
		seen[t.Name] = true
	}
	return 1
}

// checkShardFiles makes sure each listed file is in stepDir with the size
// its writer reported, and removes every other entry, so the committed
// directory holds exactly what its manifest lists.
func checkShardFiles(stepDir string, files []FileEntry) error {
	listed := make(map[string]bool, len(files))
	for _, fe := range files {
		fi, err := os.Stat(filepath.Join(stepDir, fe.Name))
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s is not in the step directory although its rank reported writing it (do all ranks write to the same, shared checkpoint directory?)", fe.Name)
		}
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() || fi.Size() != fe.Size {
			return fmt.Errorf("%s has %d bytes but its rank reported writing %d (was it overwritten?)", fe.Name, fi.Size(), fe.Size)
		}
		listed[fe.Name] = true
	}
	ents, err := os.ReadDir(stepDir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range ents {
		if listed[e.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(stepDir, e.Name())); err != nil {
			return fmt.Errorf("remove leftover %s: %w", e.Name(), err)
		}
		removed = true
	}
	if removed {
		return atomicfile.SyncDir(stepDir)
	}
	return nil
}
