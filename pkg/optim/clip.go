package optim

import (
	"math"

	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/tensor"
)

// GradNorm returns the global L2 norm of all gradients, accumulated in float64
// in parameter order (deterministic for any core count). A weight whose
// gradient is row-selected (GRASS between refreshes: RowSel set, G nil)
// contributes its selected rows GSel, the only part of its gradient that
// exists.
func GradNorm(params []*model.Param) float64 {
	var s float64
	for _, p := range params {
		s += tensor.SumSquares(heldGrad(p))
	}
	return math.Sqrt(s)
}

// HeldGrad is the gradient buffer p holds this step: G, or GSel when only
// the rows RowSel are computed (GRASS between refreshes). Data-parallel
// replicas exchange exactly these buffers.
func HeldGrad(p *model.Param) []float32 { return heldGrad(p) }

// heldGrad is the gradient buffer p holds: G, or GSel when only selected
// rows are computed.
func heldGrad(p *model.Param) []float32 {
	if p.RowSel != nil && p.G == nil {
		return p.GSel
	}
	return p.G
}

// ClipGradNorm scales all gradients so their global norm is at most maxNorm,
// with PyTorch's clip_grad_norm_ rule coef = maxNorm/(norm+1e-6), applied only
// when coef < 1. It returns the norm before clipping. maxNorm <= 0 disables
// clipping.
func ClipGradNorm(params []*model.Param, maxNorm float64) float64 {
	norm := GradNorm(params)
	ClipToNorm(params, norm, maxNorm)
	return norm
}

// ClipToNorm applies ClipGradNorm's rule given the global norm, computed by
// the caller: over several pipeline stages, the parameters at hand are only
// part of the model whose norm decides the coefficient.
func ClipToNorm(params []*model.Param, norm, maxNorm float64) {
	if maxNorm <= 0 {
		return
	}
	if coef := maxNorm / (norm + 1e-6); coef < 1 {
		for _, p := range params {
			tensor.Scale(float32(coef), heldGrad(p))
		}
	}
}
