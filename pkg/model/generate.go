package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Logits runs the full forward pass (the training path, no cache) on B
// sequences of T tokens and returns the logits [B·T, Vocab] in a fresh
// slice. It is the reference the KV-cache path is checked against, and what
// evaluation and the interoperability checks dump.
func (m *Model) Logits(tokens []int32, b, t int) ([]float32, error) {
	targets := make([]int32, len(tokens))
	for i := range targets {
		targets[i] = -1
	}
	if err := m.CheckBatch(tokens, targets, b, t); err != nil {
		return nil, err
	}
	m.prepare(tokens, targets, b, t)
	s, n := m.stage, b*t
	s.EmbedForward(tokens, m.in)
	h := s.BlocksForward(m.acts, m.in)
	logits := s.dev.Alloc(n * m.cfg.Vocab)
	linearForward(s.dev, logits, h, s.head.W, n, m.cfg.Dim, m.cfg.Vocab, 0)
	s.dev.Sync()
	return logits, nil
}

// Sampling says how Generate picks each next token.
type Sampling struct {
	// Temperature divides the logits before the softmax; 0 means greedy
	// (the highest logit, the lowest id on ties).
	Temperature float64
	// TopK keeps only the K most likely tokens before sampling; 0 keeps all.
	TopK int
	// Seed makes sampling reproducible: the same seed, prompt and model
	// give the same tokens.
	Seed uint64
}

// Validate reports a setting Generate cannot use.
func (s Sampling) Validate() error {
	if s.Temperature < 0 || math.IsNaN(s.Temperature) || math.IsInf(s.Temperature, 0) {
		return fmt.Errorf("temperature %g must be a finite number >= 0 (0 = greedy)", s.Temperature)
	}
	if s.TopK < 0 {
		return fmt.Errorf("top-k %d must be >= 0 (0 = no limit)", s.TopK)
	}
	return nil
}

// Sampler draws tokens from logits under a Sampling; it owns the random
// stream, so one Sampler per generated sequence.
type Sampler struct {
	s     Sampling
	rng   *rand.Rand
	probs []float64
	idx   []int
}

// NewSampler starts the random stream of s.Seed.
func NewSampler(s Sampling) *Sampler {
	return &Sampler{s: s, rng: rand.New(rand.NewPCG(s.Seed, 0x7465726e67656e))} // "terngen"
}

// Next picks a token id from one row of logits.
func (sp *Sampler) Next(logits []float32) int32 {
	if sp.s.Temperature == 0 {
		best := 0
		for i, z := range logits {
			if z > logits[best] {
				best = i
			}
		}
		return int32(best)
	}
	v := len(logits)
	if cap(sp.idx) < v {
		sp.idx, sp.probs = make([]int, v), make([]float64, v)
	}
	idx, probs := sp.idx[:v], sp.probs[:v]
	for i := range idx {
		idx[i] = i
	}
	k := v
	if sp.s.TopK > 0 && sp.s.TopK < v {
		k = sp.s.TopK
		// Stable order (higher logit first, then lower id) keeps ties
		// deterministic.
		slices.SortStableFunc(idx, func(a, b int) int {
			switch {
			case logits[a] > logits[b]:
				return -1
			case logits[a] < logits[b]:
				return 1
			}
			return 0
		})
		idx = idx[:k]
	}
	mx := math.Inf(-1)
	for _, i := range idx {
		mx = max(mx, float64(logits[i]))
	}
	var sum float64
	for j, i := range idx {
		probs[j] = math.Exp((float64(logits[i]) - mx) / sp.s.Temperature)
		sum += probs[j]
	}
	u := sp.rng.Float64() * sum
	for j, i := range idx {
		u -= probs[j]
		if u < 0 {
			return int32(i)
		}
	}
	return int32(idx[k-1])
}

// Generate continues prompt by up to maxTokens tokens with a KV cache,
// calling emit (when not nil) with each new token as soon as it is chosen;
// it stops early when a token is in stop or emit returns false. It returns
// the new tokens. prompt plus maxTokens must fit in capacity positions
// (normally the model's SeqLen, the context it was trained on).
func (m *Model) Generate(prompt []int32, maxTokens int, s Sampling, stop []int32, emit func(int32) bool) ([]int32, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if len(prompt) == 0 {
		return nil, fmt.Errorf("generate: empty prompt (at least one token is needed to condition on)")
	}
	if maxTokens < 0 {
		return nil, fmt.Errorf("generate: max tokens %d must be >= 0", maxTokens)
	}
	kc, err := m.NewKVCache(len(prompt) + maxTokens)
	if err != nil {
		return nil, err
	}
	sp := NewSampler(s)
	var out []int32
	next := prompt
	for len(out) < maxTokens {
		logits, err := m.Append(kc, next, false)
		if err != nil {
			return out, err
		}
		tok := sp.Next(logits)
		out = append(out, tok)
		if emit != nil && !emit(tok) || slices.Contains(stop, tok) {
			break
		}
		next = []int32{tok}
	}
	return out, nil
}
