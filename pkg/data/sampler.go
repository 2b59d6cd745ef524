package data

import (
	"errors"
	"fmt"
	"math"
)

// Sampler cuts a token stream into training windows. The stream is divided
// into numWindows = (N-1)/T non-overlapping windows with stride T: window w
// covers tokens [wT, wT+T], its inputs are the first T and its targets the
// last T. Consecutive windows share one boundary token, so every token after
// the first is a target exactly once per epoch.
//
// Which window a sample gets is a pure function of (seed, step, dp rank, dp
// size, microbatch, row): sample g (see GlobalIndex) lies in epoch
// g / numWindows and takes window perm_epoch(g mod numWindows), where
// perm_epoch is a keyed pseudo-random permutation of [0, numWindows). Within
// an epoch every window is drawn once (sampling without replacement), and no
// state is carried between steps, so a resumed run needs only the step.
type Sampler struct {
	tokens      Tokens
	seqLen      int
	seed        uint64
	numWindows  int64
	fingerprint string
}

// NewSampler prepares windows of seqLen+1 tokens over tokens.
func NewSampler(tokens Tokens, seqLen int, seed uint64) (*Sampler, error) {
	if seqLen < 1 {
		return nil, fmt.Errorf("sequence length %d must be >= 1", seqLen)
	}
	n := tokens.Len()
	if n < seqLen+1 {
		return nil, fmt.Errorf("token stream has %d tokens, shorter than one window of %d (seqLen+1)", n, seqLen+1)
	}
	return &Sampler{
		tokens:      tokens,
		seqLen:      seqLen,
		seed:        seed,
		numWindows:  int64((n - 1) / seqLen),
		fingerprint: fmt.Sprintf("crc32c:%08x/n:%d/vocab:%d", tokens.Checksum(), n, tokens.Vocab()),
	}, nil
}

// NumWindows is the number of distinct windows, i.e. samples per epoch.
func (s *Sampler) NumWindows() int64 { return s.numWindows }

// SeqLen is T, the number of inputs (and targets) per window.
func (s *Sampler) SeqLen() int { return s.seqLen }

// Fingerprint identifies the token stream (CRC32C, length, vocabulary).
func (s *Sampler) Fingerprint() string { return s.fingerprint }

// GlobalIndex numbers the samples of a run: step-major, then DP rank, then
// microbatch, then row, so the ranks of one step together draw the
// consecutive range [step*S, (step+1)*S) with S = dpSize*microBatches*B.
func GlobalIndex(step int64, dpRank, dpSize, micro, microBatches, B, row int) int64 {
	return ((step*int64(dpSize)+int64(dpRank))*int64(microBatches)+int64(micro))*int64(B) + int64(row)
}

// Window returns the index of the window that sample g draws.
func (s *Sampler) Window(g int64) int64 {
	n := uint64(s.numWindows)
	epoch := uint64(g) / n
	p := newPermutation(n, mix64(s.seed^mix64(epoch+0x632be59bd9b4e019)))
	return int64(p.apply(uint64(g) % n))
}

// Epoch is the epoch that sample g belongs to.
func (s *Sampler) Epoch(g int64) int64 { return g / s.numWindows }

// Batch fills inputs and targets (B*T each, row-major) with microbatch micro
// of DP rank dpRank at step step.
func (s *Sampler) Batch(step int64, dpRank, dpSize, micro, microBatches, B int, inputs, targets []int32) error {
	switch {
	case step < 0:
		return fmt.Errorf("sampler: step %d must be >= 0", step)
	case dpSize < 1 || dpRank < 0 || dpRank >= dpSize:
		return fmt.Errorf("sampler: dp rank %d out of range [0, %d)", dpRank, dpSize)
	case microBatches < 1 || micro < 0 || micro >= microBatches:
		return fmt.Errorf("sampler: microbatch %d out of range [0, %d)", micro, microBatches)
	case B < 1:
		return fmt.Errorf("sampler: batch size %d must be >= 1", B)
	case len(inputs) != B*s.seqLen || len(targets) != B*s.seqLen:
		return fmt.Errorf("sampler: inputs and targets hold %d and %d ids, want B*T = %d", len(inputs), len(targets), B*s.seqLen)
	}
	perStep := int64(dpSize) * int64(microBatches) * int64(B)
	if perStep > math.MaxInt64/2 || step > (math.MaxInt64-perStep)/perStep {
		return fmt.Errorf("sampler: step %d with %d samples per step overflows the sample index", step, perStep)
	}
	T := s.seqLen
	for r := 0; r < B; r++ {
		start := int(s.Window(GlobalIndex(step, dpRank, dpSize, micro, microBatches, B, r))) * T
		s.tokens.Window(start, inputs[r*T:(r+1)*T])
		s.tokens.Window(start+1, targets[r*T:(r+1)*T])
	}
	return nil
}

// EvalBatches is the number of distinct evaluation batches of B windows
// (at least 1; a stream with fewer than B windows repeats them).
func (s *Sampler) EvalBatches(B int) int {
	if B < 1 {
		return 0
	}
	return int(max(s.numWindows/int64(B), 1))
}

// EvalBatch fills batch i of B windows taken in stream order, without
// shuffling, so every evaluation of the first k batches sees the same
// tokens. Windows wrap around when i*B+B exceeds NumWindows.
func (s *Sampler) EvalBatch(i, B int, inputs, targets []int32) error {
	switch {
	case i < 0:
		return fmt.Errorf("eval batch %d must be >= 0", i)
	case B < 1:
		return fmt.Errorf("eval batch size %d must be >= 1", B)
	case len(inputs) != B*s.seqLen || len(targets) != B*s.seqLen:
		return fmt.Errorf("eval: inputs and targets hold %d and %d ids, want B*T = %d", len(inputs), len(targets), B*s.seqLen)
	}
	T := s.seqLen
	for r := 0; r < B; r++ {
		w := (int64(i)*int64(B) + int64(r)) % s.numWindows
		start := int(w) * T
		s.tokens.Window(start, inputs[r*T:(r+1)*T])
		s.tokens.Window(start+1, targets[r*T:(r+1)*T])
	}
	return nil
}

// Cursor is the data part of a training snapshot. Sampling is a pure
// function of the step, so the step is all that moves; the other fields
// identify the stream and windowing so that a resume against different
// data fails loudly instead of silently training on other samples.
type Cursor struct {
	Step        int64  `json:"step"`        // optimizer steps completed; the next batch drawn is for this step
	Seed        uint64 `json:"seed"`        // sampler seed
	SeqLen      int    `json:"seqLen"`      // T
	NumWindows  int64  `json:"numWindows"`  // windows per epoch
	Fingerprint string `json:"fingerprint"` // see Sampler.Fingerprint
}

// ErrCursorMismatch is returned by Resume when a cursor was made for a
// different sampler.
var ErrCursorMismatch = errors.New("data cursor does not match the dataset")

// Cursor returns the cursor for a run that has completed step steps.
func (s *Sampler) Cursor(step int64) Cursor {
	return Cursor{Step: step, Seed: s.seed, SeqLen: s.seqLen, NumWindows: s.numWindows, Fingerprint: s.fingerprint}
}

// Resume checks that c was made by an identical sampler and returns the
// step to continue from.
func (s *Sampler) Resume(c Cursor) (int64, error) {
	var diffs []string
	if c.Seed != s.seed {
		diffs = append(diffs, fmt.Sprintf("seed %d, sampler has %d", c.Seed, s.seed))
	}
	if c.SeqLen != s.seqLen {
		diffs = append(diffs, fmt.Sprintf("seqLen %d, sampler has %d", c.SeqLen, s.seqLen))
	}
	if c.NumWindows != s.numWindows {
		diffs = append(diffs, fmt.Sprintf("numWindows %d, sampler has %d", c.NumWindows, s.numWindows))
	}
	if c.Fingerprint != s.fingerprint {
		diffs = append(diffs, fmt.Sprintf("fingerprint %s, dataset has %s (the corpus, tokenizer or split changed)", c.Fingerprint, s.fingerprint))
	}
	if c.Step < 0 {
		diffs = append(diffs, fmt.Sprintf("step %d is negative", c.Step))
	}
	if len(diffs) > 0 {
		return 0, fmt.Errorf("%w: cursor has %v", ErrCursorMismatch, diffs)
	}
	return c.Step, nil
}

// permutation is a keyed bijection of [0, n): a balanced Feistel network on
// the smallest even number of bits covering n, restricted to [0, n) by
// cycle walking (Black & Rogaway, "Ciphers with Arbitrary Finite Domains",
// CT-RSA 2002, section 3). The domain is less than 4n, so a walk takes under
// 4 steps on average; no O(n) table is built.
type permutation struct {
	n    uint64
	half uint
	mask uint64
	keys [feistelRounds]uint64
}

// Six rounds: Luby-Rackoff needs four for a pseudo-random permutation; two
// more cost nothing here and mix small domains better.
const feistelRounds = 6

func newPermutation(n, key uint64) permutation {
	bits := uint(2)
	for bits < 64 && uint64(1)<<bits < n {
		bits += 2
	}
	p := permutation{n: n, half: bits / 2, mask: uint64(1)<<(bits/2) - 1}
	for i := range p.keys {
		p.keys[i] = mix64(key + uint64(i+1)*0x9e3779b97f4a7c15)
	}
	return p
}

func (p permutation) encrypt(x uint64) uint64 {
	l, r := x>>p.half, x&p.mask
	for _, k := range p.keys {
		l, r = r, l^(mix64(r^k)&p.mask)
	}
	return l<<p.half | r
}

func (p permutation) apply(x uint64) uint64 {
	for {
		x = p.encrypt(x)
		if x < p.n {
			return x
		}
	}
}

// mix64 is the SplitMix64 finaliser (Steele, Lea & Flood, "Fast Splittable
// Pseudorandom Number Generators", OOPSLA 2014): a bijective 64-bit mixer.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
