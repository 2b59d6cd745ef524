package train

import (
	"fmt"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/tensor"
	"github.com/ternml/tern/pkg/tensor/cuda"
)

// computeDevice is the device a rank's model runs on, opened from
// spec.device. The zero value (and nil) is the CPU, which needs nothing.
type computeDevice struct {
	opts  []model.Option // model.WithDevice, or none for the CPU
	dev   tensor.Device  // nil for the CPU
	close func() error
}

// openDevice opens the device spec.device names: nothing for the CPU, a
// cuda.Device (one GPU thread, its kernels compiled) for cuda.
func openDevice(s *spec.JobSpec) (*computeDevice, error) {
	d := s.DeviceSettings()
	switch d.Kind {
	case "cpu":
		return &computeDevice{}, nil
	case "cuda":
		p, err := cuda.ParsePrecision(d.Precision)
		if err != nil {
			return nil, fmt.Errorf("spec.device.precision: %w", err)
		}
		dev, err := cuda.New(cuda.Options{Ordinal: d.GPU, Precision: p})
		if err != nil {
			return nil, fmt.Errorf("spec.device (cuda, GPU %d): %w", d.GPU, err)
		}
		return &computeDevice{opts: []model.Option{model.WithDevice(dev)}, dev: dev, close: dev.Close}, nil
	}
	return nil, fmt.Errorf("spec.device.kind %q unknown (allowed: cpu, cuda)", d.Kind)
}

// sync waits for the device's queued kernels, so the host may read
// parameters (checkpoints, snapshots, other optimizers) after an update.
func (c *computeDevice) sync() {
	if c != nil && c.dev != nil {
		c.dev.Sync()
	}
}

// release frees the device; the model's buffers die with it.
func (c *computeDevice) release() error {
	if c == nil || c.close == nil {
		return nil
	}
	return c.close()
}
