package train

import (
	"fmt"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/model"
	"github.com/ternml/tern/pkg/optim"
	"github.com/ternml/tern/pkg/spec"
)

// newOptimizer builds the optimizer that spec.optimizer names over params.
// The configurations come resolved from the spec (defaults filled from
// pkg/optim's reference values); what the spec cannot know is added here:
// Adam-mini's head size from the model, APOLLO's projection seed from
// spec.seed (APOLLO's projections, GRASS's samples), and the AdamW that the projection optimizers' reference code
// runs on the parameters they do not project.
//
// g is the data-parallel group (nil for one replica), through which DeMo
// exchanges its compressed momentum.
func newOptimizer(job *spec.TrainingJob, cfg model.Config, params []*model.Param, g *comm.Group) (optim.Optimizer, error) {
	o := &job.Spec.Optimizer
	var (
		opt optim.Optimizer
		err error
	)
	switch o.Name {
	case "adamw":
		opt, err = optim.NewAdamW(params, o.AdamWConfig())
	case "adafactor":
		opt, err = optim.NewAdafactor(params, o.AdafactorConfig())
	case "came":
		opt, err = optim.NewCAME(params, o.CAMEConfig())
	case "adam-mini":
		opt, err = optim.NewAdamMini(params, o.AdamMiniConfig().ForModel(cfg))
	case "galore":
		opt, err = optim.NewGaLoreRouted(params, o.GaLoreConfig(), restAdamW(o))
	case "apollo", "apollo-mini":
		c := o.ApolloConfig()
		// Every rank derives the same projections from the job seed, so
		// they need no exchange and a resumed run draws the same ones.
		c.Seed = job.Spec.Seed
		opt, err = optim.NewApolloRouted(params, c, restAdamW(o))
	case "microadam":
		opt, err = optim.NewMicroAdam(params, o.MicroAdamConfig())
	case "grass":
		c := o.GrassConfig()
		c.Seed = job.Spec.Seed // sampled selections agree on every rank
		opt, err = optim.NewGrassRouted(params, c, restAdamW(o))
	case "demo":
		var gather optim.Gatherer
		if g != nil {
			gather = g
		}
		opt, err = optim.NewDemo(params, o.DemoConfig(), gather)
	default:
		return nil, fmt.Errorf("spec.optimizer.name: %q is not supported (allowed: %v)", o.Name, spec.OptimizerNames)
	}
	if err != nil {
		return nil, fmt.Errorf("spec.optimizer (%s): %w", o.Name, err)
	}
	return opt, nil
}

// restAdamW is the AdamW that GaLore, APOLLO and GRASS pair with for the embedding,
// head and norms. Their reference training scripts pass the same betas, ε
// and weight decay to both and step the rest with the Hugging Face AdamW
// they copy, so the whole model sees one convention for where ε enters.
func restAdamW(o *spec.OptimizerSpec) optim.AdamWConfig {
	c := o.AdamWConfig()
	c.Convention = optim.AdamWHF
	return c
}
