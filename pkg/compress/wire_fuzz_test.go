package compress

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// fuzzDecode checks Decode's contract on arbitrary bytes: it never panics,
// every failure wraps ErrInvalidPayload, and whatever it accepts is
// canonical (re-encodes to the same bytes).
func fuzzDecode(f *testing.F, format Format) {
	l, good := corruptLayout(f, format)
	f.Add(good)
	f.Add(good[:20])
	f.Add(good[:len(good)-1])
	f.Add([]byte{})
	big := mustLayout(f, wireShapes, Options{64, 5, format})
	p, err := big.Encode(nil, randPayload(big, rand.New(rand.NewPCG(17, 18))))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, lay := range []*Layout{l, big} {
			ts, err := lay.Decode(b, nil)
			if err != nil {
				if !errors.Is(err, ErrInvalidPayload) {
					t.Fatalf("error %v does not wrap ErrInvalidPayload", err)
				}
				continue
			}
			again, err := lay.Encode(nil, ts)
			if err != nil {
				t.Fatalf("a decoded payload does not re-encode: %v", err)
			}
			if !bytes.Equal(again, b) {
				t.Fatalf("a decoded payload re-encodes to other bytes")
			}
		}
	})
}

func FuzzDecodeBF16(f *testing.F) { fuzzDecode(f, BF16) }

func FuzzDecodeSign(f *testing.F) { fuzzDecode(f, Sign) }
