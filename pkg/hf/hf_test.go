package hf_test

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/hf"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/parallel"
	"github.com/ternml/tern/pkg/safetensors"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
)

// jobDoc is a job whose model has grouped-query attention and, over 3
// pipeline stages, a vocabulary (256) padded to 258.
const jobDoc = `apiVersion: tern/v1
kind: TrainingJob
metadata: {name: interop}
spec:
  seed: 5
  model: {vocab: 256, dim: 32, layers: 3, heads: 4, kvHeads: 2, ffn: 48, seqLen: 16, tokenizer: byte, ropeTheta: 50000, normEps: 1e-6}
  data: {kind: text, text: "hello"}
`

func testJob(t *testing.T) (*spec.TrainingJob, model.Config) {
	t.Helper()
	job, err := spec.Parse([]byte(jobDoc), nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := job.Spec.Model.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	return job, c
}

func TestShapesMatchModel(t *testing.T) {
	_, c := testJob(t)
	m, err := model.New(c, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	shapes := hf.Shapes(c)
	ps := m.Params()
	if len(ps) != len(shapes) {
		t.Fatalf("Shapes lists %d tensors, the model has %d parameters", len(shapes), len(ps))
	}
	for i, p := range ps {
		if p.Name != shapes[i].Name || !slices.Equal(p.GlobalShape, shapes[i].Shape) {
			t.Errorf("tensor %d: Shapes says %s%v, the model has %s%v", i, shapes[i].Name, shapes[i].Shape, p.Name, p.GlobalShape)
		}
	}
}

// writePipelineCheckpoint writes the checkpoint a 3-stage vocabulary-parallel
// job would: one file per stage with its blocks and its rows of the padded
// embedding and head, plus optimizer state under stage.<pp>.
func writePipelineCheckpoint(t *testing.T, job *spec.TrainingJob, c model.Config, root string) {
	t.Helper()
	const pp = 3
	layout, err := parallel.Partition(c, pp, parallel.VocabParallel)
	if err != nil {
		t.Fatal(err)
	}
	if layout.PaddedVocab == c.Vocab {
		t.Fatalf("test needs a padded vocabulary; %d stages keep %d", pp, c.Vocab)
	}
	padded := c
	padded.Vocab = layout.PaddedVocab
	var shards []snapshot.Shard
	for s, sp := range layout.Stages {
		st, err := model.NewStage(padded, sp, job.Spec.Seed)
		if err != nil {
			t.Fatal(err)
		}
		var ts []snapshot.Tensor
		for _, p := range st.Params() {
			ts = append(ts, snapshot.Tensor{Tensor: safetensors.F32(p.Name, p.Shape, p.W), GlobalShape: p.GlobalShape, RowLo: p.RowOffset, RowHi: p.RowOffset + p.Shape[0]})
			ts = append(ts, snapshot.Whole(safetensors.F32("stage."+string(rune('0'+s))+".optim."+p.Name+".exp_avg", p.Shape, p.W)))
		}
		sh, err := snapshot.WriteShard(root, 7, s, ts)
		if err != nil {
			t.Fatal(err)
		}
		shards = append(shards, sh)
	}
	if _, err := snapshot.Commit(root, &snapshot.State{Step: 7, Job: job.Metadata.Name, Spec: job.CanonicalJSON()}, shards, 0); err != nil {
		t.Fatal(err)
	}
}

func sameBits(t *testing.T, what string, a, b []float32) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d vs %d values", what, len(a), len(b))
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("%s: element %d is %g, want %g (bitwise)", what, i, a[i], b[i])
		}
	}
}

// Export of a pipeline checkpoint, then import, gives bitwise the weights
// and the logits of the unsharded model with the same seed (initial values
// are keyed by global row, so the stages hold exactly its rows).
func TestExportImportRoundTrip(t *testing.T) {
	job, c := testJob(t)
	root := t.TempDir()
	writePipelineCheckpoint(t, job, c, root)
	want, err := model.New(c, job.Spec.Seed, false)
	if err != nil {
		t.Fatal(err)
	}

	for _, maxShard := range []int64{0, 20_000} {
		ck, err := hf.ReadCheckpoint(root)
		if err != nil {
			t.Fatal(err)
		}
		if ck.Step != 7 || ck.Config != c {
			t.Fatalf("checkpoint step %d config %+v, want 7 and %+v", ck.Step, ck.Config, c)
		}
		dir := filepath.Join(t.TempDir(), "hf")
		w, err := hf.Write(dir, ck.Config, ck.Tensors, hf.WriteOptions{MaxShardBytes: maxShard, Source: root, Step: ck.Step})
		if err != nil {
			t.Fatal(err)
		}
		if sharded := len(w.WeightFile) > 1; sharded != (maxShard > 0) {
			t.Fatalf("max shard %d wrote %v", maxShard, w.WeightFile)
		}
		if _, err := os.Stat(filepath.Join(dir, hf.IndexFile)); (err == nil) != (maxShard > 0) {
			t.Fatalf("max shard %d: index present = %v", maxShard, err == nil)
		}
		got, err := hf.OpenModel(dir, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		if got.Config() != c {
			t.Fatalf("imported config %+v, want %+v", got.Config(), c)
		}
		for i, p := range got.Params() {
			sameBits(t, p.Name, p.W, want.Params()[i].W)
		}
		toks := make([]int32, 2*c.SeqLen)
		for i := range toks {
			toks[i] = int32((i*53 + 3) % c.Vocab)
		}
		lw, err := want.Logits(toks, 2, c.SeqLen)
		if err != nil {
			t.Fatal(err)
		}
		lg, err := got.Logits(toks, 2, c.SeqLen)
		if err != nil {
			t.Fatal(err)
		}
		sameBits(t, "logits", lg, lw)
	}
}

// A job started from a directory with pipeline stages: each stage takes its
// rows, and padded vocabulary rows keep their own values.
func TestImportIntoPaddedStages(t *testing.T) {
	job, c := testJob(t)
	src, err := model.New(c, 99, false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := hf.Write(dir, c, tensorsOf(src), hf.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	layout, err := parallel.Partition(c, 3, parallel.VocabParallel)
	if err != nil {
		t.Fatal(err)
	}
	padded := c
	padded.Vocab = layout.PaddedVocab
	byName := map[string]*model.Param{}
	for _, p := range src.Params() {
		byName[p.Name] = p
	}
	for _, sp := range layout.Stages {
		st, err := model.NewStage(padded, sp, job.Spec.Seed)
		if err != nil {
			t.Fatal(err)
		}
		before := map[string][]float32{}
		for _, p := range st.Params() {
			before[p.Name] = slices.Clone(p.W)
		}
		if err := hf.Import(dir, c, st.Params()); err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Params() {
			cols := len(p.W) / p.Shape[0]
			real := min(p.RowOffset+p.Shape[0], c.Vocab) - p.RowOffset
			if p.GlobalShape[0] != padded.Vocab {
				real = p.Shape[0]
			}
			real = max(real, 0)
			full := byName[p.Name].W
			sameBits(t, p.Name, p.W[:real*cols], full[p.RowOffset*cols:(p.RowOffset+real)*cols])
			sameBits(t, p.Name+" padding", p.W[real*cols:], before[p.Name][real*cols:])
		}
	}
}

func tensorsOf(m *model.Model) []safetensors.Tensor {
	var ts []safetensors.Tensor
	for _, p := range m.Params() {
		ts = append(ts, safetensors.F32(p.Name, p.Shape, p.W))
	}
	return ts
}

func TestGatherRejectsIncompleteCheckpoints(t *testing.T) {
	_, c := testJob(t)
	m, err := model.New(c, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	whole := func() []snapshot.Tensor {
		var ts []snapshot.Tensor
		for _, t := range tensorsOf(m) {
			ts = append(ts, snapshot.Whole(t))
		}
		return ts
	}
	half := func(name string, lo, hi int) snapshot.Tensor {
		p := m.Params()[slices.IndexFunc(m.Params(), func(p *model.Param) bool { return p.Name == name })]
		cols := p.Shape[1]
		return snapshot.Tensor{Tensor: safetensors.F32(name, []int{hi - lo, cols}, p.W[lo*cols:hi*cols]), GlobalShape: p.GlobalShape, RowLo: lo, RowHi: hi}
	}
	replace := func(ts []snapshot.Tensor, name string, with ...snapshot.Tensor) []snapshot.Tensor {
		i := slices.IndexFunc(ts, func(t snapshot.Tensor) bool { return t.Name == name })
		return slices.Concat(ts[:i], with, ts[i+1:])
	}
	cases := []struct {
		name string
		ts   []snapshot.Tensor
		want string
	}{
		{"missing tensor", whole()[1:], "no tensor model.embed_tokens.weight"},
		{"missing rows", replace(whole(), hf.HeadName, half(hf.HeadName, 0, 100)), "row 100 of 256 is in no shard"},
		{"overlapping shards", replace(whole(), hf.HeadName, half(hf.HeadName, 0, 200), half(hf.HeadName, 100, 256)), "row 100 is held by two shards"},
		{"extra parameter", append(whole(), snapshot.Whole(safetensors.F32("model.layers.9.mlp.up_proj.weight", []int{1}, []float32{0}))), "model.layers.9.mlp.up_proj.weight"},
		{"wrong shape", replace(whole(), "model.norm.weight", snapshot.Whole(safetensors.F32("model.norm.weight", []int{31}, make([]float32, 31)))), "global shape [31], the model wants [32]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := hf.Gather(tc.ts, c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Gather: %v; want an error containing %q", err, tc.want)
			}
		})
	}
	if ts, err := hf.Gather(whole(), c); err != nil || len(ts) != len(m.Params()) {
		t.Fatalf("complete checkpoint: %d tensors, %v", len(ts), err)
	}
}

// writeDir exports a model of c and returns the directory.
func writeDir(t *testing.T, c model.Config) string {
	t.Helper()
	m, err := model.New(c, 3, false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := hf.Write(dir, c, tensorsOf(m), hf.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rewrite replaces the weights file with the given tensors.
func rewrite(t *testing.T, dir string, ts []safetensors.Tensor) {
	t.Helper()
	if err := safetensors.WriteFile(filepath.Join(dir, hf.WeightsFile), ts, nil); err != nil {
		t.Fatal(err)
	}
}

func readTensors(t *testing.T, dir string) []safetensors.Tensor {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, hf.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts, err := f.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// Every kind of damaged or mismatched directory is refused with an error
// that names what is wrong.
func TestImportRejectsBadDirectories(t *testing.T) {
	_, c := testJob(t)
	edit := func(name string, f func(ts []safetensors.Tensor, i int) []safetensors.Tensor) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			ts := readTensors(t, dir)
			i := slices.IndexFunc(ts, func(x safetensors.Tensor) bool { return x.Name == name })
			rewrite(t, dir, f(ts, i))
		}
	}
	rawFile := func(b []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, hf.WeightsFile), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	header := func(h string, data int) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
		return append(append(b, h...), make([]byte, data)...)
	}
	setConfig := func(fromTo ...string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, hf.ConfigFile)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			s := string(b)
			for i := 0; i < len(fromTo); i += 2 {
				if !strings.Contains(s, fromTo[i]) {
					t.Fatalf("config.json has no %q", fromTo[i])
				}
				s = strings.Replace(s, fromTo[i], fromTo[i+1], 1)
			}
			if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	cases := []struct {
		name     string
		breakDir func(t *testing.T, dir string)
		want     []string
	}{
		{"truncated file", func(t *testing.T, dir string) {
			p := filepath.Join(dir, hf.WeightsFile)
			st, _ := os.Stat(p)
			if err := os.Truncate(p, st.Size()-100); err != nil {
				t.Fatal(err)
			}
		}, []string{"model.safetensors", "invalid"}},
		{"bad header JSON", rawFile(header(`{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]`, 4)), []string{"model.safetensors", "JSON"}},
		{"overlapping offsets", rawFile(header(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12)), []string{"model.safetensors", "overlap"}},
		{"wrong dtype", edit("model.layers.1.mlp.up_proj.weight", func(ts []safetensors.Tensor, i int) []safetensors.Tensor {
			ts[i].DType = safetensors.DTypeI32
			return ts
		}), []string{"model.layers.1.mlp.up_proj.weight", "I32", "F32, BF16 or F16"}},
		{"shape mismatch", edit("model.layers.2.self_attn.k_proj.weight", func(ts []safetensors.Tensor, i int) []safetensors.Tensor {
			ts[i].Shape = []int{8, 64}
			return ts
		}), []string{"model.layers.2.self_attn.k_proj.weight", "[8 64]", "[16 32]"}},
		{"missing tensor", edit("model.layers.0.self_attn.v_proj.weight", func(ts []safetensors.Tensor, i int) []safetensors.Tensor {
			return slices.Delete(ts, i, i+1)
		}), []string{"missing tensor model.layers.0.self_attn.v_proj.weight"}},
		{"unknown tensor", edit("model.norm.weight", func(ts []safetensors.Tensor, i int) []safetensors.Tensor {
			return append(ts, safetensors.F32("model.layers.0.self_attn.q_proj.bias", []int{32}, make([]float32, 32)))
		}), []string{"model.layers.0.self_attn.q_proj.bias", "does not have"}},
		{"other head split", setConfig(`"num_attention_heads": 4`, `"num_attention_heads": 8`, `"head_dim": 8`, `"head_dim": 4`), []string{"num_attention_heads is 8", "model.heads is 4"}},
		{"other rope theta", setConfig(`"rope_theta": 50000`, `"rope_theta": 10000`), []string{"rope_theta is 10000", "ropeTheta is 50000"}},
		{"rope scaling", setConfig(`"rope_scaling": null`, `"rope_scaling": {"rope_type": "linear", "factor": 2}`), []string{"rope_scaling"}},
		{"attention bias", setConfig(`"attention_bias": false`, `"attention_bias": true`), []string{"attention_bias"}},
		{"bad config JSON", setConfig(`{`, `[`), []string{"config.json"}},
		{"no weights", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, hf.WeightsFile)) }, []string{"neither model.safetensors nor model.safetensors.index.json"}},
		{"index names a file without the tensor", func(t *testing.T, dir string) {
			idx := `{"weight_map": {"model.norm.weight": "model.safetensors", "lm_head.weight": "other.safetensors"}}`
			if err := os.WriteFile(filepath.Join(dir, hf.IndexFile), []byte(idx), 0o644); err != nil {
				t.Fatal(err)
			}
			rewrite(t, dir, nil)
			if err := safetensors.WriteFile(filepath.Join(dir, "other.safetensors"), []safetensors.Tensor{safetensors.F32("x", []int{1}, []float32{1})}, nil); err != nil {
				t.Fatal(err)
			}
		}, []string{"lists tensor"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeDir(t, c)
			tc.breakDir(t, dir)
			m, err := model.New(c, 1, false)
			if err != nil {
				t.Fatal(err)
			}
			err = hf.Import(dir, c, m.Params())
			if err == nil {
				t.Fatal("import succeeded")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// bf16 and fp16 weights are widened exactly; a tied directory fills the LM
// head from the embedding.
func TestImportHalfPrecisionAndTied(t *testing.T) {
	_, c := testJob(t)
	src, err := model.New(c, 4, false)
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for i, p := range src.Params() {
		if p.Name == hf.HeadName {
			continue // tied: no lm_head in the file
		}
		if i%2 == 0 {
			ts = append(ts, safetensors.BF16(p.Name, p.Shape, p.W))
		} else {
			ts = append(ts, f16(p.Name, p.Shape, p.W))
		}
	}
	dir := t.TempDir()
	if _, err := hf.Write(dir, c, tensorsOf(src), hf.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	rewrite(t, dir, ts)
	cfgPath := filepath.Join(dir, hf.ConfigFile)
	b, _ := os.ReadFile(cfgPath)
	os.WriteFile(cfgPath, []byte(strings.Replace(string(b), `"tie_word_embeddings": false`, `"tie_word_embeddings": true`, 1)), 0o644)

	dst, err := model.New(c, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := hf.Import(dir, c, dst.Params()); err != nil {
		t.Fatal(err)
	}
	for _, tt := range ts {
		want, err := tt.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range dst.Params() {
			if p.Name == tt.Name || p.Name == hf.HeadName && tt.Name == hf.EmbedName {
				sameBits(t, p.Name, p.W, want)
			}
		}
	}
}

// f16 rounds to IEEE binary16 by way of float64 (exact for the small
// normal values of initial weights, which is all this test needs).
func f16(name string, shape []int, v []float32) safetensors.Tensor {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], toF16(x))
	}
	return safetensors.Tensor{Name: name, DType: safetensors.DTypeF16, Shape: slices.Clone(shape), Data: b}
}

func toF16(x float32) uint16 {
	bits := math.Float32bits(x)
	sign := uint16(bits>>16) & 0x8000
	a := math.Abs(float64(x))
	if a < math.Ldexp(1, -14) { // subnormal or zero
		return sign | uint16(math.RoundToEven(a/math.Ldexp(1, -24)))
	}
	exp := math.Floor(math.Log2(a))
	man := math.RoundToEven((a/math.Exp2(exp) - 1) * 1024)
	if man == 1024 {
		man, exp = 0, exp+1
	}
	return sign | uint16(exp+15)<<10 | uint16(man)
}

// Configs written by other transformers versions: rope_theta inside
// rope_parameters (transformers 5), a rope_scaling naming the default RoPE,
// eos_token_id as a list (LLaMA 3), missing optional keys.
func TestReadConfigVariants(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		theta      float64
		eps        float64
		kv         int
		err        string
	}{
		{"transformers 5", `{"model_type":"llama","hidden_size":32,"intermediate_size":48,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":10,"rms_norm_eps":1e-6,"rope_parameters":{"rope_theta":500000.0,"rope_type":"default"},"eos_token_id":[1,2],"dtype":"bfloat16"}`, 500000, 1e-6, 2, ""},
		{"default rope_scaling", `{"hidden_size":32,"intermediate_size":48,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,"rope_scaling":{"type":"default"},"rope_theta":20000}`, 20000, 1e-6, 4, ""},
		{"llama3 rope", `{"hidden_size":32,"intermediate_size":48,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,"rope_scaling":{"rope_type":"llama3","factor":8.0}}`, 0, 0, 0, "rope_scaling"},
		{"yarn in rope_parameters", `{"hidden_size":32,"intermediate_size":48,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,"rope_parameters":{"rope_type":"yarn","rope_theta":10000.0}}`, 0, 0, 0, "rope_scaling"},
		{"other model", `{"model_type":"mistral","hidden_size":32,"intermediate_size":48,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10}`, 0, 0, 0, `model_type is "mistral"`},
		{"untyped rope_scaling", `{"hidden_size":32,"intermediate_size":48,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,"rope_scaling":{"factor":2.0}}`, 0, 0, 0, "rope_scaling"},
		{"gelu", `{"hidden_size":32,"intermediate_size":48,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,"hidden_act":"gelu"}`, 0, 0, 0, "hidden_act"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, hf.ConfigFile), []byte(tc.json), 0o644)
			cfg, err := hf.ReadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			c, err := cfg.ModelConfig(16, "")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ModelConfig: %v, want an error mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.RopeTheta != tc.theta || c.NormEps != tc.eps || c.KVHeads != tc.kv || c.SeqLen != 16 {
				t.Fatalf("config %+v, want theta %g eps %g kv %d", c, tc.theta, tc.eps, tc.kv)
			}
		})
	}
}
