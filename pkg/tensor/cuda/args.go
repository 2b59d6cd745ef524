package cuda

import (
	"fmt"
	"math"
	"unsafe"
)

// maxKernelArgs bounds the arguments of one kernel (the widest, attention's
// backward, takes 14).
const maxKernelArgs = 24

// argPack holds one launch's kernel arguments in the form cuLaunchKernel
// wants: params[i] points at the value of argument i. Each value sits in its
// own 8-byte slot, little-endian, so a 4-byte int or float is read from the
// slot's first bytes. The driver copies the values at launch, so one pack is
// reused for every launch; it must stay at a fixed address while the driver
// reads it (the device pins it for its lifetime).
type argPack struct {
	slots  [maxKernelArgs]uint64
	params [maxKernelArgs]uintptr
	n      int
	err    error
}

func (p *argPack) reset() { p.n, p.err = 0, nil }

func (p *argPack) put(v uint64) {
	if p.n == maxKernelArgs {
		p.err = fmt.Errorf("more than %d kernel arguments", maxKernelArgs)
		return
	}
	p.slots[p.n] = v
	p.n++
}

// bindParams points params[i] at slots[i]; a pack whose address is fixed
// (pinned) needs this once.
func (p *argPack) bindParams() {
	for i := range p.params {
		p.params[i] = uintptr(unsafe.Pointer(&p.slots[i]))
	}
}

// ptr adds a device pointer (8 bytes).
func (p *argPack) ptr(d uintptr) *argPack { p.put(uint64(d)); return p }

// i32 adds a C int; v must fit in 32 bits.
func (p *argPack) i32(v int) *argPack {
	if v < math.MinInt32 || v > math.MaxInt32 {
		p.err = fmt.Errorf("kernel argument %d is %d, which does not fit a 32-bit int", p.n, v)
	}
	p.put(uint64(uint32(int32(v))))
	return p
}

// i64 adds a C long long.
func (p *argPack) i64(v int) *argPack { p.put(uint64(int64(v))); return p }

// f32 adds a C float.
func (p *argPack) f32(v float32) *argPack { p.put(uint64(math.Float32bits(v))); return p }

// f64 adds a C double.
func (p *argPack) f64(v float64) *argPack { p.put(math.Float64bits(v)); return p }

// paramsPtr is the kernelParams argument of cuLaunchKernel.
func (p *argPack) paramsPtr() uintptr { return uintptr(unsafe.Pointer(&p.params[0])) }

// grid1D is the launch geometry of a grid-stride loop over n elements:
// block threads each, at most maxBlocks blocks (the loop covers the rest).
func grid1D(n, block, maxBlocks int) uint32 {
	if n <= 0 {
		return 0
	}
	return uint32(min((n+block-1)/block, maxBlocks))
}
