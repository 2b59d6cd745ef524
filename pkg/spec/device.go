package spec

import (
	"slices"
	"strings"
)

// DeviceKinds are the values of spec.device.kind.
var DeviceKinds = []string{"cpu", "cuda"}

// DevicePrecisions are the values of spec.device.precision.
var DevicePrecisions = []string{"fp32", "tf32", "bf16"}

// maxGPUOrdinal bounds spec.device.gpu: no host has more GPUs.
const maxGPUOrdinal = 1023

// GPUAuto is spec.device.gpu's default: each rank takes the GPU of its
// index among the ranks on its machine.
const GPUAuto = -1

// DeviceSpec is spec.device: where each rank computes. A job that leaves
// the section out runs on the CPU (DeviceSettings returns the defaults).
type DeviceSpec struct {
	Kind      string `json:"kind" default:"\"cpu\"" desc:"Where each rank computes: cpu (pure Go kernels on the host's cores) or cuda (an NVIDIA GPU; the CUDA driver, NVRTC and cuBLAS are loaded at run time, so the host needs the driver and those libraries, not a CUDA toolkit at build time)."`
	GPU       int    `json:"gpu" default:"-1" desc:"For kind cuda: the ordinal of the GPU a rank uses, as CUDA numbers them (CUDA_VISIBLE_DEVICES applies), or -1 (auto): the rank's index among the ranks on its machine, modulo the GPUs there, so ternctl train's processes, or a worker's slots, each take their own GPU. A worker's --gpu flag overrides it."`
	Precision string `json:"precision" default:"\"fp32\"" desc:"For kind cuda: the precision of matrix products, fp32, tf32 or bf16 (tensor cores, float32 accumulation); weights, gradients and optimizer state stay float32."`
}

// DeviceSettings returns the job's device, the defaults (the CPU) when the
// section is absent.
func (s *JobSpec) DeviceSettings() DeviceSpec {
	if s.Device != nil {
		d := *s.Device
		if d.Kind == "" {
			d.Kind = "cpu"
		}
		if d.Precision == "" {
			d.Precision = "fp32"
		}
		return d
	}
	return DeviceSpec{Kind: "cpu", GPU: GPUAuto, Precision: "fp32"}
}

// device validates spec.device.
func (v validator) device(s *JobSpec) {
	if s.Device == nil {
		return
	}
	d := s.DeviceSettings()
	if !slices.Contains(DeviceKinds, d.Kind) {
		v.es.add("spec.device.kind", "%q is not allowed (allowed: %s)", d.Kind, strings.Join(DeviceKinds, ", "))
	}
	if !slices.Contains(DevicePrecisions, d.Precision) {
		v.es.add("spec.device.precision", "%q is not allowed (allowed: %s)", d.Precision, strings.Join(DevicePrecisions, ", "))
	}
	if d.GPU < GPUAuto || d.GPU > maxGPUOrdinal {
		v.es.add("spec.device.gpu", "%d is out of range: allowed -1 (auto: the rank's local index) or 0 to %d", d.GPU, maxGPUOrdinal)
	}
}
