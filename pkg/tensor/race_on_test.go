//go:build race

package tensor

// raceEnabled: under the race detector sync.Pool drops items at random by
// design, so allocation counts are not meaningful there.
const raceEnabled = true
