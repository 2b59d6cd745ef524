package compress

import (
	"fmt"
	"math"
	"slices"
)

// ClampK is the number of coefficients kept per chunk of g for a requested
// k: k clamped to [1, g.ChunkElems()], as DeMo's CompressDCT does.
func ClampK(k int, g Grid) int { return max(1, min(k, g.ChunkElems())) }

// TopK selects, in every chunk of coeffs (laid out as g says), the k
// coefficients of largest magnitude, and writes their in-chunk indices in
// increasing order to idx and their values (sign kept) to val, k entries
// per chunk, chunk after chunk. k must be ClampK(k, g); idx and val must
// hold g.Chunks()·k entries.
//
// Ties are broken deterministically: of two coefficients with the same
// magnitude the one with the smaller index is preferred (+0 and −0 have the
// same magnitude). A NaN counts as larger than any number, so it is
// selected and the encoder then rejects it instead of it being dropped
// silently.
func TopK(g Grid, coeffs []float32, k int, idx []uint16, val []float32) error {
	if err := g.check(); err != nil {
		return fmt.Errorf("top-k: %w", err)
	}
	ce := g.ChunkElems()
	if k != ClampK(k, g) {
		return fmt.Errorf("top-k: k = %d, want it in [1, %d]", k, ce)
	}
	n := g.Chunks() * k
	if len(coeffs) != g.Coeffs() || len(idx) != n || len(val) != n {
		return fmt.Errorf("top-k: %d coefficients, %d indices and %d values, want %d, %d and %d",
			len(coeffs), len(idx), len(val), g.Coeffs(), n, n)
	}
	heap := make([]uint64, 0, k)
	for c := 0; c < g.Chunks(); c++ {
		chunk := coeffs[c*ce : (c+1)*ce]
		heap = selectTop(heap[:0], chunk, k)
		ci := idx[c*k : (c+1)*k]
		for j, key := range heap {
			ci[j] = keyIndex(key)
		}
		slices.Sort(ci)
		cv := val[c*k : (c+1)*k]
		for j, i := range ci {
			cv[j] = chunk[i]
		}
	}
	return nil
}

// A key orders coefficients by preference: the magnitude's bits (IEEE
// ordering of non-negative floats is integer ordering, with NaN above +Inf)
// in the high 32 bits, then the complement of the index, so a larger key is
// the larger magnitude and, among equal magnitudes, the smaller index.
func topKey(v float32, i int) uint64 {
	return uint64(math.Float32bits(v)&0x7fffffff)<<32 | uint64(math.MaxUint16-i)
}

func keyIndex(key uint64) uint16 { return uint16(math.MaxUint16 - key&0xffff) }

// selectTop returns the keys of the k preferred entries of chunk, as a
// min-heap (root = least preferred of those kept). Every key is distinct
// (indices differ), so the selected set is unique.
func selectTop(h []uint64, chunk []float32, k int) []uint64 {
	for i, v := range chunk {
		key := topKey(v, i)
		if len(h) < k {
			h = append(h, key)
			// sift up
			for j := len(h) - 1; j > 0; {
				p := (j - 1) / 2
				if h[p] <= h[j] {
					break
				}
				h[p], h[j] = h[j], h[p]
				j = p
			}
			continue
		}
		if key <= h[0] {
			continue
		}
		h[0] = key
		// sift down
		for j := 0; ; {
			l := 2*j + 1
			if l >= k {
				break
			}
			m := l
			if r := l + 1; r < k && h[r] < h[l] {
				m = r
			}
			if h[j] <= h[m] {
				break
			}
			h[j], h[m] = h[m], h[j]
			j = m
		}
	}
	return h
}
