package snapshot

import (
	"fmt"
	"os"
	"strconv"
	"sync"
)

// EnvTestCorruptFragment names a TEST-ONLY fault injection, off unless
// the variable is set: with TERN_TEST_CORRUPT_FRAGMENT=I, a PeerService
// flips one byte of every fragment of index I it holds for a peer, in
// memory, right after storing it (the fragment was verified on arrival,
// so the damage is the holder's, as a bad DIMM or a stray write would
// do). A restore that fetches it must reject it by its CRC32C and fetch
// another fragment instead; scripts/chaos (--corrupt) drives this
// against a real cluster. Never set it outside such a test.
const EnvTestCorruptFragment = "TERN_TEST_CORRUPT_FRAGMENT"

// testCorruptIndex is the fragment index to damage, -1 when off.
var testCorruptIndex = sync.OnceValue(func() int {
	v, ok := os.LookupEnv(EnvTestCorruptFragment)
	if !ok || v == "" {
		return -1
	}
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 {
		fmt.Fprintf(os.Stderr, "snapshot: %s=%q is not a fragment index (0, 1, ...); the test hook stays off\n", EnvTestCorruptFragment, v)
		return -1
	}
	fmt.Fprintf(os.Stderr, "snapshot: TEST HOOK ON: %s=%d damages every held fragment of index %d\n", EnvTestCorruptFragment, i, i)
	return i
})

// testCorruptHeld applies the test hook to a fragment just stored.
func testCorruptHeld(f *Fragment) {
	if i := testCorruptIndex(); i < 0 || f.Index != i || len(f.Data) == 0 {
		return
	}
	f.Data[len(f.Data)/2] ^= 0x5a
	fmt.Fprintf(os.Stderr, "snapshot: test hook damaged held fragment %d of rank %d step %d\n", f.Index, f.Rank, f.Step)
}
