package cuda

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// The three libraries' entry points, bound once per process by loadLibs.
// Memory, context and cuBLAS entry points use their _v2 names, which every
// driver since CUDA 4 (and CUDA 13's headers) map the plain names to.
var (
	cuInit                 func(flags uint32) cuResult
	cuDriverGetVersion     func(v *int32) cuResult
	cuDeviceGetCount       func(n *int32) cuResult
	cuDeviceGet            func(dev *int32, ordinal int32) cuResult
	cuDeviceGetName        func(name *byte, n int32, dev int32) cuResult
	cuDeviceGetAttribute   func(v *int32, attr int32, dev int32) cuResult
	cuDevicePrimaryCtxRet  func(ctx *uintptr, dev int32) cuResult
	cuDevicePrimaryCtxRel  func(dev int32) cuResult
	cuCtxSetCurrent        func(ctx uintptr) cuResult
	cuStreamCreate         func(s *uintptr, flags uint32) cuResult
	cuStreamDestroy        func(s uintptr) cuResult
	cuStreamSynchronize    func(s uintptr) cuResult
	cuMemAllocManaged      func(p *unsafe.Pointer, size uintptr, flags uint32) cuResult
	cuMemAlloc             func(p *uintptr, size uintptr) cuResult
	cuMemFree              func(p uintptr) cuResult
	cuMemFreeManaged       func(p unsafe.Pointer) cuResult
	cuMemGetInfo           func(free, total *uintptr) cuResult
	cuMemHostAlloc         func(p *unsafe.Pointer, size uintptr, flags uint32) cuResult
	cuMemFreeHost          func(p unsafe.Pointer) cuResult
	cuMemcpyHtoDAsync      func(dst, src, n, stream uintptr) cuResult
	cuMemcpyDtoHAsync      func(dst, src, n, stream uintptr) cuResult
	cuMemcpyDtoDAsync      func(dst, src, n, stream uintptr) cuResult
	cuMemsetD32Async       func(dst uintptr, v uint32, n uintptr, stream uintptr) cuResult
	cuModuleLoadData       func(mod *uintptr, image unsafe.Pointer) cuResult
	cuModuleUnload         func(mod uintptr) cuResult
	cuModuleGetFunction    func(fn *uintptr, mod uintptr, name string) cuResult
	cuFuncSetAttribute     func(fn uintptr, attr int32, value int32) cuResult
	cuLaunchKernelSym      uintptr // called through purego.SyscallN: ~1 µs cheaper per launch
	nvrtcVersion           func(major, minor *int32) nvrtcResult
	nvrtcCreateProgram     func(prog *uintptr, src, name string, nh int32, hdrs, incs uintptr) nvrtcResult
	nvrtcCompileProgram    func(prog uintptr, nopt int32, opts **byte) nvrtcResult
	nvrtcGetProgramLogSize func(prog uintptr, n *uintptr) nvrtcResult
	nvrtcGetProgramLog     func(prog uintptr, buf *byte) nvrtcResult
	nvrtcGetCUBINSize      func(prog uintptr, n *uintptr) nvrtcResult
	nvrtcGetCUBIN          func(prog uintptr, buf *byte) nvrtcResult
	nvrtcGetPTXSize        func(prog uintptr, n *uintptr) nvrtcResult
	nvrtcGetPTX            func(prog uintptr, buf *byte) nvrtcResult
	nvrtcDestroyProgram    func(prog *uintptr) nvrtcResult
	cublasCreate           func(h *uintptr) cublasStatus
	cublasDestroy          func(h uintptr) cublasStatus
	cublasGetVersion       func(h uintptr, v *int32) cublasStatus
	cublasSetStream        func(h, stream uintptr) cublasStatus
	cublasSetMathMode      func(h uintptr, mode int32) cublasStatus
	cublasSetWorkspace     func(h, ws, size uintptr) cublasStatus
	cublasGemmEx           func(h uintptr, ta, tb, m, n, k int32, alpha *float32, a uintptr, at, lda int32,
		b uintptr, bt, ldb int32, beta *float32, c uintptr, ct, ldc int32, compute, algo int32) cublasStatus
	cublasGemmStridedBatchedEx func(h uintptr, ta, tb, m, n, k int32, alpha *float32, a uintptr, at, lda int32, sa int64,
		b uintptr, bt, ldb int32, sb int64, beta *float32, c uintptr, ct, ldc int32, sc int64, batch, compute, algo int32) cublasStatus
)

// Libs says which files were loaded and their versions.
type Libs struct {
	Driver, NVRTC, CuBLAS string // paths dlopen accepted
	DriverVersion         int    // e.g. 13000 for CUDA 13.0
	NVRTCVersion          [2]int
}

var (
	libsOnce sync.Once
	libsErr  error
	libs     Libs
)

// loadLibs opens the driver, NVRTC and cuBLAS once per process and binds
// every entry point the device uses.
func loadLibs() (Libs, error) {
	libsOnce.Do(func() { libsErr = doLoadLibs() })
	return libs, libsErr
}

func doLoadLibs() error {
	hd, pd, err := open(libDriver)
	if err != nil {
		return err
	}
	hn, pn, err := open(libNVRTC)
	if err != nil {
		return err
	}
	hb, pb, err := open(libCuBLAS)
	if err != nil {
		return err
	}
	libs.Driver, libs.NVRTC, libs.CuBLAS = pd, pn, pb
	if err := bind(hd, "CUDA driver "+pd, map[string]any{
		"cuInit": &cuInit, "cuDriverGetVersion": &cuDriverGetVersion, "cuDeviceGetCount": &cuDeviceGetCount,
		"cuDeviceGet": &cuDeviceGet, "cuDeviceGetName": &cuDeviceGetName, "cuDeviceGetAttribute": &cuDeviceGetAttribute,
		"cuDevicePrimaryCtxRetain": &cuDevicePrimaryCtxRet, "cuDevicePrimaryCtxRelease_v2": &cuDevicePrimaryCtxRel,
		"cuCtxSetCurrent": &cuCtxSetCurrent, "cuStreamCreate": &cuStreamCreate, "cuStreamDestroy_v2": &cuStreamDestroy,
		"cuStreamSynchronize": &cuStreamSynchronize, "cuMemAllocManaged": &cuMemAllocManaged, "cuMemAlloc_v2": &cuMemAlloc,
		"cuMemFree_v2": &cuMemFree, "cuMemGetInfo_v2": &cuMemGetInfo, "cuMemHostAlloc": &cuMemHostAlloc,
		"cuMemFreeHost": &cuMemFreeHost, "cuMemcpyHtoDAsync_v2": &cuMemcpyHtoDAsync, "cuMemcpyDtoHAsync_v2": &cuMemcpyDtoHAsync,
		"cuMemcpyDtoDAsync_v2": &cuMemcpyDtoDAsync, "cuMemsetD32Async": &cuMemsetD32Async,
		"cuModuleLoadData": &cuModuleLoadData, "cuModuleUnload": &cuModuleUnload, "cuModuleGetFunction": &cuModuleGetFunction,
		"cuFuncSetAttribute": &cuFuncSetAttribute,
	}); err != nil {
		return err
	}
	purego.RegisterLibFunc(&cuMemFreeManaged, hd, "cuMemFree_v2") // the same call, typed for managed pointers
	if cuLaunchKernelSym, err = purego.Dlsym(hd, "cuLaunchKernel"); err != nil {
		return fmt.Errorf("CUDA driver %s lacks cuLaunchKernel: %w", pd, err)
	}
	if err := bind(hn, "NVRTC "+pn, map[string]any{
		"nvrtcVersion": &nvrtcVersion, "nvrtcCreateProgram": &nvrtcCreateProgram, "nvrtcCompileProgram": &nvrtcCompileProgram,
		"nvrtcGetProgramLogSize": &nvrtcGetProgramLogSize, "nvrtcGetProgramLog": &nvrtcGetProgramLog,
		"nvrtcGetCUBINSize": &nvrtcGetCUBINSize, "nvrtcGetCUBIN": &nvrtcGetCUBIN, "nvrtcGetPTXSize": &nvrtcGetPTXSize,
		"nvrtcGetPTX": &nvrtcGetPTX, "nvrtcDestroyProgram": &nvrtcDestroyProgram,
	}); err != nil {
		return err
	}
	if err := bind(hb, "cuBLAS "+pb, map[string]any{
		"cublasCreate_v2": &cublasCreate, "cublasDestroy_v2": &cublasDestroy, "cublasGetVersion_v2": &cublasGetVersion,
		"cublasSetStream_v2": &cublasSetStream, "cublasSetMathMode": &cublasSetMathMode,
		"cublasSetWorkspace_v2": &cublasSetWorkspace, "cublasGemmEx": &cublasGemmEx,
		"cublasGemmStridedBatchedEx": &cublasGemmStridedBatchedEx,
	}); err != nil {
		return err
	}
	if err := checkCU("load", "cuInit", cuInit(0)); err != nil {
		return err
	}
	var v int32
	if err := checkCU("load", "cuDriverGetVersion", cuDriverGetVersion(&v)); err != nil {
		return err
	}
	libs.DriverVersion = int(v)
	var ma, mi int32
	if err := checkNVRTC("load", "nvrtcVersion", nvrtcVersion(&ma, &mi)); err != nil {
		return err
	}
	libs.NVRTCVersion = [2]int{int(ma), int(mi)}
	return nil
}

// launch calls cuLaunchKernel with the packed arguments.
func launch(fn uintptr, gx, gy, gz, bx uint32, shmem uint32, stream uintptr, p *argPack) cuResult {
	r, _, _ := purego.SyscallN(cuLaunchKernelSym, fn, uintptr(gx), uintptr(gy), uintptr(gz), uintptr(bx), 1, 1,
		uintptr(shmem), stream, p.paramsPtr(), 0)
	return cuResult(int32(r))
}
