package snapshot

import (
	"bytes"
	"testing"
)

// The test hook damages exactly the held fragments of its index, in
// place, so that the fragment's own CRC gives it away; with the variable
// unset it is off.
func TestCorruptHookDamagesOnlyItsIndex(t *testing.T) {
	state := bytes.Repeat([]byte("tern snapshot state "), 500)
	frags, err := Encode("j", 10, 1, state, Code{K: 2, M: 2})
	if err != nil {
		t.Fatal(err)
	}
	if testCorruptIndex() != -1 {
		t.Skipf("%s is set in this test's environment", EnvTestCorruptFragment)
	}
	orig := testCorruptIndex
	defer func() { testCorruptIndex = orig }()
	for _, on := range []int{-1, 1} {
		testCorruptIndex = func() int { return on }
		h := NewHolder()
		for i := range frags {
			f := frags[i]
			f.Data = bytes.Clone(f.Data)
			if err := h.Put(&f); err != nil {
				t.Fatal(err)
			}
			testCorruptHeld(&f)
			held, err := h.Get(1, 10, i)
			if err != nil {
				t.Fatal(err)
			}
			if err := held.Verify(); (err != nil) != (i == on) {
				t.Errorf("hook index %d: held fragment %d verifies with %v", on, i, err)
			}
		}
	}
}
