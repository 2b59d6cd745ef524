package spec

import (
	"strings"
	"testing"
)

func TestDeviceSection(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		sets      []string
		want      DeviceSpec
	}{
		{"absent", minimal, nil, DeviceSpec{Kind: "cpu", GPU: GPUAuto, Precision: "fp32"}},
		{"empty section", minimal + "  device: {}\n", nil, DeviceSpec{Kind: "cpu", GPU: GPUAuto, Precision: "fp32"}},
		{"gpu 0 is GPU 0, not auto", minimal + "  device: {kind: cuda, gpu: 0}\n", nil, DeviceSpec{Kind: "cuda", GPU: 0, Precision: "fp32"}},
		{"auto", minimal + "  device: {kind: cuda, gpu: -1}\n", nil, DeviceSpec{Kind: "cuda", GPU: GPUAuto, Precision: "fp32"}},
		{"cuda", minimal + "  device: {kind: cuda, gpu: 3, precision: tf32}\n", nil, DeviceSpec{Kind: "cuda", GPU: 3, Precision: "tf32"}},
		{"--set", minimal, []string{"device.kind=cuda", "device.gpu=1"}, DeviceSpec{Kind: "cuda", GPU: 1, Precision: "fp32"}},
	} {
		j, err := Parse([]byte(c.doc), c.sets)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := j.Spec.DeviceSettings(); got != c.want {
			t.Errorf("%s: device %+v, want %+v", c.name, got, c.want)
		}
	}
	j, err := Parse([]byte(minimal), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(j.CanonicalJSON()), "device") {
		t.Errorf("canonical JSON of a job without a device section mentions it: %s", j.CanonicalJSON())
	}
	for _, c := range []struct{ doc, want string }{
		{"  device: {kind: rocm}\n", `spec.device.kind: "rocm" is not allowed (allowed: cpu, cuda)`},
		{"  device: {kind: cuda, precision: fp16}\n", `spec.device.precision: "fp16" is not allowed (allowed: fp32, tf32, bf16)`},
		{"  device: {kind: cuda, gpu: -2}\n", "spec.device.gpu: -2 is out of range: allowed -1 (auto: the rank's local index) or 0 to 1023"},
	} {
		if _, err := Parse([]byte(minimal+c.doc), nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", strings.TrimSpace(c.doc), err, c.want)
		}
	}
}
