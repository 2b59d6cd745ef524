package tensor

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// GEMM backend names accepted by SetGemmBackend and the TERN_GEMM variable.
const (
	// BackendAsm is the blocked GEMM with the AVX2/FMA assembly micro-kernel
	// (amd64 with AVX2 and FMA only). Deterministic.
	BackendAsm = "asm"
	// BackendGo is the same blocked GEMM with the portable Go micro-kernel.
	// Deterministic; the results differ from "asm" in the last bits because
	// the assembly fuses multiply and add.
	BackendGo = "go"
	// BackendOpenBLAS calls cblas_sgemm from libopenblas.so.0, loaded at run
	// time without cgo. A speed reference: its results may depend on the
	// thread count.
	BackendOpenBLAS = "openblas"
)

// gemmEnv names the environment variable read once at start-up to pick the
// GEMM backend (for example TERN_GEMM=go).
const gemmEnv = "TERN_GEMM"

type gemmKind int32

const (
	gemmAsm gemmKind = iota
	gemmGo
	gemmOpenBLAS
)

func (g gemmKind) String() string {
	switch g {
	case gemmAsm:
		return BackendAsm
	case gemmGo:
		return BackendGo
	default:
		return BackendOpenBLAS
	}
}

var gemmCurrent atomic.Int32

// gemmInitErr records a TERN_GEMM value that could not be honoured, so that
// callers with a logger can report it (GemmInitError).
var gemmInitErr error

func init() {
	gemmCurrent.Store(int32(defaultGemm()))
	if name := os.Getenv(gemmEnv); name != "" {
		if err := SetGemmBackend(name); err != nil {
			gemmInitErr = fmt.Errorf("%s=%q ignored, using %q: %w", gemmEnv, name, GemmBackend(), err)
		}
	}
}

func defaultGemm() gemmKind {
	if hasAsmKernel {
		return gemmAsm
	}
	return gemmGo
}

func currentGemm() gemmKind { return gemmKind(gemmCurrent.Load()) }

// GemmInitError returns why the TERN_GEMM setting at start-up was not applied,
// or nil if it was applied or unset.
func GemmInitError() error { return gemmInitErr }

// GemmBackend returns the name of the backend Gemm uses now.
func GemmBackend() string { return currentGemm().String() }

// GemmBackends lists the backend names usable in this process, the default
// first. "openblas" is listed only when the library loads.
func GemmBackends() []string {
	var names []string
	if hasAsmKernel {
		names = append(names, BackendAsm)
	}
	names = append(names, BackendGo)
	if loadOpenBLAS() == nil {
		names = append(names, BackendOpenBLAS)
	}
	return names
}

// SetGemmBackend makes Gemm use the named backend from now on. It fails,
// leaving the backend unchanged, if the name is unknown or the backend cannot
// run here (no AVX2/FMA for "asm", no libopenblas for "openblas").
func SetGemmBackend(name string) error {
	var kind gemmKind
	switch strings.ToLower(strings.TrimSpace(name)) {
	case BackendAsm:
		if !hasAsmKernel {
			return fmt.Errorf("gemm backend %q: needs amd64 with AVX2 and FMA (and no purego build tag); use %q", name, BackendGo)
		}
		kind = gemmAsm
	case BackendGo:
		kind = gemmGo
	case BackendOpenBLAS:
		if err := loadOpenBLAS(); err != nil {
			return fmt.Errorf("gemm backend %q: %w", name, err)
		}
		kind = gemmOpenBLAS
	default:
		return fmt.Errorf("gemm backend %q unknown: allowed are %q, %q, %q", name, BackendAsm, BackendGo, BackendOpenBLAS)
	}
	gemmCurrent.Store(int32(kind))
	return nil
}
