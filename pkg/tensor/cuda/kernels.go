package cuda

import (
	_ "embed"
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

// kernelSource is the CUDA C of every non-GEMM kernel, compiled once per
// device by NVRTC.
//
//go:embed kernels.cu
var kernelSource string

// kernelNames are the extern "C" kernels the device looks up after loading
// the module; a test checks each is defined in kernelSource.
var kernelNames = []string{
	"scale_f32", "sumsq_partial", "sumsq_final", "f32_to_bf16", "gather_columns",
	"embedding_fwd", "embedding_bwd",
	"rmsnorm_fwd", "rmsnorm_bwd_dx", "rmsnorm_bwd_dw_partial", "rmsnorm_bwd_dw_final",
	"rope", "swiglu_fwd", "swiglu_bwd",
	"attn_fwd", "attn_bwd_dot", "attn_bwd_dq", "attn_bwd_dkv",
	"attn_fwd_tiled2", "attn_bwd_dq_tiled2", "attn_bwd_dkv_tiled2",
	"attn_fwd_tiled4", "attn_bwd_dq_tiled4", "attn_bwd_dkv_tiled4",
	"ce_stats", "ce_bwd", "adamw_torch", "adamw_hf",
	"attn_pack_bf16", "attn_unpack_f32", "attn_tc_softmax", "attn_tc_dsoftmax", "adam_mini",
	"adam_mini_partial", "adam_mini_v", "adam_mini_apply", "f32_to_bf16_2d",
}

// nvrtcOptions are the compiler flags for a device of compute capability
// major.minor: native code (CUBIN) for that architecture, or PTX for the
// driver to compile when ptx is set. No fast-math: kernels keep IEEE
// division and square roots so they stay close to the CPU's results.
func nvrtcOptions(major, minor int, ptx bool) []string {
	arch := fmt.Sprintf("--gpu-architecture=sm_%d%d", major, minor)
	if ptx {
		arch = fmt.Sprintf("--gpu-architecture=compute_%d%d", major, minor)
	}
	return []string{arch, "--std=c++17", "-default-device"}
}

// cStrings turns opts into NUL-terminated C strings and returns the pointer
// array nvrtcCompileProgram takes, pinned through pin.
func cStrings(opts []string, pin *runtime.Pinner) []*byte {
	out := make([]*byte, len(opts))
	for i, o := range opts {
		b := append([]byte(o), 0)
		pin.Pin(&b[0])
		out[i] = &b[0]
	}
	if len(out) > 0 {
		pin.Pin(&out[0])
	}
	return out
}

// compile builds src for compute capability major.minor and returns a module
// image (CUBIN, or PTX text if asPTX) for cuModuleLoadData.
func compile(src, name string, major, minor int, asPTX bool) ([]byte, error) {
	var prog uintptr
	if err := checkNVRTC("compile", "nvrtcCreateProgram", nvrtcCreateProgram(&prog, src, name, 0, 0, 0)); err != nil {
		return nil, err
	}
	defer nvrtcDestroyProgram(&prog)
	var pin runtime.Pinner
	defer pin.Unpin()
	opts := nvrtcOptions(major, minor, asPTX)
	cs := cStrings(opts, &pin)
	if r := nvrtcCompileProgram(prog, int32(len(cs)), &cs[0]); r != 0 {
		var n uintptr
		nvrtcGetProgramLogSize(prog, &n)
		log := make([]byte, n+1)
		nvrtcGetProgramLog(prog, &log[0])
		return nil, fmt.Errorf("NVRTC compile of %s (%s): %s\n%s", name, strings.Join(opts, " "), r, strings.TrimRight(string(log), "\x00\n"))
	}
	getSize, get := nvrtcGetCUBINSize, nvrtcGetCUBIN
	what := "CUBIN"
	if asPTX {
		getSize, get, what = nvrtcGetPTXSize, nvrtcGetPTX, "PTX"
	}
	var n uintptr
	if err := checkNVRTC("compile", "nvrtcGet"+what+"Size", getSize(prog, &n)); err != nil {
		return nil, err
	}
	img := make([]byte, n+1) // PTX is NUL-terminated text; one spare byte is harmless for CUBIN
	if err := checkNVRTC("compile", "nvrtcGet"+what, get(prog, &img[0])); err != nil {
		return nil, err
	}
	return img, nil
}

// loadModule compiles kernelSource for the device and returns the module and
// every kernel in kernelNames. It tries native code first and falls back to
// PTX (an NVRTC older than the GPU knows no sm_ code for it).
func loadModule(major, minor int) (uintptr, map[string]uintptr, error) {
	img, err := compile(kernelSource, "tern_kernels.cu", major, minor, false)
	if err != nil {
		var err2 error
		if img, err2 = compile(kernelSource, "tern_kernels.cu", major, minor, true); err2 != nil {
			return 0, nil, fmt.Errorf("%w (and as PTX: %v)", err, err2)
		}
	}
	var mod uintptr
	if err := checkCU("load kernels", "cuModuleLoadData", cuModuleLoadData(&mod, unsafe.Pointer(&img[0]))); err != nil {
		return 0, nil, err
	}
	runtime.KeepAlive(img)
	fns := make(map[string]uintptr, len(kernelNames))
	for _, k := range kernelNames {
		var fn uintptr
		if err := checkCU("load kernels", "cuModuleGetFunction("+k+")", cuModuleGetFunction(&fn, mod, k)); err != nil {
			cuModuleUnload(mod)
			return 0, nil, err
		}
		fns[k] = fn
	}
	return mod, fns, nil
}
