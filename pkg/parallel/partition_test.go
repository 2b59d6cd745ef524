package parallel

import (
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

func testConfig(vocab, layers int) model.Config {
	return model.Config{Vocab: vocab, Dim: 64, Layers: layers, Heads: 4, KVHeads: 2, FFN: 176, SeqLen: 64,
		RopeTheta: model.DefaultRopeTheta, NormEps: model.DefaultNormEps}
}

func TestPartitionLayers(t *testing.T) {
	cases := []struct {
		layers, pp int
		want       [][2]int
	}{
		{8, 4, [][2]int{{0, 2}, {2, 4}, {4, 6}, {6, 8}}},
		{10, 4, [][2]int{{0, 2}, {2, 4}, {4, 7}, {7, 10}}}, // extras on the last stages
		{3, 3, [][2]int{{0, 1}, {1, 2}, {2, 3}}},
		{5, 1, [][2]int{{0, 5}}},
	}
	for _, c := range cases {
		for _, mode := range []VocabMode{VocabParallel, VocabNaive} {
			l, err := Partition(testConfig(100, c.layers), c.pp, mode)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range l.Stages {
				if s.FirstLayer != c.want[i][0] || s.EndLayer != c.want[i][1] {
					t.Errorf("%d layers, pp %d, %s: stage %d holds [%d,%d), want %v", c.layers, c.pp, mode, i, s.FirstLayer, s.EndLayer, c.want[i])
				}
				if s.FinalNorm != (i == c.pp-1) {
					t.Errorf("%d layers, pp %d: stage %d FinalNorm %v", c.layers, c.pp, i, s.FinalNorm)
				}
			}
		}
	}
}

func TestPartitionVocab(t *testing.T) {
	cfg := testConfig(10, 4)
	l, err := Partition(cfg, 4, VocabParallel)
	if err != nil {
		t.Fatal(err)
	}
	if l.Vocab != 10 || l.PaddedVocab != 12 {
		t.Fatalf("vocab %d padded %d, want 10 and 12", l.Vocab, l.PaddedVocab)
	}
	for i, s := range l.Stages {
		want := model.RowRange{Lo: 3 * i, Hi: 3*i + 3}
		if s.Embed != want || s.Head != want {
			t.Errorf("stage %d embed %v head %v, want %v for both", i, s.Embed, s.Head, want)
		}
	}
	n, err := Partition(cfg, 4, VocabNaive)
	if err != nil {
		t.Fatal(err)
	}
	if n.PaddedVocab != 10 {
		t.Errorf("naive padded vocab %d, want 10 (no padding)", n.PaddedVocab)
	}
	for i, s := range n.Stages {
		wantE, wantH := model.RowRange{}, model.RowRange{}
		if i == 0 {
			wantE = model.RowRange{Lo: 0, Hi: 10}
		}
		if i == 3 {
			wantH = model.RowRange{Lo: 0, Hi: 10}
		}
		if s.Embed != wantE || s.Head != wantH {
			t.Errorf("naive stage %d embed %v head %v, want %v %v", i, s.Embed, s.Head, wantE, wantH)
		}
	}
	// Each stage's spec builds a model stage once the vocabulary is padded.
	padded := cfg
	padded.Vocab = l.PaddedVocab
	for i, s := range l.Stages {
		if _, err := model.NewStage(padded, s, 1); err != nil {
			t.Errorf("stage %d: model.NewStage: %v", i, err)
		}
	}
}

func TestPartitionErrors(t *testing.T) {
	cases := []struct {
		name string
		cfg  model.Config
		pp   int
		mode VocabMode
		want string
	}{
		{"more stages than layers", testConfig(100, 3), 4, VocabParallel, "pipeline size 4 exceeds the model's 3 layers"},
		{"vocab below stages", testConfig(3, 8), 4, VocabParallel, "vocabulary 3 is smaller than the pipeline size 4"},
		{"zero stages", testConfig(100, 3), 0, VocabNaive, "pipeline size must be at least 1"},
		{"unknown mode", testConfig(100, 3), 1, "tied", `vocabulary mode "tied" not allowed`},
		{"none is not a layout", testConfig(100, 3), 1, VocabNone, `vocabulary mode "none" not allowed`},
	}
	for _, c := range cases {
		_, err := Partition(c.cfg, c.pp, c.mode)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
		}
	}
	// Naive placement does not need a row per stage.
	if _, err := Partition(testConfig(3, 8), 4, VocabNaive); err != nil {
		t.Errorf("naive with a tiny vocabulary: %v", err)
	}
}

func TestParamCountsMatchModel(t *testing.T) {
	for _, pp := range []int{1, 2, 3} {
		for _, mode := range []VocabMode{VocabParallel, VocabNaive} {
			cfg := testConfig(101, 6)
			l, err := Partition(cfg, pp, mode)
			if err != nil {
				t.Fatal(err)
			}
			var sum int64
			for _, s := range ParamCounts(cfg, l) {
				sum += s.Total()
			}
			// Padding adds (PaddedVocab−Vocab) rows to both tensors.
			want := cfg.NumParams() + 2*int64(l.PaddedVocab-cfg.Vocab)*int64(cfg.Dim)
			if sum != want {
				t.Errorf("pp %d %s: stages hold %d parameters, want %d", pp, mode, sum, want)
			}
			// And each stage's count is what model.NewStage allocates.
			padded := cfg
			padded.Vocab = l.PaddedVocab
			for i, spec := range l.Stages {
				st, err := model.NewStage(padded, spec, 1)
				if err != nil {
					t.Fatal(err)
				}
				var n int64
				for _, p := range st.Params() {
					n += int64(p.Size())
				}
				if got := ParamCounts(cfg, l)[i].Total(); got != n {
					t.Errorf("pp %d %s stage %d: ParamCounts %d, model.NewStage %d", pp, mode, i, got, n)
				}
			}
		}
	}
}

// TestParamMemoryCL100k is the per-stage parameter-memory comparison for a
// model with the cl100k vocabulary at PP=4: the medium preset's shape
// (dim 512, 8 layers, FFN 1376) with vocabulary 100277, at 16 bytes per
// parameter (float32 weight and gradient, AdamW's two float32 moments).
func TestParamMemoryCL100k(t *testing.T) {
	cfg, err := model.Preset("medium")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Vocab = 100277
	cfg.Tokenizer = "cl100k_base"
	const bytesPerParam = 16
	ratio := map[VocabMode]float64{}
	for _, mode := range []VocabMode{VocabNaive, VocabParallel} {
		mem, err := ParamMemory(cfg, 4, mode, bytesPerParam)
		if err != nil {
			t.Fatal(err)
		}
		ratio[mode] = MaxOverMean(mem)
		mib := make([]float64, len(mem))
		for i, b := range mem {
			mib[i] = float64(b) / (1 << 20)
		}
		t.Logf("%-8s per-stage params+grads+AdamW state (MiB): %.1f  max/mean %.3f", mode, mib, ratio[mode])
	}
	if ratio[VocabParallel] > 1.10 {
		t.Errorf("vocabulary-parallel max/mean %.3f, want ≤ 1.10", ratio[VocabParallel])
	}
	if ratio[VocabNaive] < 1.5 {
		t.Errorf("naive max/mean %.3f: expected the embedding and head stages to dominate", ratio[VocabNaive])
	}
}
