package optim

import (
	"fmt"

	"github.com/ternml/tern/pkg/model"
)

// SplitProjected separates the parameters that projection and low-rank
// optimizers (GaLore, APOLLO, GRASS) act on — the 2-D attention and MLP
// weights — from the rest (embedding, head, norms), which the reference
// training scripts give to a paired AdamW at the same learning rate.
func SplitProjected(params []*model.Param) (projected, rest []*model.Param) {
	for _, p := range params {
		switch p.Role {
		case model.RoleAttnQK, model.RoleAttnV, model.RoleAttnO, model.RoleMLP:
			if len(p.Shape) == 2 {
				projected = append(projected, p)
				continue
			}
		}
		rest = append(rest, p)
	}
	return projected, rest
}

// Composite steps several optimizers over disjoint parameter sets as one. Its
// name is the first part's; state names must not collide.
type Composite struct {
	parts []Optimizer
}

// NewComposite joins parts, which must own disjoint parameters.
func NewComposite(parts ...Optimizer) (*Composite, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("composite optimizer: no parts")
	}
	seen := map[string]bool{}
	for _, p := range parts {
		for _, t := range p.State() {
			if seen[t.Name] {
				return nil, fmt.Errorf("composite optimizer: state %q held by two parts", t.Name)
			}
			seen[t.Name] = true
		}
	}
	return &Composite{parts: parts}, nil
}

// Name implements Optimizer.
func (c *Composite) Name() string { return c.parts[0].Name() }

// Step implements Optimizer.
func (c *Composite) Step(lr float64) {
	for _, p := range c.parts {
		p.Step(lr)
	}
}

// StateBytes implements Optimizer.
func (c *Composite) StateBytes() int64 {
	var n int64
	for _, p := range c.parts {
		n += p.StateBytes()
	}
	return n
}

// State implements Optimizer.
func (c *Composite) State() []NamedTensor {
	var ts []NamedTensor
	for _, p := range c.parts {
		ts = append(ts, p.State()...)
	}
	return ts
}

// SetState implements Optimizer: each tensor goes to the part that exports a
// tensor of that name.
func (c *Composite) SetState(ts []NamedTensor) error {
	owner := map[string]int{}
	for i, p := range c.parts {
		for _, t := range p.State() {
			owner[t.Name] = i
		}
	}
	byPart := make([][]NamedTensor, len(c.parts))
	for _, t := range ts {
		i, ok := owner[t.Name]
		if !ok {
			return fmt.Errorf("optimizer state %q: not a tensor of this optimizer", t.Name)
		}
		byPart[i] = append(byPart[i], t)
	}
	for i, p := range c.parts {
		if err := p.SetState(byPart[i]); err != nil {
			return err
		}
	}
	return nil
}
