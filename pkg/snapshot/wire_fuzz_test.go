package snapshot

import (
	"testing"
)

// Bytes from the wire or memory never panic a decoder, and whatever one
// accepts encodes back to the same bytes.

func FuzzUnmarshalState(f *testing.F) {
	b, _ := MarshalState(testRankState(1, 3, 1, 0), 0)
	f.Add(b)
	f.Add([]byte(stateMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := UnmarshalState(b)
		if err != nil {
			return
		}
		if _, err := MarshalState(st, 0); err != nil {
			t.Fatalf("accepted a state that does not marshal: %v", err)
		}
	})
}

func FuzzUnmarshalFragment(f *testing.F) {
	st, _ := MarshalState(testRankState(2, 10), 0)
	frags, _ := Encode("j", 3, 1, st, Code{K: 2, M: 2})
	for _, fr := range frags {
		b, _ := MarshalFragment(&fr)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := UnmarshalFragment(b)
		if err != nil {
			return
		}
		back, err := MarshalFragment(&fr)
		if err != nil || string(back) != string(b) {
			t.Fatalf("accepted fragment does not encode back: %v", err)
		}
	})
}

func FuzzUnmarshalPeerManifest(f *testing.F) {
	m := manifestAt(f, 4, 2, 0)
	b, _ := MarshalPeerManifest(m)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := UnmarshalPeerManifest(b)
		if err != nil {
			return
		}
		back, err := MarshalPeerManifest(m)
		if err != nil || string(back) != string(b) {
			t.Fatalf("accepted manifest does not encode back: %v", err)
		}
	})
}
