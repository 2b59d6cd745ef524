package model

import (
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/tensor"
)

// Role says what a parameter is for, so optimizers (Muon-style, Adam-mini,
// GaLore, ...) can route tensors by role instead of matching names.
type Role uint8

// Parameter roles.
const (
	RoleEmbedding Role = iota // input token embedding rows
	RoleAttnQK                // query and key projections
	RoleAttnV                 // value projection
	RoleAttnO                 // attention output projection
	RoleMLP                   // SwiGLU gate, up and down projections
	RoleNorm                  // RMSNorm gains
	RoleHead                  // LM head rows
)

var roleNames = [...]string{"embedding", "attn-qk", "attn-v", "attn-o", "mlp", "norm", "head"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Param is one weight tensor with its gradient. Names and layouts follow the
// Hugging Face LLaMA checkpoint (a Linear weight is [out, in] and computes
// y = x·Wᵀ). A vocabulary-sharded tensor holds global rows
// [RowOffset, RowOffset+Shape[0]) of a GlobalShape tensor; others have
// RowOffset 0 and Shape equal to GlobalShape.
type Param struct {
	Name        string
	Role        Role
	Shape       []int // shape of W as held here
	GlobalShape []int // shape of the whole tensor across shards
	RowOffset   int   // first global row held
	W, G        []float32

	// RowSel, when non-nil, asks the backward pass for only these rows of
	// a 2-D weight's gradient (local row indices, repeats allowed): row j of
	// GSel ([len(RowSel), Shape[1]]) accumulates row RowSel[j] of dW, and G
	// is neither read nor written, so an optimizer that works on selected
	// rows (GRASS) may drop G entirely. Only the attention and MLP linear
	// weights of the blocks honour it; it is nil unless such an optimizer
	// sets it, and then the whole gradient of this weight that exists is
	// GSel. ZeroGrad clears GSel like G.
	RowSel []int32
	GSel   []float32

	dev tensor.Device // holds W and G; nil means the CPU
}

// Device returns the device whose memory holds W and G, where kernels that
// update the parameter (an optimizer step) run. A Param built outside this
// package lives on the CPU.
func (p *Param) Device() tensor.Device {
	if p.dev == nil {
		return tensor.CPU{}
	}
	return p.dev
}

// Size is the number of elements held locally.
func (p *Param) Size() int { return len(p.W) }

// Initialisation constants.
const (
	// initStd is the standard deviation of linear and embedding weights
	// (GPT-2, Radford et al. 2019; LLaMA's initializer_range).
	initStd = 0.02
)

// newParam allocates on dev and initialises rows [lo, hi) of a global tensor
// of shape global. Weights are N(0, std²) drawn row by row from streams keyed
// by (seed, name, global row); std == 0 means a norm gain initialised to 1.
// The values are written by the host into fresh buffers, before any kernel
// sees them (see tensor.Device).
func newParam(dev tensor.Device, name string, role Role, global []int, lo, hi int, std float64, seed uint64) *Param {
	cols := 1
	for _, d := range global[1:] {
		cols *= d
	}
	shape := append([]int{hi - lo}, global[1:]...)
	if len(global) == 1 {
		cols = 1
		shape = []int{hi - lo}
	}
	p := &Param{Name: name, Role: role, Shape: shape, GlobalShape: append([]int(nil), global...), RowOffset: lo, dev: dev}
	p.W = dev.Alloc((hi - lo) * cols)
	p.G = dev.Alloc(len(p.W))
	if std == 0 {
		for i := range p.W {
			p.W[i] = 1
		}
		return p
	}
	// Rows are independent streams, so filling them in parallel gives the
	// same values on any number of cores.
	tensor.ParallelFor(hi-lo, rowGrain(cols), func(a, b int) {
		for r := lo + a; r < lo+b; r++ {
			rng := newRowRNG(seed, name, r)
			row := p.W[(r-lo)*cols : (r-lo+1)*cols]
			for i := range row {
				row[i] = float32(std * rng.normal())
			}
		}
	})
	return p
}

// rowGrain picks a ParallelFor grain for row-wise initialisation: about
// elemsPerChunk elements per chunk so scheduling overhead stays small.
func rowGrain(rowLen int) int {
	const elemsPerChunk = 16384
	if rowLen <= 0 {
		return 1
	}
	return max(1, elemsPerChunk/rowLen)
}

// residualStd is the initial std of the projections that write into the
// residual stream (o_proj, down_proj): GPT-2 (Radford et al. 2019, §2.3)
// scales them by 1/sqrt(N) with N = 2·layers residual additions, keeping the
// residual stream's variance independent of depth at initialisation.
func residualStd(layers int) float64 { return initStd / math.Sqrt(2*float64(layers)) }
