package cuda

import (
	"testing"

	"github.com/ternml/tern/pkg/tensor"
)

// TestAttnTCChunk checks that a chunk of (sequence, KV head) pairs stays
// within the score budget unless one pair alone exceeds it, and holds at
// least one pair and at most all of them.
func TestAttnTCChunk(t *testing.T) {
	for _, sh := range []tensor.AttnShape{{B: 16, T: 1024, H: 12, KV: 12, HD: 64}, {B: 1, T: 8192, H: 4, KV: 1, HD: 64}, {B: 3, T: 5, H: 2, KV: 1, HD: 8}} {
		c := attnTCChunk(sh)
		per := (sh.H / sh.KV) * sh.T * sh.T
		if c < 1 || c > sh.B*sh.KV || (c > 1 && c*per > attnTCChunkScores) {
			t.Errorf("%+v: chunk %d pairs of %d scores", sh, c, per)
		}
	}
	if attnTCChunk(tensor.AttnShape{B: 16, T: 1024, H: 12, KV: 12, HD: 64}) != 64 {
		t.Errorf("gpt2-shape at T=1024: want 64 pairs of 2²⁰ scores per chunk of 2²⁶")
	}
}
