package job

import (
	"fmt"

	"github.com/ternml/tern/pkg/coordinator/sched"
)

// MaxRestartsLimit bounds restartPolicy.maxRestarts.
const MaxRestartsLimit = 10000

// Spec is the part of a TrainingJob the lifecycle needs: its name, its
// layout and its restart budget. The full spec lives beside the job record.
type Spec struct {
	Name string `json:"name"`
	// DP and PP are spec.parallel's data-parallel replicas and pipeline
	// stages; the job has DP×PP ranks.
	DP int `json:"dp"`
	PP int `json:"pp"`
	// MaxRestarts is restartPolicy.maxRestarts: how many times the job may
	// recover from a failure before it fails. 0 means never.
	MaxRestarts int `json:"maxRestarts"`
	// Shrink is restartPolicy.shrink: when failed ranks cannot be replaced
	// before the shrink timer (TimerShrink) fires, the job drops every
	// replica that lost a rank and continues at a smaller DP, no smaller
	// than MinDP; it grows back to DP when slots return.
	Shrink bool `json:"shrink,omitempty"`
	// MinDP is restartPolicy.minData: the smallest DP a shrink may leave
	// (0 means 1). Only meaningful with Shrink.
	MinDP int `json:"minDP,omitempty"`
	// MicroBatches is batch.microBatches, each replica's microbatches per
	// step at DP replicas (0 means 1). A shrunk job keeps the global batch,
	// DP × MicroBatches microbatches per step, so it shrinks only to a DP
	// that divides that number.
	MicroBatches int `json:"microBatches,omitempty"`
}

// Layout is the job's shape for the scheduler.
func (s Spec) Layout() sched.Layout { return sched.Layout{DP: s.DP, PP: s.PP} }

// World is the number of ranks.
func (s Spec) World() int { return s.DP * s.PP }

func (s Spec) validate() error {
	if s.Name == "" {
		return fmt.Errorf("%w: the job has no name", ErrInvalidSpec)
	}
	if s.DP < 1 || s.PP < 1 || s.DP > sched.MaxRanks/s.PP {
		return fmt.Errorf("%w: job %q: DP %d × PP %d: both must be at least 1 and the product at most %d",
			ErrInvalidSpec, s.Name, s.DP, s.PP, sched.MaxRanks)
	}
	if s.MaxRestarts < 0 || s.MaxRestarts > MaxRestartsLimit {
		return fmt.Errorf("%w: job %q: restartPolicy.maxRestarts is %d: allowed 0 to %d",
			ErrInvalidSpec, s.Name, s.MaxRestarts, MaxRestartsLimit)
	}
	if s.MinDP < 0 || s.MinDP > s.DP {
		return fmt.Errorf("%w: job %q: restartPolicy.minData is %d: allowed 1 to DP %d",
			ErrInvalidSpec, s.Name, s.MinDP, s.DP)
	}
	if s.MicroBatches < 0 {
		return fmt.Errorf("%w: job %q: batch.microBatches is %d: must be at least 1", ErrInvalidSpec, s.Name, s.MicroBatches)
	}
	if s.MinDP > 0 && !s.Shrink {
		return fmt.Errorf("%w: job %q: restartPolicy.minData is set but restartPolicy.shrink is off: set both or neither",
			ErrInvalidSpec, s.Name)
	}
	return nil
}

// minDP is the smallest DP a shrink may leave.
func (s Spec) minDP() int { return max(s.MinDP, 1) }

// shrinkTo is the DP a job shrinks to when survivors replicas are left:
// the largest one from minDP up that keeps the global batch whole (it
// divides DP × MicroBatches), or 0 when there is none.
func (s Spec) shrinkTo(survivors int) int {
	global := s.DP * max(s.MicroBatches, 1)
	for d := min(survivors, s.DP-1); d >= s.minDP(); d-- {
		if global%d == 0 {
			return d
		}
	}
	return 0
}
