package data

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestPermutationIsBijection(t *testing.T) {
	for _, n := range []uint64{1, 2, 3, 4, 5, 7, 16, 17, 100, 1000, 4097} {
		for _, key := range []uint64{0, 1, 0xdeadbeef} {
			p := newPermutation(n, key)
			seen := make([]bool, n)
			for x := uint64(0); x < n; x++ {
				y := p.apply(x)
				if y >= n || seen[y] {
					t.Fatalf("n=%d key=%d: %d -> %d is out of range or repeated", n, key, x, y)
				}
				seen[y] = true
			}
		}
	}
}

func TestPermutationShuffles(t *testing.T) {
	// A keyed permutation that were the identity or did not depend on the
	// key would pass the bijection test; check it moves most points and
	// differs between keys.
	const n = 1000
	a, b := newPermutation(n, 1), newPermutation(n, 2)
	fixed, same := 0, 0
	for x := uint64(0); x < n; x++ {
		if a.apply(x) == x {
			fixed++
		}
		if a.apply(x) == b.apply(x) {
			same++
		}
	}
	if fixed > 20 || same > 20 {
		t.Fatalf("fixed points %d, agreements between keys %d; want a few (expected ~1)", fixed, same)
	}
}

func seqTokens(t *testing.T, n, vocab int) Tokens {
	t.Helper()
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(i % vocab)
	}
	tk, err := NewTokens(ids, vocab)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestSamplerWindows(t *testing.T) {
	const T = 8
	tk := seqTokens(t, 8*T+5, 1<<20) // ids equal positions, so a window shows its start
	s, err := NewSampler(tk, T, 42)
	if err != nil {
		t.Fatal(err)
	}
	if s.NumWindows() != 8 {
		t.Fatalf("NumWindows = %d, want (N-1)/T = 8", s.NumWindows())
	}
	in, tg := make([]int32, 2*T), make([]int32, 2*T)
	if err := s.Batch(3, 1, 2, 0, 1, 2, in, tg); err != nil {
		t.Fatal(err)
	}
	for r := 0; r < 2; r++ {
		start := in[r*T]
		if start%T != 0 {
			t.Fatalf("row %d starts at %d, not a multiple of T", r, start)
		}
		for j := 0; j < T; j++ {
			if in[r*T+j] != start+int32(j) || tg[r*T+j] != start+int32(j)+1 {
				t.Fatalf("row %d: inputs %v targets %v are not a shifted window", r, in[r*T:(r+1)*T], tg[r*T:(r+1)*T])
			}
		}
	}
}

func TestSamplerDeterministicAndDisjoint(t *testing.T) {
	const T, dp, mb, B = 4, 3, 2, 5
	tk := seqTokens(t, 30*dp*mb*B*T+1, 1<<20) // 30 steps per epoch exactly
	s1, _ := NewSampler(tk, T, 7)
	s2, _ := NewSampler(tk, T, 7)
	s3, _ := NewSampler(tk, T, 8)
	epochSteps := int(s1.NumWindows()) / (dp * mb * B)
	in1, tg1 := make([]int32, B*T), make([]int32, B*T)
	in2, tg2 := make([]int32, B*T), make([]int32, B*T)
	for epoch := 0; epoch < 2; epoch++ {
		seen := map[int32]bool{}
		differs := false
		for step := epoch * epochSteps; step < (epoch+1)*epochSteps; step++ {
			for r := 0; r < dp; r++ {
				for m := 0; m < mb; m++ {
					if err := s1.Batch(int64(step), r, dp, m, mb, B, in1, tg1); err != nil {
						t.Fatal(err)
					}
					// Same arguments on a different instance, called in a different
					// order, give the same windows: no hidden state.
					if err := s2.Batch(int64(step), r, dp, m, mb, B, in2, tg2); err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(in1, in2) || !slices.Equal(tg1, tg2) {
						t.Fatalf("step %d rank %d micro %d: two samplers disagree", step, r, m)
					}
					for row := 0; row < B; row++ {
						start := in1[row*T]
						if seen[start] {
							t.Fatalf("epoch %d: window at %d drawn twice", epoch, start)
						}
						seen[start] = true
					}
					s3.Batch(int64(step), r, dp, m, mb, B, in2, tg2)
					differs = differs || !slices.Equal(in1, in2)
				}
			}
		}
		if int64(len(seen)) != s1.NumWindows() {
			t.Fatalf("epoch %d drew %d distinct windows, want all %d", epoch, len(seen), s1.NumWindows())
		}
		if !differs {
			t.Fatal("a different seed gave the same samples")
		}
	}
	// Later epochs use a different order.
	a, b := s1.Window(0), s1.Window(s1.NumWindows())
	c, d := s1.Window(1), s1.Window(s1.NumWindows()+1)
	if a == b && c == d {
		t.Fatal("epochs 0 and 1 start with the same windows")
	}
	// Replaying a step out of order gives the same batch (pure function).
	s1.Batch(5, 2, dp, 1, mb, B, in1, tg1)
	s1.Batch(0, 0, dp, 0, mb, B, in2, tg2)
	s1.Batch(5, 2, dp, 1, mb, B, in2, tg2)
	if !slices.Equal(in1, in2) {
		t.Fatal("replaying a step gave a different batch")
	}
}

func TestSamplerErrors(t *testing.T) {
	tk := seqTokens(t, 10, 256)
	if _, err := NewSampler(tk, 10, 1); err == nil || !strings.Contains(err.Error(), "shorter than one window of 11") {
		t.Fatalf("short stream: %v", err)
	}
	if _, err := NewSampler(tk, 0, 1); err == nil {
		t.Fatal("seqLen 0 accepted")
	}
	s, err := NewSampler(tk, 9, 1) // exactly one window
	if err != nil || s.NumWindows() != 1 {
		t.Fatalf("one window: %v %v", s, err)
	}
	in, tg := make([]int32, 9), make([]int32, 9)
	for _, c := range []struct {
		step               int64
		rank, dp, m, mb, B int
		in, tg             []int32
		want               string
	}{
		{-1, 0, 1, 0, 1, 1, in, tg, "step -1"},
		{0, 1, 1, 0, 1, 1, in, tg, "dp rank 1"},
		{0, 0, 1, 2, 2, 1, in, tg, "microbatch 2"},
		{0, 0, 1, 0, 1, 0, in, tg, "batch size 0"},
		{0, 0, 1, 0, 1, 2, in, tg, "want B*T = 18"},
		{1 << 60, 0, 4, 0, 4, 1, in, tg, "overflows"},
	} {
		err := s.Batch(c.step, c.rank, c.dp, c.m, c.mb, c.B, c.in, c.tg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Batch%v: error %v, want %q", c, err, c.want)
		}
	}
}

func TestEvalBatch(t *testing.T) {
	const T, B = 4, 3
	tk := seqTokens(t, 7*T+1, 1<<20) // 7 windows
	s, _ := NewSampler(tk, T, 1)
	if s.EvalBatches(B) != 2 {
		t.Fatalf("EvalBatches = %d, want 2", s.EvalBatches(B))
	}
	in, tg := make([]int32, B*T), make([]int32, B*T)
	var starts []int32
	for i := 0; i < 3; i++ {
		if err := s.EvalBatch(i, B, in, tg); err != nil {
			t.Fatal(err)
		}
		for r := 0; r < B; r++ {
			starts = append(starts, in[r*T])
			if tg[r*T] != in[r*T]+1 {
				t.Fatal("targets not shifted")
			}
		}
	}
	want := []int32{0, 4, 8, 12, 16, 20, 24, 0, 4}
	if !slices.Equal(starts, want) {
		t.Fatalf("eval windows start at %v, want %v (stream order, wrapping)", starts, want)
	}
}

func TestCursor(t *testing.T) {
	tk := seqTokens(t, 1000, 256)
	s, _ := NewSampler(tk, 16, 99)
	c := s.Cursor(1234)
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back Cursor
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != c {
		t.Fatalf("JSON round trip: %+v != %+v", back, c)
	}
	if !strings.Contains(string(b), `"numWindows":62`) {
		t.Fatalf("cursor JSON %s", b)
	}
	step, err := s.Resume(back)
	if err != nil || step != 1234 {
		t.Fatalf("Resume = %d, %v", step, err)
	}

	other := seqTokens(t, 1000, 256)
	ids := other.Ints()
	ids[500] = 7
	other, _ = NewTokens(ids, 256)
	for _, tc := range []struct {
		name string
		s    func() *Sampler
		want string
	}{
		{"seed", func() *Sampler { x, _ := NewSampler(tk, 16, 100); return x }, "seed 99"},
		{"seqLen", func() *Sampler { x, _ := NewSampler(tk, 15, 99); return x }, "seqLen 16"},
		{"data", func() *Sampler { x, _ := NewSampler(other, 16, 99); return x }, "fingerprint"},
	} {
		_, err := tc.s().Resume(c)
		if !errors.Is(err, ErrCursorMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Resume error %v, want ErrCursorMismatch mentioning %q", tc.name, err, tc.want)
		}
	}
}
