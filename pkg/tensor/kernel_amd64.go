//go:build amd64 && !purego

package tensor

import "golang.org/x/sys/cpu"

// hasAsmKernel reports whether kernel6x16AVX2 may run here: it needs AVX2 for
// the 256-bit loads and broadcasts and FMA3 for VFMADD231PS.
var hasAsmKernel = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// kernel6x16AVX2 is the assembly micro-kernel (kernel_amd64.s). It has the
// contract of kernel6x16Go.
//
//go:noescape
func kernel6x16AVX2(kc int, a, b, c *float32, ldc int, alpha, beta float32)

// transpose8AVX2 transposes blocks consecutive 8×8 blocks (pack_amd64.s); see
// transpose8Go for the contract.
//
//go:noescape
func transpose8AVX2(dst *float32, ldd int, src *float32, lds int, blocks int)
