package train

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/hf"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/safetensors"
)

func exportModel(t *testing.T, c model.Config, seed uint64) (string, *model.Model) {
	t.Helper()
	m, err := model.New(c, seed, false)
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, p := range m.Params() {
		ts = append(ts, safetensors.F32(p.Name, p.Shape, p.W))
	}
	dir := filepath.Join(t.TempDir(), "hf")
	if _, err := hf.Write(dir, c, ts, hf.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

// A job with model.init: hf:DIR starts from the directory's weights, not
// from its seed; a resumed one from its checkpoint.
func TestModelInitFromHF(t *testing.T) {
	job := tinyJob(t, 2)
	c, err := job.Spec.Model.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	dir, src := exportModel(t, c, 12345)
	job = tinyJob(t, 2, "model.init=hf:"+dir)
	r, err := newRunner(context.Background(), job, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range r.params {
		for j, w := range src.Params()[i].W {
			if math.Float32bits(p.W[j]) != math.Float32bits(w) {
				t.Fatalf("%s[%d] = %g after model.init, want the directory's %g", p.Name, j, p.W[j], w)
			}
		}
	}

	other := c
	other.FFN += 8
	bad, _ := exportModel(t, other, 1)
	job = tinyJob(t, 2, "model.init=hf:"+bad)
	_, err = newRunner(context.Background(), job, Options{})
	if err == nil || !strings.Contains(err.Error(), "spec.model.init") || !strings.Contains(err.Error(), "intermediate_size") {
		t.Fatalf("model.init with another ffn: %v", err)
	}
	job = tinyJob(t, 2, "model.init=hf:"+filepath.Join(t.TempDir(), "missing"))
	if _, err = newRunner(context.Background(), job, Options{}); err == nil || !strings.Contains(err.Error(), "no config.json") {
		t.Fatalf("model.init with a missing directory: %v", err)
	}
}
