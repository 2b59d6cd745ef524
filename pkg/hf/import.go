package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/safetensors"
)

// Dir is an opened Hugging Face LLaMA directory: its config and validated
// safetensors headers. Tensor bytes are read on demand. Close it when done.
type Dir struct {
	Path   string
	Config Config
	files  map[string]*safetensors.File // by file name
	where  map[string]string            // tensor name -> file name
}

// Open reads DIR/config.json and the headers of its weights
// (model.safetensors, or the files model.safetensors.index.json lists),
// rejecting malformed files before any tensor is read.
func Open(dir string) (*Dir, error) {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	d := &Dir{Path: dir, Config: cfg, files: map[string]*safetensors.File{}, where: map[string]string{}}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	idx, err := os.ReadFile(filepath.Join(dir, IndexFile))
	switch {
	case err == nil:
		if err := d.openIndexed(idx); err != nil {
			return nil, err
		}
	case errors.Is(err, os.ErrNotExist):
		if err := d.openFile(WeightsFile, nil); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%s has neither %s nor %s", dir, WeightsFile, IndexFile)
			}
			return nil, err
		}
	default:
		return nil, err
	}
	ok = true
	return d, nil
}

func (d *Dir) openIndexed(idx []byte) error {
	var ix struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(idx, &ix); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(d.Path, IndexFile), err)
	}
	if len(ix.WeightMap) == 0 {
		return fmt.Errorf("%s: weight_map is empty", filepath.Join(d.Path, IndexFile))
	}
	byFile := map[string][]string{}
	for name, file := range ix.WeightMap {
		if file == "" || filepath.Base(file) != file {
			return fmt.Errorf("%s: tensor %s maps to %q, want a file name in the directory", IndexFile, name, file)
		}
		byFile[file] = append(byFile[file], name)
	}
	files := make([]string, 0, len(byFile))
	for f := range byFile {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		if err := d.openFile(f, byFile[f]); err != nil {
			return err
		}
	}
	return nil
}

// openFile opens one weights file; listed, when set, is what the index says
// the file holds, and every name in it must be there.
func (d *Dir) openFile(name string, listed []string) error {
	f, err := safetensors.Open(filepath.Join(d.Path, name))
	if err != nil {
		return err
	}
	d.files[name] = f
	for _, n := range listed {
		if _, ok := f.Info(n); !ok {
			return fmt.Errorf("%s lists tensor %s in %s, but that file does not hold it", IndexFile, n, name)
		}
	}
	for _, n := range f.Names() {
		if other, dup := d.where[n]; dup {
			return fmt.Errorf("tensor %s is in both %s and %s", n, other, name)
		}
		if listed != nil && !slices.Contains(listed, n) {
			continue // held but not indexed: transformers ignores it too
		}
		d.where[n] = name
	}
	return nil
}

// Close closes the weight files.
func (d *Dir) Close() error {
	var first error
	for _, f := range d.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	d.files = nil
	return first
}

// Names lists the tensors of the directory, sorted.
func (d *Dir) Names() []string {
	out := make([]string, 0, len(d.where))
	for n := range d.where {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Shape returns a tensor's shape and dtype as its file declares them.
func (d *Dir) Shape(name string) ([]int, string, bool) {
	file, ok := d.where[name]
	if !ok {
		return nil, "", false
	}
	in, _ := d.files[file].Info(name)
	return in.Shape, in.DType, true
}

// Float32s reads a tensor and widens it to float32 (F32 is copied, BF16 and
// F16 widened exactly); other dtypes are an error naming the tensor.
func (d *Dir) Float32s(name string) ([]float32, error) {
	file, ok := d.where[name]
	if !ok {
		return nil, fmt.Errorf("%s has no tensor %s", d.Path, name)
	}
	t, err := d.files[file].Read(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	switch t.DType {
	case safetensors.DTypeF32, safetensors.DTypeBF16, safetensors.DTypeF16:
	default:
		return nil, fmt.Errorf("%s: tensor %s has dtype %s; tern imports F32, BF16 or F16", file, name, t.DType)
	}
	return t.Float32s()
}

// ignorable are tensors some exporters add that carry no weights: older
// transformers versions saved RoPE's inverse frequencies.
func ignorable(name string) bool { return strings.HasSuffix(name, "rotary_emb.inv_freq") }

// source returns the directory tensor that fills parameter name: lm_head
// falls back to the embedding when the directory ties them.
func (d *Dir) source(name string) string {
	if name == HeadName && d.Config.TieWordEmbeddings {
		if _, ok := d.where[HeadName]; !ok {
			return EmbedName
		}
	}
	return name
}

// Check verifies, without reading tensor data, that the directory describes
// exactly c's model: config.json's architecture fields, every tensor
// present with its shape and a float dtype, and no tensor the model does not
// have. Errors name the tensor and both shapes.
func (d *Dir) Check(c model.Config) error {
	if err := d.Config.CheckMatches(c); err != nil {
		return fmt.Errorf("import %s: %w", d.Path, err)
	}
	want := Shapes(c)
	used := map[string]bool{}
	var missing []string
	for _, w := range want {
		src := d.source(w.Name)
		used[src] = true
		shape, dtype, ok := d.Shape(src)
		if !ok {
			missing = append(missing, w.Name)
			continue
		}
		if !slices.Equal(shape, w.Shape) {
			return fmt.Errorf("import %s: tensor %s has shape %v, the job's model wants %v", d.Path, src, shape, w.Shape)
		}
		switch dtype {
		case safetensors.DTypeF32, safetensors.DTypeBF16, safetensors.DTypeF16:
		default:
			return fmt.Errorf("import %s: tensor %s has dtype %s; tern imports F32, BF16 or F16", d.Path, src, dtype)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("import %s: missing tensor %s (the job's model needs %d tensors; this directory has %d)",
			d.Path, strings.Join(missing, ", "), len(want), len(d.where))
	}
	var extra []string
	for _, n := range d.Names() {
		if !used[n] && !ignorable(n) {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		return fmt.Errorf("import %s: tensors the job's model does not have: %s (is it a different architecture?)", d.Path, strings.Join(extra, ", "))
	}
	return nil
}

// Load checks the directory against c (Check) and copies its weights into
// params, the parameters of a whole model or of one pipeline stage built for
// c or for c with a padded vocabulary: each parameter receives its rows of
// the directory's tensor, and vocabulary rows past c.Vocab (padding) keep
// their values.
func (d *Dir) Load(c model.Config, params []*model.Param) error {
	if err := d.Check(c); err != nil {
		return err
	}
	want := map[string][]int{}
	for _, w := range Shapes(c) {
		want[w.Name] = w.Shape
	}
	for _, p := range params {
		shape, ok := want[p.Name]
		if !ok {
			return fmt.Errorf("import %s: parameter %s is not part of a LLaMA model", d.Path, p.Name)
		}
		rowElems := numel(shape[1:])
		if len(p.GlobalShape) != len(shape) || !slices.Equal(p.GlobalShape[1:], shape[1:]) ||
			p.GlobalShape[0] < shape[0] || p.GlobalShape[0] != shape[0] && !isVocab(p.Name) {
			return fmt.Errorf("import %s: parameter %s has global shape %v, the directory's tensor %v", d.Path, p.Name, p.GlobalShape, shape)
		}
		src := d.source(p.Name)
		v, err := d.Float32s(src)
		if err != nil {
			return fmt.Errorf("import %s: %w", d.Path, err)
		}
		lo, hi := p.RowOffset, min(p.RowOffset+p.Shape[0], shape[0])
		if lo < hi {
			copy(p.W[:(hi-lo)*rowElems], v[lo*rowElems:hi*rowElems])
		}
	}
	return nil
}

// Import opens dir, loads it into params (see Dir.Load) and closes it.
func Import(dir string, c model.Config, params []*model.Param) error {
	d, err := Open(dir)
	if err != nil {
		return fmt.Errorf("import %s: %w", dir, err)
	}
	defer d.Close()
	return d.Load(c, params)
}
