package hf

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ternml/tern/pkg/atomicfile"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/safetensors"
	"github.com/ternml/tern/pkg/snapshot"
)

// DefaultMaxShardBytes is the size above which Write splits the weights into
// several files with an index, as transformers' save_pretrained does (its
// default max_shard_size is 5 GB; 2 GiB keeps each file well under the
// limits of tools that still use 32-bit offsets).
const DefaultMaxShardBytes = 2 << 30

// IsParam reports whether a checkpoint tensor is a model parameter (and not
// optimizer state, which lives under optim., stage.<pp>. or replica.<r>.).
func IsParam(name string) bool {
	return name == HeadName || strings.HasPrefix(name, "model.")
}

// Gather assembles the full, unpadded parameters of c's model from a
// checkpoint's tensors: each parameter's row shards (one per pipeline stage
// for the vocabulary tensors, possibly padded past c.Vocab) are joined in
// row order, rows at or past c.Vocab are dropped, and every row must be
// present exactly once. The result is float32, in Shapes order. Tensors that
// are not parameters are ignored.
func Gather(ts []snapshot.Tensor, c model.Config) ([]safetensors.Tensor, error) {
	byName := make(map[string][]snapshot.Tensor)
	for _, t := range ts {
		if IsParam(t.Name) {
			byName[t.Name] = append(byName[t.Name], t)
		}
	}
	want := Shapes(c)
	out := make([]safetensors.Tensor, 0, len(want))
	for _, w := range want {
		shards := byName[w.Name]
		delete(byName, w.Name)
		if len(shards) == 0 {
			return nil, fmt.Errorf("checkpoint has no tensor %s (the model %s wants it with shape %v)", w.Name, describe(c), w.Shape)
		}
		t, err := join(w, shards)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if len(byName) > 0 {
		extra := make([]string, 0, len(byName))
		for n := range byName {
			extra = append(extra, n)
		}
		slices.Sort(extra)
		return nil, fmt.Errorf("checkpoint has parameters the model %s does not: %s", describe(c), strings.Join(extra, ", "))
	}
	return out, nil
}

func describe(c model.Config) string {
	return fmt.Sprintf("(vocab %d, dim %d, layers %d, heads %d/%d, ffn %d)", c.Vocab, c.Dim, c.Layers, c.Heads, c.KVHeads, c.FFN)
}

// join writes the shards of one tensor into its full float32 form.
func join(w TensorShape, shards []snapshot.Tensor) (safetensors.Tensor, error) {
	rows := w.Shape[0]
	rowElems := numel(w.Shape[1:])
	for _, s := range shards {
		g := s.GlobalShape
		okShape := len(g) == len(w.Shape) && slices.Equal(g[1:], w.Shape[1:]) &&
			(g[0] == rows || isVocab(w.Name) && g[0] > rows)
		if !okShape {
			return safetensors.Tensor{}, fmt.Errorf("checkpoint tensor %s has global shape %v, the model wants %v", w.Name, g, w.Shape)
		}
	}
	// The common case: one shard holding exactly the tensor, already F32.
	if len(shards) == 1 {
		s := shards[0]
		if s.DType == safetensors.DTypeF32 && s.RowLo == 0 && s.RowHi == rows && slices.Equal(s.Shape, w.Shape) {
			return safetensors.Tensor{Name: w.Name, DType: safetensors.DTypeF32, Shape: slices.Clone(w.Shape), Data: s.Data}, nil
		}
	}
	v := make([]float32, rows*rowElems)
	if err := snapshot.AssembleRows(w.Name, shards, w.Shape[1:], 0, rows, rows, v); err != nil {
		return safetensors.Tensor{}, fmt.Errorf("checkpoint %w", err)
	}
	return safetensors.F32(w.Name, slices.Clone(w.Shape), v), nil
}

// WriteOptions are the choices of Write.
type WriteOptions struct {
	// MaxShardBytes splits the weights into several files once their total
	// exceeds it; <= 0 means DefaultMaxShardBytes.
	MaxShardBytes int64
	// Source names where the weights came from (a checkpoint path, a job),
	// for the README.
	Source string
	// Step is the training step of the weights, for the README.
	Step int64
}

// Written reports what Write produced.
type Written struct {
	Files      []string // file names inside the directory
	WeightFile []string // the safetensors files
	Bytes      int64    // bytes of weights
}

// Write writes a Hugging Face LLaMA directory: the tensors (from Gather)
// as float32 safetensors, sharded above opts.MaxShardBytes, config.json,
// generation_config.json, tokenizer files where tern can produce them and a
// README.md. dir is created; weight files of an earlier export in it are
// removed first, so a smaller export does not leave stale shards behind.
func Write(dir string, c model.Config, ts []safetensors.Tensor, opts WriteOptions) (*Written, error) {
	if opts.MaxShardBytes <= 0 {
		opts.MaxShardBytes = DefaultMaxShardBytes
	}
	if err := checkTensors(c, ts); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if err := removeOldWeights(dir); err != nil {
		return nil, err
	}
	tok, err := tokenizerFiles(c)
	if err != nil {
		return nil, err
	}
	w := &Written{}
	shards := splitShards(ts, opts.MaxShardBytes)
	weightMap := map[string]string{}
	for i, sh := range shards {
		name := WeightsFile
		if len(shards) > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		}
		if err := safetensors.WriteFile(filepath.Join(dir, name), sh, map[string]string{"format": "pt"}); err != nil {
			return nil, fmt.Errorf("export: %w", err)
		}
		for _, t := range sh {
			weightMap[t.Name] = name
			w.Bytes += int64(len(t.Data))
		}
		w.WeightFile = append(w.WeightFile, name)
	}
	w.Files = append(w.Files, w.WeightFile...)
	jsonFiles := []struct {
		name string
		v    any
	}{
		{ConfigFile, FromModel(c, tok.bos, tok.eos)},
		{GenConfigFile, genConfig(tok.bos, tok.eos)},
	}
	if len(shards) > 1 {
		jsonFiles = append(jsonFiles, struct {
			name string
			v    any
		}{IndexFile, map[string]any{"metadata": map[string]any{"total_size": w.Bytes}, "weight_map": weightMap}})
	}
	for _, f := range jsonFiles {
		b, err := json.MarshalIndent(f.v, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("export: encode %s: %w", f.name, err)
		}
		if err := writeFile(filepath.Join(dir, f.name), append(b, '\n')); err != nil {
			return nil, err
		}
		w.Files = append(w.Files, f.name)
	}
	for _, f := range tok.files {
		if err := writeFile(filepath.Join(dir, f.name), f.data); err != nil {
			return nil, err
		}
		w.Files = append(w.Files, f.name)
	}
	readme := readmeText(c, tok, opts, len(shards))
	if err := writeFile(filepath.Join(dir, "README.md"), []byte(readme)); err != nil {
		return nil, err
	}
	w.Files = append(w.Files, "README.md")
	return w, nil
}

// checkTensors makes sure ts is exactly the model's parameter set in float32
// with the right shapes, so a directory is never written half-valid.
func checkTensors(c model.Config, ts []safetensors.Tensor) error {
	want := Shapes(c)
	if len(ts) != len(want) {
		return fmt.Errorf("export: %d tensors given, the model %s has %d", len(ts), describe(c), len(want))
	}
	for i, w := range want {
		t := ts[i]
		if t.Name != w.Name || t.DType != safetensors.DTypeF32 || !slices.Equal(t.Shape, w.Shape) {
			return fmt.Errorf("export: tensor %d is %s %s%v, want %s F32%v", i, t.Name, t.DType, t.Shape, w.Name, w.Shape)
		}
		if err := t.Validate(); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	return nil
}

// splitShards cuts ts, in order, into groups of at most max bytes (a single
// tensor larger than max gets a group of its own).
func splitShards(ts []safetensors.Tensor, max int64) [][]safetensors.Tensor {
	var out [][]safetensors.Tensor
	var cur []safetensors.Tensor
	var size int64
	for _, t := range ts {
		n := int64(len(t.Data))
		if len(cur) > 0 && size+n > max {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, t)
		size += n
	}
	if len(cur) > 0 || len(out) == 0 {
		out = append(out, cur)
	}
	return out
}

func removeOldWeights(dir string) error {
	old, err := filepath.Glob(filepath.Join(dir, "model*.safetensors"))
	if err != nil {
		return err
	}
	old = append(old, filepath.Join(dir, IndexFile))
	for _, p := range old {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("export: remove earlier weights: %w", err)
		}
	}
	return nil
}

func writeFile(path string, b []byte) error {
	if err := atomicfile.Write(path, 0o644, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

func genConfig(bos, eos int) map[string]any {
	g := map[string]any{"_from_model_config": true}
	if bos >= 0 {
		g["bos_token_id"] = bos
	}
	if eos >= 0 {
		g["eos_token_id"] = eos
	}
	return g
}
