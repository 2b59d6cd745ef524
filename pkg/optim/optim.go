package optim

import (
	"fmt"
	"math"

	"github.com/ternml/tern/pkg/model"
)

// Optimizer updates parameters in place from their accumulated gradients.
type Optimizer interface {
	// Name is the spec name of the optimizer ("adamw").
	Name() string
	// Step applies one update with learning rate lr to every parameter.
	Step(lr float64)
	// StateBytes is the exact number of bytes of optimizer state held.
	StateBytes() int64
	// State exports the optimizer state as named tensors. The slices alias the
	// live state: copy them if the optimizer keeps stepping.
	State() []NamedTensor
	// SetState restores state exported by State; every tensor must be present
	// with the right length.
	SetState(ts []NamedTensor) error
}

// NamedTensor is one piece of optimizer state. Names are
// "optim.<parameter name>.<slot>"; scalar counters use a one-element tensor.
type NamedTensor struct {
	Name  string
	Shape []int
	Data  []float32
}

func stateName(p *model.Param, slot string) string { return "optim." + p.Name + "." + slot }

// restore copies ts into the named destinations, checking that every
// destination is covered exactly once with the right length.
func restore(ts []NamedTensor, dst map[string][]float32) error {
	seen := make(map[string]bool, len(ts))
	for _, t := range ts {
		d, ok := dst[t.Name]
		if !ok {
			return fmt.Errorf("optimizer state %q: not a tensor of this optimizer", t.Name)
		}
		if seen[t.Name] {
			return fmt.Errorf("optimizer state %q: given twice", t.Name)
		}
		if len(t.Data) != len(d) {
			return fmt.Errorf("optimizer state %q: %d values, want %d", t.Name, len(t.Data), len(d))
		}
		seen[t.Name] = true
		copy(d, t.Data)
	}
	for name := range dst {
		if !seen[name] {
			return fmt.Errorf("optimizer state %q: missing", name)
		}
	}
	return nil
}

// restoreStepped is restore for an optimizer named opt whose state also holds
// the step counter "optim.<opt>.step": it restores ts into dst plus the
// counter and returns the step count. Errors carry the optimizer's name.
func restoreStepped(opt string, ts []NamedTensor, dst map[string][]float32) (int64, error) {
	counter := "optim." + opt + ".step"
	step := make([]float32, 2)
	dst[counter] = step
	if err := restore(ts, dst); err != nil {
		return 0, fmt.Errorf("%s: %w", opt, err)
	}
	t, err := joinCount(step)
	if err != nil {
		return 0, fmt.Errorf("%s: %s: %w", opt, counter, err)
	}
	return t, nil
}

// liveState maps the names of an optimizer's exported state to its live
// buffers, leaving out its step counter (restoreStepped supplies that).
func liveState(opt string, ts []NamedTensor) map[string][]float32 {
	dst := make(map[string][]float32, len(ts))
	for _, t := range ts {
		if t.Name != "optim."+opt+".step" {
			dst[t.Name] = t.Data
		}
	}
	return dst
}

// decayed is tern's weight-decay policy, shared by every optimizer: matrices
// (embedding, head, attention and MLP weights) are decayed, vectors (norm
// weights) are not, as in the GPT-2/LLaMA reference training scripts.
func decayed(p *model.Param) bool { return len(p.Shape) >= 2 }

// adamScalars are the per-step constants of Adam's bias-corrected update in
// PyTorch's form (Kingma & Ba 2015, Algorithm 1; torch.optim.Adam):
// θ ← θ − (lr/(1−β1ᵗ))·m / (√v/√(1−β2ᵗ) + ε).
type adamScalars struct {
	stepSize, bc2Sqrt, eps, b1, b2 float32
}

func newAdamScalars(t int64, lr, beta1, beta2, eps float64) adamScalars {
	bc1 := 1 - math.Pow(beta1, float64(t))
	bc2 := 1 - math.Pow(beta2, float64(t))
	return adamScalars{
		stepSize: float32(lr / bc1), bc2Sqrt: float32(math.Sqrt(bc2)),
		eps: float32(eps), b1: float32(beta1), b2: float32(beta2),
	}
}
