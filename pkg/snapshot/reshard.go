package snapshot

import (
	"fmt"
	"slices"
)

// ResolveStep returns the step directory that path names: path itself when
// it holds a manifest, else the newest complete step under the checkpoint
// root path. It is what Load reads, for a reader that needs the manifest
// (which file holds which rows) before choosing what to load.
func ResolveStep(path string) (string, error) {
	stepDir, err := resolve(path)
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	return stepDir, nil
}

// AssembleRows writes rows [lo, hi) of the global tensor name, held as the
// row shards parts, into dst as float32, row-major: the reader's rows of a
// tensor a checkpoint holds under another sharding (another pipeline depth,
// another vocabulary split). tail is the tensor's shape past the first
// dimension, which every part's global shape must share; the parts' first
// global dimension may differ from the reader's (vocabulary padding, which
// depends on the number of stages).
//
// Rows at or past valid are padding: they are taken from no part and dst
// keeps what it holds there, so the caller decides what a padded row is in
// its own layout. Every row of [lo, min(hi, valid)) must be held by exactly
// one part.
func AssembleRows(name string, parts []Tensor, tail []int, lo, hi, valid int, dst []float32) error {
	rowElems := 1
	for _, d := range tail {
		rowElems *= d
	}
	if lo < 0 || hi < lo || len(dst) != (hi-lo)*rowElems {
		return fmt.Errorf("tensor %s: rows [%d, %d) of %d values each do not fit %d values", name, lo, hi, rowElems, len(dst))
	}
	end := min(hi, valid)
	seen := make([]bool, max(end-lo, 0))
	for _, s := range parts {
		g := s.GlobalShape
		if len(g) != len(tail)+1 || !slices.Equal(g[1:], tail) {
			return fmt.Errorf("tensor %s has global shape %v, want [N %v]", name, g, tail)
		}
		a, b := max(s.RowLo, lo), min(s.RowHi, end)
		if a >= b {
			continue // no rows wanted here, or only padding
		}
		v, err := s.Float32s()
		if err != nil {
			return fmt.Errorf("tensor %s rows [%d, %d): %w", name, s.RowLo, s.RowHi, err)
		}
		if len(v) != (s.RowHi-s.RowLo)*rowElems {
			return fmt.Errorf("tensor %s rows [%d, %d) holds %d values, want %d", name, s.RowLo, s.RowHi, len(v), (s.RowHi-s.RowLo)*rowElems)
		}
		for r := a; r < b; r++ {
			if seen[r-lo] {
				return fmt.Errorf("tensor %s: row %d is held by two shards", name, r)
			}
			seen[r-lo] = true
		}
		copy(dst[(a-lo)*rowElems:(b-lo)*rowElems], v[(a-s.RowLo)*rowElems:(b-s.RowLo)*rowElems])
	}
	if i := slices.Index(seen, false); i >= 0 {
		return fmt.Errorf("tensor %s: row %d of %d is in no shard (is a pipeline stage's file missing?)", name, lo+i, valid)
	}
	return nil
}
