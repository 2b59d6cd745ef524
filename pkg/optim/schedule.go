package optim

import (
	"fmt"
	"math"
)

// Schedule names accepted by NewSchedule.
var ScheduleNames = []string{"cosine", "linear", "constant"}

// Schedule maps a 0-based step to a learning rate: linear warmup from
// peak/warmup to peak over warmup steps, then a decay to minLR at the last
// step (cosine: Loshchilov & Hutter 2017, SGDR eq. 5 without restarts).
type Schedule struct {
	Kind          string
	Peak, Min     float64
	Warmup, Total int
}

// NewSchedule checks the arguments and returns the schedule.
func NewSchedule(kind string, peak, minLR float64, warmup, total int) (Schedule, error) {
	switch kind {
	case "cosine", "linear", "constant":
	default:
		return Schedule{}, fmt.Errorf("schedule %q is not supported (allowed: cosine, linear, constant)", kind)
	}
	if peak <= 0 || minLR < 0 || minLR > peak {
		return Schedule{}, fmt.Errorf("schedule: need 0 <= minLR <= lr and lr > 0, got lr=%g minLR=%g", peak, minLR)
	}
	if warmup < 0 || total < 1 {
		return Schedule{}, fmt.Errorf("schedule: need warmupSteps >= 0 and steps >= 1, got %d, %d", warmup, total)
	}
	return Schedule{Kind: kind, Peak: peak, Min: minLR, Warmup: warmup, Total: total}, nil
}

// LR returns the learning rate for 0-based step s.
func (s Schedule) LR(step int) float64 {
	if step < s.Warmup {
		return s.Peak * float64(step+1) / float64(s.Warmup)
	}
	if s.Kind == "constant" {
		return s.Peak
	}
	span := s.Total - s.Warmup
	if span <= 1 {
		return s.Peak
	}
	frac := float64(step-s.Warmup) / float64(span-1)
	frac = math.Min(math.Max(frac, 0), 1)
	if s.Kind == "linear" {
		return s.Peak + (s.Min-s.Peak)*frac
	}
	return s.Min + 0.5*(s.Peak-s.Min)*(1+math.Cos(math.Pi*frac))
}
