package snapshot

import (
	"errors"
	"math/rand/v2"
	"testing"
)

func encodeTest(t *testing.T, c Code, sizes ...int) ([]byte, []Fragment, Expect) {
	t.Helper()
	st := testRankState(uint64(c.K*10+c.M), sizes...)
	n, err := MarshalState(st, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := MarshalState(st, c.Reserve(len(n)))
	if err != nil {
		t.Fatal(err)
	}
	state := append([]byte(nil), b...)
	frags, err := Encode(st.Job, st.Step, st.Rank, b, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(frags) != c.Fragments() {
		t.Fatalf("%v: %d fragments, want %d", c, len(frags), c.Fragments())
	}
	want := Expect{Job: st.Job, Step: st.Step, Rank: st.Rank, Code: c, StateBytes: int64(len(state)), StateCRC: frags[0].StateCRC}
	for _, f := range frags {
		want.FragmentCRCs = append(want.FragmentCRCs, f.CRC)
	}
	return state, frags, want
}

// subsets calls fn with every subset of 0..n-1 of size r.
func subsets(n, r int, fn func([]int)) {
	idx := make([]int, r)
	var rec func(start, d int)
	rec = func(start, d int) {
		if d == r {
			fn(idx)
			return
		}
		for i := start; i < n; i++ {
			idx[d] = i
			rec(i+1, d+1)
		}
	}
	rec(0, 0)
}

// Any k of the k+m−1 fragments rebuild the state exactly, for every
// subset; fewer give ErrUnrecoverable.
func TestDecodeFromAnyK(t *testing.T) {
	for _, c := range []Code{{1, 1}, {3, 1}, {2, 2}, {4, 2}, {3, 3}, {5, 3}} {
		t.Run(c.String(), func(t *testing.T) {
			state, frags, want := encodeTest(t, c, 1001, 3, 77)
			subsets(c.Fragments(), c.K, func(keep []int) {
				var in []Fragment
				for _, i := range keep {
					f := frags[i]
					f.Data = append([]byte(nil), f.Data...)
					in = append(in, f)
				}
				got, err := Decode(want, in)
				if err != nil {
					t.Fatalf("from %v: %v", keep, err)
				}
				if string(got) != string(state) {
					t.Fatalf("from %v: state differs", keep)
				}
				if _, err := UnmarshalState(got); err != nil {
					t.Fatal(err)
				}
			})
			if c.K > 1 {
				subsets(c.Fragments(), c.K-1, func(keep []int) {
					var in []Fragment
					for _, i := range keep {
						in = append(in, frags[i])
					}
					var ue *UnrecoverableError
					if _, err := Decode(want, in); !errors.Is(err, ErrUnrecoverable) || !errors.As(err, &ue) || ue.Have != c.K-1 || ue.Need != c.K {
						t.Fatalf("from %v (k-1 fragments): err %v, want ErrUnrecoverable with have %d need %d", keep, err, c.K-1, c.K)
					}
				})
			}
		})
	}
}

// A corrupt or stale fragment is refused by its hash and another one is
// used; when too few good ones remain the error names what was refused.
func TestDecodeSkipsBadFragments(t *testing.T) {
	c := Code{K: 2, M: 3} // 4 fragments, any 2 rebuild
	state, frags, want := encodeTest(t, c, 500, 9)
	clone := func() []Fragment {
		out := make([]Fragment, len(frags))
		for i, f := range frags {
			out[i] = f
			out[i].Data = append([]byte(nil), f.Data...)
		}
		return out
	}
	in := clone()
	in[0].Data[7] ^= 0x10 // corrupt: fails its CRC
	in[1].Step = 41       // stale generation
	got, err := Decode(want, in)
	if err != nil || string(got) != string(state) {
		t.Fatalf("two good of four: err %v, equal %v", err, string(got) == string(state))
	}
	// A fragment whose own CRC matches its bytes but not the manifest.
	in = clone()
	in[2].Data[0] ^= 1
	in[2].CRC = crcOf(in[2].Data)
	in[3].Data = nil
	in[0].Data[1] ^= 1
	_, err = Decode(want, in)
	var ue *UnrecoverableError
	if !errors.As(err, &ue) || ue.Have != 1 || len(ue.Rejected) != 3 {
		t.Fatalf("one good of four: %v", err)
	}
	t.Log(err)
}

func crcOf(b []byte) uint32 { return crcCastagnoli(b) }

func TestFragmentWireRoundTrip(t *testing.T) {
	_, frags, want := encodeTest(t, Code{K: 3, M: 2}, 300)
	var got []Fragment
	for _, f := range frags {
		b, err := MarshalFragment(&f)
		if err != nil {
			t.Fatal(err)
		}
		g, err := UnmarshalFragment(b)
		if err != nil {
			t.Fatal(err)
		}
		if g.FragmentHeader != f.FragmentHeader || string(g.Data) != string(f.Data) {
			t.Fatalf("fragment %d changed on the wire", f.Index)
		}
		got = append(got, g)
		// Every bit of the header and data is covered by a CRC.
		rng := rand.New(rand.NewPCG(uint64(f.Index), 2))
		for range 200 {
			c := append([]byte(nil), b...)
			i := rng.IntN(len(c) * 8)
			c[i/8] ^= 1 << (i % 8)
			if _, err := UnmarshalFragment(c); !errors.Is(err, ErrStateCorrupt) {
				t.Fatalf("fragment %d bit %d flipped: %v", f.Index, i, err)
			}
		}
	}
	if _, err := Decode(want, got[1:]); err != nil {
		t.Fatal(err)
	}
}

func TestCodeRejects(t *testing.T) {
	for _, c := range []Code{{0, 1}, {1, 0}, {33, 1}, {2, 9}} {
		if _, err := Encode("j", 1, 0, []byte("x"), c); err == nil {
			t.Errorf("%v accepted", c)
		}
	}
	if _, err := Encode("j", 1, 0, nil, Code{2, 1}); err == nil {
		t.Error("empty state accepted")
	}
}
