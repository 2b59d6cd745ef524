package model

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// genModel is a small grouped-query model (4 query heads share 2 kv heads),
// so the cache's head mapping is exercised.
func genModel(t *testing.T) *Model {
	t.Helper()
	c := Config{Vocab: 97, Dim: 32, Layers: 2, Heads: 4, KVHeads: 2, FFN: 48, SeqLen: 40, RopeTheta: 10000, NormEps: 1e-5, Tokenizer: "byte"}
	m, err := New(c, 7, false)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func seqTokens(n, vocab int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32((i*37 + 11) % vocab)
	}
	return out
}

// maxRelDiff is max|a−b| / max|a|.
func maxRelDiff(a, b []float32) float64 {
	var d, m float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
		m = max(m, math.Abs(float64(a[i])))
	}
	return d / m
}

// The cache path computes the same logits as the training forward pass. The
// two differ only in summation order (blockwise online softmax in float32 vs
// a float64 softmax over the cache), so they agree to float32 rounding: 1e-5
// of the largest logit is ~100 ulps of headroom.
func TestKVCacheMatchesFullForward(t *testing.T) {
	m := genModel(t)
	c := m.Config()
	const T = 17
	toks := seqTokens(T, c.Vocab)
	full, err := m.Logits(toks, 1, T)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := m.NewKVCache(T)
	if err != nil {
		t.Fatal(err)
	}
	// A prefill of 6 tokens, then one token at a time.
	got, err := m.Append(kc, toks[:6], true)
	if err != nil {
		t.Fatal(err)
	}
	for i := 6; i < T; i++ {
		l, err := m.Append(kc, toks[i:i+1], false)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l...)
	}
	if d := maxRelDiff(full, got); d > 1e-5 {
		t.Fatalf("KV-cache logits differ from the full forward pass by %.3g of max|logit|", d)
	}
	if kc.Len() != T {
		t.Fatalf("cache holds %d positions, want %d", kc.Len(), T)
	}
	if _, err := m.Append(kc, toks[:1], false); err == nil || !strings.Contains(err.Error(), "exceed") {
		t.Fatalf("append past capacity: %v", err)
	}
}

// Greedy decoding with the cache picks exactly the tokens that recomputing
// the whole sequence each step picks.
func TestGreedyWithCacheEqualsWithout(t *testing.T) {
	m := genModel(t)
	prompt := seqTokens(5, m.Config().Vocab)
	const n = 30
	got, err := m.Generate(prompt, n, Sampling{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	seq := slices.Clone(prompt)
	var want []int32
	for range n {
		l, err := m.Logits(seq, 1, len(seq))
		if err != nil {
			t.Fatal(err)
		}
		tok := NewSampler(Sampling{}).Next(l[(len(seq)-1)*m.Config().Vocab:])
		want = append(want, tok)
		seq = append(seq, tok)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("greedy with cache %v\nwithout cache         %v", got, want)
	}
	// Top-1 sampling at any temperature is greedy.
	k1, err := m.Generate(prompt, n, Sampling{Temperature: 0.7, TopK: 1, Seed: 3}, nil, nil)
	if err != nil || !slices.Equal(k1, want) {
		t.Fatalf("top-k 1 = %v, %v; want greedy %v", k1, err, want)
	}
}

func TestSamplingIsSeeded(t *testing.T) {
	m := genModel(t)
	prompt := seqTokens(3, m.Config().Vocab)
	gen := func(s Sampling) []int32 {
		out, err := m.Generate(prompt, 25, s, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b := gen(Sampling{Temperature: 1, Seed: 42}), gen(Sampling{Temperature: 1, Seed: 42})
	if !slices.Equal(a, b) {
		t.Fatalf("same seed gave %v and %v", a, b)
	}
	if c := gen(Sampling{Temperature: 1, Seed: 43}); slices.Equal(a, c) {
		t.Fatalf("seeds 42 and 43 gave the same 25 tokens %v", a)
	}
	// Top-k restricts the draw to the k best tokens of each step.
	sp := NewSampler(Sampling{Temperature: 5, TopK: 3, Seed: 1})
	logits := []float32{0, 5, 1, 4, 3, 2}
	for range 200 {
		if tok := sp.Next(logits); tok != 1 && tok != 3 && tok != 4 {
			t.Fatalf("top-3 drew token %d (logit %g)", tok, logits[tok])
		}
	}
}

func TestGenerateStopsAndRejects(t *testing.T) {
	m := genModel(t)
	prompt := seqTokens(4, m.Config().Vocab)
	all, err := m.Generate(prompt, 10, Sampling{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	stopped, err := m.Generate(prompt, 10, Sampling{}, []int32{all[2]}, nil)
	if err != nil || len(stopped) > 3 || stopped[len(stopped)-1] != all[2] {
		t.Fatalf("stop at %d: got %v, %v (full run %v)", all[2], stopped, err, all)
	}
	var seen []int32
	if _, err := m.Generate(prompt, 10, Sampling{}, nil, func(t int32) bool { seen = append(seen, t); return len(seen) < 4 }); err != nil || !slices.Equal(seen, all[:4]) {
		t.Fatalf("emit saw %v, %v; want %v", seen, err, all[:4])
	}
	for _, tc := range []struct {
		name   string
		prompt []int32
		s      Sampling
		want   string
	}{
		{"empty prompt", nil, Sampling{}, "empty prompt"},
		{"token out of vocab", []int32{1, 500}, Sampling{}, "outside the vocabulary"},
		{"negative temperature", prompt, Sampling{Temperature: -1}, "temperature"},
		{"NaN temperature", prompt, Sampling{Temperature: math.NaN()}, "temperature"},
		{"negative top-k", prompt, Sampling{TopK: -2}, "top-k"},
	} {
		if _, err := m.Generate(tc.prompt, 3, tc.s, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}
