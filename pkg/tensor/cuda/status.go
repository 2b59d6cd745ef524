package cuda

import "fmt"

// cuResult is a CUDA driver API status (CUresult, cuda.h).
type cuResult int32

// cuResultNames holds the CUresult values a training process can meet, so
// errors read "CUDA_ERROR_OUT_OF_MEMORY" rather than "2". cuGetErrorName
// covers the rest once the driver is loaded.
var cuResultNames = map[cuResult]string{
	0: "CUDA_SUCCESS", 1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY",
	3: "CUDA_ERROR_NOT_INITIALIZED", 4: "CUDA_ERROR_DEINITIALIZED", 34: "CUDA_ERROR_STUB_LIBRARY",
	35: "CUDA_ERROR_INSUFFICIENT_DRIVER", 46: "CUDA_ERROR_DEVICE_UNAVAILABLE",
	100: "CUDA_ERROR_NO_DEVICE", 101: "CUDA_ERROR_INVALID_DEVICE", 200: "CUDA_ERROR_INVALID_IMAGE",
	201: "CUDA_ERROR_INVALID_CONTEXT", 209: "CUDA_ERROR_NO_BINARY_FOR_GPU", 218: "CUDA_ERROR_INVALID_PTX",
	222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", 300: "CUDA_ERROR_INVALID_SOURCE", 301: "CUDA_ERROR_FILE_NOT_FOUND",
	400: "CUDA_ERROR_INVALID_HANDLE", 500: "CUDA_ERROR_NOT_FOUND", 600: "CUDA_ERROR_NOT_READY",
	700: "CUDA_ERROR_ILLEGAL_ADDRESS", 701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", 702: "CUDA_ERROR_LAUNCH_TIMEOUT",
	715: "CUDA_ERROR_ILLEGAL_INSTRUCTION", 716: "CUDA_ERROR_MISALIGNED_ADDRESS", 719: "CUDA_ERROR_LAUNCH_FAILED",
	801: "CUDA_ERROR_NOT_SUPPORTED", 999: "CUDA_ERROR_UNKNOWN",
}

func (r cuResult) String() string {
	if n, ok := cuResultNames[r]; ok {
		return n
	}
	return fmt.Sprintf("CUresult %d", int32(r))
}

// nvrtcResult is an NVRTC status (nvrtcResult, nvrtc.h).
type nvrtcResult int32

var nvrtcNames = []string{
	"NVRTC_SUCCESS", "NVRTC_ERROR_OUT_OF_MEMORY", "NVRTC_ERROR_PROGRAM_CREATION_FAILURE",
	"NVRTC_ERROR_INVALID_INPUT", "NVRTC_ERROR_INVALID_PROGRAM", "NVRTC_ERROR_INVALID_OPTION",
	"NVRTC_ERROR_COMPILATION", "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE",
	"NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION", "NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION",
	"NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID", "NVRTC_ERROR_INTERNAL_ERROR",
}

func (r nvrtcResult) String() string {
	if r >= 0 && int(r) < len(nvrtcNames) {
		return nvrtcNames[r]
	}
	return fmt.Sprintf("nvrtcResult %d", int32(r))
}

// cublasStatus is a cuBLAS status (cublasStatus_t, cublas_api.h).
type cublasStatus int32

var cublasNames = map[cublasStatus]string{
	0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
	7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

func (s cublasStatus) String() string {
	if n, ok := cublasNames[s]; ok {
		return n
	}
	return fmt.Sprintf("cublasStatus %d", int32(s))
}

// Error is a failed call into CUDA: which call, for what, and the status name.
type Error struct {
	Call   string // "cuMemAllocManaged", "cublasGemmEx", ...
	Op     string // what the device was doing: "Alloc", "Gemm", "kernel rmsnorm_fwd"
	Status string // "CUDA_ERROR_OUT_OF_MEMORY", ...
	Code   int32
}

func (e *Error) Error() string {
	if e.Op == "" {
		return fmt.Sprintf("cuda: %s failed: %s (%d)", e.Call, e.Status, e.Code)
	}
	return fmt.Sprintf("cuda %s: %s failed: %s (%d)", e.Op, e.Call, e.Status, e.Code)
}

// check turns a driver status into an *Error (nil on success).
func checkCU(op, call string, r cuResult) error {
	if r == 0 {
		return nil
	}
	return &Error{Call: call, Op: op, Status: r.String(), Code: int32(r)}
}

func checkNVRTC(op, call string, r nvrtcResult) error {
	if r == 0 {
		return nil
	}
	return &Error{Call: call, Op: op, Status: r.String(), Code: int32(r)}
}

func checkCuBLAS(op, call string, s cublasStatus) error {
	if s == 0 {
		return nil
	}
	return &Error{Call: call, Op: op, Status: s.String(), Code: int32(s)}
}
