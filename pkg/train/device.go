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
func openDevice(s *spec.JobSpec, localRank int) (*computeDevice, error) {
	d := s.DeviceSettings()
	switch d.Kind {
	case "cpu":
		return &computeDevice{}, nil
	case "cuda":
		p, err := cuda.ParsePrecision(d.Precision)
		if err != nil {
			return nil, fmt.Errorf("spec.device.precision: %w", err)
		}
		dev, err := cuda.New(cuda.Options{Ordinal: d.GPU, LocalRank: localRank, Precision: p})
		if err != nil {
			which := fmt.Sprintf("GPU %d", d.GPU)
			if d.GPU == spec.GPUAuto {
				which = fmt.Sprintf("GPU auto, local rank %d", localRank)
			}
			return nil, fmt.Errorf("spec.device (cuda, %s): %w", which, err)
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

// localRank is Options.LocalRank, else the rank's index in its group.
func localRank(o Options) int {
	switch {
	case o.LocalRank != nil:
		return *o.LocalRank
	case o.Group != nil:
		return o.Group.Rank()
	}
	return 0
}
