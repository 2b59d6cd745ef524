package train

import (
	"strings"
	"testing"

	"github.com/ternml/tern/pkg/spec"
)

func TestOpenDevice(t *testing.T) {
	cpu, err := openDevice(&spec.JobSpec{}, 0)
	if err != nil || len(cpu.opts) != 0 || cpu.dev != nil {
		t.Fatalf("no device section: %+v, %v; want the CPU with no model options", cpu, err)
	}
	cpu.sync()
	if err := cpu.release(); err != nil {
		t.Error(err)
	}
	if _, err := openDevice(&spec.JobSpec{Device: &spec.DeviceSpec{Kind: "tpu"}}, 0); err == nil || !strings.Contains(err.Error(), "allowed: cpu, cuda") {
		t.Errorf("unknown kind: %v", err)
	}
	if _, err := openDevice(&spec.JobSpec{Device: &spec.DeviceSpec{Kind: "cuda", Precision: "fp8"}}, 0); err == nil || !strings.Contains(err.Error(), "fp32, tf32, bf16") {
		t.Errorf("unknown precision: %v", err)
	}
	// On a machine without a GPU (this test's usual home) the error says
	// which library was missing; with one, the device opens and closes.
	dev, err := openDevice(&spec.JobSpec{Device: &spec.DeviceSpec{Kind: "cuda"}}, 0)
	if err != nil {
		if !strings.Contains(err.Error(), "spec.device (cuda, GPU 0)") || !strings.Contains(err.Error(), "lib") {
			t.Errorf("cuda without a GPU: %v", err)
		}
		return
	}
	if len(dev.opts) != 1 {
		t.Errorf("cuda device gives %d model options, want 1", len(dev.opts))
	}
	if err := dev.release(); err != nil {
		t.Error(err)
	}
}
