package optim

import (
	"fmt"

	"github.com/ternml/tern/pkg/model"
)

// Memory planning: the functions below compute, from parameter shapes alone,
// the bytes each optimizer's StateBytes would report once built over
// parameters of those shapes, so a job's memory can be predicted before any
// buffer is allocated. Each mirrors its optimizer's constructor; the tests
// build every optimizer and require equality, so a change to a constructor
// that is not carried over here fails them.

// ParamShape is a parameter as an optimizer's state layout sees it: its name
// (state names derive from it), role (routing, Adam-mini's blocks) and the
// shape held locally.
type ParamShape struct {
	Name  string     `json:"name"`
	Role  model.Role `json:"role"`
	Shape []int      `json:"shape"`
}

// Size is the number of elements of the shape.
func (p ParamShape) Size() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// ShapesOf lists the shapes of built parameters.
func ShapesOf(params []*model.Param) []ParamShape {
	out := make([]ParamShape, len(params))
	for i, p := range params {
		out[i] = ParamShape{Name: p.Name, Role: p.Role, Shape: append([]int(nil), p.Shape...)}
	}
	return out
}

// projectedRole is SplitProjected's rule: 2-D attention and MLP weights go to
// the projection optimizer, everything else to the paired AdamW.
func projectedRole(role model.Role, dims int) bool {
	switch role {
	case model.RoleAttnQK, model.RoleAttnV, model.RoleAttnO, model.RoleMLP:
		return dims == 2
	}
	return false
}

// ProjectedShape reports whether the projection optimizers (GaLore, APOLLO,
// GRASS) take the parameter of this shape, as SplitProjected routes it.
func ProjectedShape(s ParamShape) bool { return projectedRole(s.Role, len(s.Shape)) }

// SplitProjectedShapes is SplitProjected for shapes.
func SplitProjectedShapes(shapes []ParamShape) (projected, rest []ParamShape) {
	for _, s := range shapes {
		if projectedRole(s.Role, len(s.Shape)) {
			projected = append(projected, s)
		} else {
			rest = append(rest, s)
		}
	}
	return projected, rest
}

// PlanConfigs holds the configuration of every optimizer PlanStateBytes can
// plan; only the one named is read (plus AdamW for the routed composites,
// whose rest is stepped by AdamW).
type PlanConfigs struct {
	AdamW     AdamWConfig
	Adafactor AdafactorConfig
	CAME      CAMEConfig
	AdamMini  AdamMiniConfig
	GaLore    GaLoreConfig
	Apollo    ApolloConfig // apollo and apollo-mini
	MicroAdam MicroAdamConfig
	Grass     GrassConfig
	Demo      DemoConfig
}

// PlanStateBytes is the StateBytes of the optimizer the job spec names
// (spec.optimizer.name) built over parameters of the given shapes, the
// projection optimizers routed as their Routed constructors do (the
// projected weights to them, the rest to AdamW).
func PlanStateBytes(name string, shapes []ParamShape, c PlanConfigs) (int64, error) {
	switch name {
	case "adamw":
		return AdamWStateBytes(shapes), nil
	case "adafactor":
		return AdafactorStateBytes(shapes, c.Adafactor), nil
	case "came":
		return CAMEStateBytes(shapes), nil
	case "adam-mini":
		return AdamMiniStateBytes(shapes, c.AdamMini)
	case "microadam":
		sizes := make([]int, len(shapes))
		for i, s := range shapes {
			sizes[i] = s.Size()
		}
		return MicroAdamStateBytes(sizes, c.MicroAdam), nil
	case "demo":
		return DemoStateBytes(shapes), nil
	case "galore", "apollo", "apollo-mini", "grass":
		proj, rest := SplitProjectedShapes(shapes)
		var n int64
		switch name {
		case "galore":
			n = GaLoreStateBytes(proj, c.GaLore)
		case "grass":
			n = GrassStateBytes(proj, c.Grass)
		default:
			n = ApolloStateBytes(proj, c.Apollo)
		}
		return n + AdamWStateBytes(rest), nil
	}
	return 0, fmt.Errorf("plan optimizer state: optimizer %q has no memory plan (allowed: adamw, adafactor, came, adam-mini, galore, apollo, apollo-mini, microadam, grass, demo)", name)
}

// PlanTransientBytes is the memory the optimizer the job spec names holds
// only during some steps, on top of its state, when its steps run on up to
// workers goroutines: GaLore's SVD buffers at projection refreshes
// (GaLoreTransientBytes); 0 for the others. (GRASS's full gradients at
// selection steps are gradient memory: PlanGradElems.)
func PlanTransientBytes(name string, shapes []ParamShape, c PlanConfigs, workers int) int64 {
	if name != "galore" {
		return 0
	}
	proj, _ := SplitProjectedShapes(shapes)
	return GaLoreTransientBytes(proj, c.GaLore, workers)
}

// AdamWStateBytes is AdamW.StateBytes: m and v per element and the step.
func AdamWStateBytes(shapes []ParamShape) int64 {
	var n int64
	for _, s := range shapes {
		n += int64(s.Size())
	}
	return 8*n + 8
}

// factoredStateElems counts Adafactor-style second-moment state: R and C for
// tensors of two or more axes (factorOf), the full V otherwise.
func factoredStateElems(s ParamShape) (rowCol, full int64) {
	if f, ok := factorOf(s.Shape); ok {
		return int64(f.batch * (f.rows + f.cols)), 0
	}
	return 0, int64(s.Size())
}

// AdafactorStateBytes is Adafactor.StateBytes for cfg (the first moment only
// when Beta1 > 0).
func AdafactorStateBytes(shapes []ParamShape, cfg AdafactorConfig) int64 {
	var n int64
	for _, s := range shapes {
		rc, full := factoredStateElems(s)
		n += rc + full
		if cfg.Beta1 > 0 {
			n += int64(s.Size())
		}
	}
	return 4*n + 8
}

// CAMEStateBytes is CAME.StateBytes: the first moment, and R, C plus the
// confidence statistics R', C' per factored tensor (V per unfactored one).
func CAMEStateBytes(shapes []ParamShape) int64 {
	var n int64
	for _, s := range shapes {
		rc, full := factoredStateElems(s)
		n += int64(s.Size()) + 2*rc + full
	}
	return 4*n + 8
}

// AdamMiniStateBytes is AdamMini.StateBytes for cfg: the first moment and
// one scalar per block of cfg's partition (cfg.HeadDim must be set for
// attn-qk weights, as NewAdamMini requires).
func AdamMiniStateBytes(shapes []ParamShape, cfg AdamMiniConfig) (int64, error) {
	if err := checkAdamMiniPartition(cfg.Partition); err != nil {
		return 0, err
	}
	n := int64(0)
	for _, s := range shapes {
		block, err := adamMiniBlock(s.Name, s.Role, s.Shape, cfg)
		if err != nil {
			return 0, err
		}
		n += int64(s.Size() + s.Size()/block)
	}
	return 4*n + 8, nil
}

// GaLoreStateBytes is GaLore.StateBytes over projected 2-D weights: per
// weight the r×d projection and two projected moments, and the step.
func GaLoreStateBytes(projected []ParamShape, cfg GaLoreConfig) int64 {
	n := int64(8)
	for _, s := range projected {
		n += galoreParamStateBytes(newProjLayout(s.Shape[0], s.Shape[1], cfg.Rank, cfg.ProjType == GaLoreReverseStd))
	}
	return n
}

// ApolloStateBytes is Apollo.StateBytes over projected 2-D weights: per
// weight two projected moments and the limiter norm, the step and the seed.
func ApolloStateBytes(projected []ParamShape, cfg ApolloConfig) int64 {
	n := int64(8 + 16)
	for _, s := range projected {
		n += apolloParamStateBytes(newProjLayout(s.Shape[0], s.Shape[1], cfg.Rank, false))
	}
	return n
}

// GrassStateBytes is Grass.StateBytes over projected 2-D weights.
func GrassStateBytes(projected []ParamShape, cfg GrassConfig) int64 {
	n := int64(8 + 16)
	for _, s := range projected {
		n += GrassParamStateBytes(s.Shape[0], s.Shape[1], cfg)
	}
	return n
}

// GradPlan is the gradient memory an optimizer leaves the model holding, in
// float32 elements.
type GradPlan struct {
	// Steady is what is held between steps: len(G)+len(GSel) summed over
	// the parameters, as the run summary counts it.
	Steady int64
	// Selection is what a selection step holds on top (GRASS with a
	// gradient-based selection forms the full G of every projected weight
	// for one backward pass in UpdateProjGap, next to GSel); it bounds the
	// peak, since the process keeps those pages once touched.
	Selection int64
}

// PlanGradElems is the gradient memory of parameters of the given shapes
// under the optimizer the spec names: every parameter holds its full G,
// except under GRASS, whose projected weights hold only the r selected rows
// (Param.GSel) between selections.
func PlanGradElems(name string, shapes []ParamShape, c PlanConfigs) GradPlan {
	var g GradPlan
	if name != "grass" {
		for _, s := range shapes {
			g.Steady += int64(s.Size())
		}
		return g
	}
	proj, rest := SplitProjectedShapes(shapes)
	for _, s := range rest {
		g.Steady += int64(s.Size())
	}
	for _, s := range proj {
		g.Steady += int64(min(c.Grass.Rank, s.Shape[0]) * s.Shape[1])
		if c.Grass.Selection != GrassUniform {
			g.Selection += int64(s.Size())
		}
	}
	return g
}
