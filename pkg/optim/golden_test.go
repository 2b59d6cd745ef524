package optim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/ternml/tern/pkg/model"
)

// Golden runs: each of optim_{adaptive,projection,microadam,grass}.json in
// testdata/golden holds short runs of tern's optimizers (configuration,
// initial weights, per-step learning rates and gradients, tern's weights)
// that scripts/crosscheck replayed against independent float64 PyTorch and
// transformers references (testdata/golden/README.md has the log). The
// writers (TestWriteGolden*, behind -golden-*-out flags) and the checks below
// share one case table per file, so what is checked is what was written.

const goldenDir = "testdata/golden"

// goldenReplayTol bounds |tern's weights now − the stored weights| after a
// replay. The stored weights lie within 1.44e-6 of the float64 references
// (the largest deviation of the cross-check, APOLLO-Mini's √128 step), so a
// replay within 2e-6 keeps tern within about 3.5e-6 of the independent
// references. Replaying unchanged code reproduces the stored values exactly;
// the slack admits a reordering of float32 operations (a few ulps of weights
// of magnitude ≤ 2 compounded over ≤ 30 steps), not a change of formula,
// which moves weights by ≥ 1e-5.
const goldenReplayTol = 2e-6

// readGolden reads and decodes a committed golden file into v.
func readGolden(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, name))
	if err != nil {
		t.Fatalf("golden file: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("golden file %s: %v", name, err)
	}
}

// decodeConfig decodes a stored optimizer configuration into a T, refusing
// fields T does not have (a renamed field must not silently read as zero).
func decodeConfig[T any](raw json.RawMessage) (T, error) {
	var c T
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", raw, err)
	}
	return c, nil
}

// goldenWeights overwrites the weights of ps with a stored initial state
// after checking that the case generator built the same names and shapes.
func goldenWeights(t *testing.T, ps []*model.Param, names []string, shapes [][]int, w0 [][]float64) {
	t.Helper()
	if len(ps) != len(w0) || len(names) != len(w0) || len(shapes) != len(w0) {
		t.Fatalf("stored case has %d parameters, the case table builds %d", len(w0), len(ps))
	}
	for i, p := range ps {
		if p.Name != names[i] || fmt.Sprint(p.Shape) != fmt.Sprint(shapes[i]) {
			t.Fatalf("parameter %d: stored %s %v, the case table builds %s %v", i, names[i], shapes[i], p.Name, p.Shape)
		}
		if len(w0[i]) != len(p.W) {
			t.Fatalf("%s: %d stored initial weights, want %d", p.Name, len(w0[i]), len(p.W))
		}
		for j, w := range w0[i] {
			p.W[j] = float32(w)
		}
	}
}

// setGrads copies stored gradients (exact float32 values) into ps.
func setGrads(t *testing.T, ps []*model.Param, grads [][]float64) {
	t.Helper()
	if len(grads) != len(ps) {
		t.Fatalf("%d stored gradients for %d parameters", len(grads), len(ps))
	}
	for i, p := range ps {
		if len(grads[i]) != len(p.G) {
			t.Fatalf("%s: %d stored gradient values, want %d", p.Name, len(grads[i]), len(p.G))
		}
		for j, g := range grads[i] {
			p.G[j] = float32(g)
		}
	}
}

// checkGoldenWeights fails if any weight of ps is farther than
// goldenReplayTol from the stored one (or either is NaN).
func checkGoldenWeights(t *testing.T, what string, ps []*model.Param, want [][]float64) {
	t.Helper()
	if len(want) != len(ps) {
		t.Fatalf("%s: %d stored weight tensors for %d parameters", what, len(want), len(ps))
	}
	for i, p := range ps {
		if len(want[i]) != len(p.W) {
			t.Fatalf("%s: %s has %d stored weights, want %d", what, p.Name, len(want[i]), len(p.W))
		}
		for j, w := range p.W {
			if d := math.Abs(float64(w) - want[i][j]); !(d <= goldenReplayTol) {
				t.Fatalf("%s: %s[%d] = %.9g, stored %.9g (|diff| %.3g > %g)", what, p.Name, j, w, want[i][j], d, goldenReplayTol)
			}
		}
	}
}

// requireCases fails unless the stored case keys are exactly the table's
// cross-checked keys (pending ones may be absent), each stored once, and at
// least one case was stored.
func requireCases(t *testing.T, file string, stored []string, table map[string]bool) {
	t.Helper()
	if len(stored) == 0 {
		t.Fatalf("%s holds no cases", file)
	}
	seen := map[string]bool{}
	for _, k := range stored {
		if _, ok := table[k]; !ok {
			t.Errorf("%s: case %q is not in the case table", file, k)
		}
		if seen[k] {
			t.Errorf("%s: case %q is stored twice", file, k)
		}
		seen[k] = true
	}
	for k, pending := range table {
		if !pending && !seen[k] {
			t.Errorf("%s: case %q of the case table is missing (regenerate with the writer and cross-check it)", file, k)
		}
	}
}

// TestGoldenFilesUpToDate requires the writers to reproduce the committed
// files byte for byte (leaving out cases not yet cross-checked), so that
// regenerating them is a no-op and the files stay the ones the cross-check
// saw. A deliberate change of a case or of an optimizer's numerics shows up
// here first: rerun the writers and scripts/crosscheck, then commit both.
func TestGoldenFilesUpToDate(t *testing.T) {
	for _, f := range []struct {
		name  string
		write func(t *testing.T, pending bool) []byte
	}{
		{"optim_adaptive.json", goldenAdaptiveFile},
		{"optim_projection.json", goldenProjectionFile},
		{"optim_microadam.json", goldenMicroAdamFile},
		{"optim_grass.json", goldenGrassFile},
	} {
		t.Run(f.name, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join(goldenDir, f.name))
			if err != nil {
				t.Fatal(err)
			}
			if got := f.write(t, false); !bytes.Equal(got, want) {
				t.Errorf("the writer's %s (%d bytes) differs from the committed one (%d bytes) from byte %d", f.name, len(got), len(want), firstDiff(got, want))
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// writeGolden writes a golden file into dir (for the -golden-*-out flags).
func writeGolden(t *testing.T, dir, name string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}
