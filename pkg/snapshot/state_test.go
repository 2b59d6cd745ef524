package snapshot

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

// testState is a rank state of a few tensors with pseudo-random values,
// special values (NaN payloads, -0, Inf) included so the round trip is
// checked bit for bit.
func testRankState(seed uint64, sizes ...int) *RankState {
	rng := rand.New(rand.NewPCG(seed, 1))
	st := &RankState{Job: "demo", Step: 42, Rank: 3, Meta: []byte(`{"cursor":{"step":42},"seed":7}`)}
	for i, n := range sizes {
		d := make([]float32, n)
		for j := range d {
			d[j] = rng.Float32()*2 - 1
		}
		if n > 3 {
			d[0], d[1], d[2] = float32(math.Inf(-1)), math.Float32frombits(0x7fc00123), math.Float32frombits(0x80000000)
		}
		st.Tensors = append(st.Tensors, StateTensor{Name: "t" + string(rune('a'+i)), Shape: []int{n}, Data: d})
	}
	return st
}

func sameState(t *testing.T, got, want *RankState) {
	t.Helper()
	if got.Job != want.Job || got.Step != want.Step || got.Rank != want.Rank || string(got.Meta) != string(want.Meta) || len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("header: got %q/%d/%d/%s with %d tensors, want %q/%d/%d/%s with %d", got.Job, got.Step, got.Rank, got.Meta, len(got.Tensors), want.Job, want.Step, want.Rank, want.Meta, len(want.Tensors))
	}
	for i, w := range want.Tensors {
		g := got.Tensors[i]
		if g.Name != w.Name || !reflect.DeepEqual(g.Shape, w.Shape) || len(g.Data) != len(w.Data) {
			t.Fatalf("tensor %d: got %s %v (%d), want %s %v (%d)", i, g.Name, g.Shape, len(g.Data), w.Name, w.Shape, len(w.Data))
		}
		for j := range w.Data {
			if math.Float32bits(g.Data[j]) != math.Float32bits(w.Data[j]) {
				t.Fatalf("tensor %s[%d]: %08x, want %08x", w.Name, j, math.Float32bits(g.Data[j]), math.Float32bits(w.Data[j]))
			}
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	for _, sizes := range [][]int{nil, {0}, {1}, {5, 7, 1000}, {3 << 10, 1, 17}} {
		st := testRankState(uint64(len(sizes)), sizes...)
		b, err := MarshalState(st, 100)
		if err != nil {
			t.Fatal(err)
		}
		if cap(b) < len(b)+100 {
			t.Fatalf("reserve: cap %d for len %d", cap(b), len(b))
		}
		got, err := UnmarshalState(b)
		if err != nil {
			t.Fatal(err)
		}
		sameState(t, got, st)
	}
}

// Every single-bit flip anywhere in the shard is caught: in the header by
// its CRC, in a tensor by that tensor's CRC.
func TestStateDetectsEveryBitFlip(t *testing.T) {
	st := testRankState(9, 3, 5, 2)
	b, err := MarshalState(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(b) * 8 {
		c := append([]byte(nil), b...)
		c[i/8] ^= 1 << (i % 8)
		if _, err := UnmarshalState(c); !errors.Is(err, ErrStateCorrupt) {
			t.Fatalf("bit %d flipped: err %v, want ErrStateCorrupt", i, err)
		}
	}
	for n := range len(b) {
		if _, err := UnmarshalState(b[:n]); !errors.Is(err, ErrStateCorrupt) {
			t.Fatalf("truncated to %d bytes: err %v", n, err)
		}
	}
}

func TestMarshalStateRejects(t *testing.T) {
	cases := map[string]*RankState{
		"shape mismatch": {Tensors: []StateTensor{{Name: "a", Shape: []int{2, 2}, Data: make([]float32, 3)}}},
		"repeated name":  {Tensors: []StateTensor{{Name: "a", Shape: []int{1}, Data: []float32{1}}, {Name: "a", Shape: []int{1}, Data: []float32{1}}}},
		"empty name":     {Tensors: []StateTensor{{Shape: []int{1}, Data: []float32{1}}}},
		"bad meta":       {Meta: []byte("{")},
		"negative step":  {Step: -1},
		"negative dim":   {Tensors: []StateTensor{{Name: "a", Shape: []int{-1}}}},
	}
	for name, st := range cases {
		if _, err := MarshalState(st, 0); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
