package train

import "math"

// StepReport is what the loop tells its observer after every optimizer step.
// The JSON names are the --metrics-out format and are kept stable.
type StepReport struct {
	Step       int      `json:"step"` // 1-based index of the step just finished
	Steps      int      `json:"-"`    // total steps of the job
	Loss       float64  `json:"loss"` // mean training loss of this step
	LR         float64  `json:"lr"`
	TokensPerS float64  `json:"tokens_per_s"` // this step's tokens / this step's wall time
	StepMS     float64  `json:"step_ms"`
	GradNorm   float64  `json:"grad_norm"` // global L2 norm before clipping
	EvalLoss   *float64 `json:"eval_loss,omitempty"`
	// OptimizerStateBytes is the optimizer's state after this step
	// (optim.Optimizer.StateBytes), for comparing optimizers' memory.
	OptimizerStateBytes int64 `json:"optimizer_state_bytes"`
	// BytesSent and BytesRecv are what this replica put on and took off
	// the wire for the gradient exchange of this step (payload and
	// framing; PayloadSent and PayloadRecv count the payload alone).
	// Zero for a single replica.
	BytesSent   int64   `json:"bytes_sent"`
	BytesRecv   int64   `json:"bytes_recv"`
	PayloadSent int64   `json:"payload_sent"`
	PayloadRecv int64   `json:"payload_recv"`
	ETASeconds  float64 `json:"-"`
}

// Summary is the result of a finished run; `ternctl train -o json` prints it.
type Summary struct {
	Job           string  `json:"job"`
	Optimizer     string  `json:"optimizer"` // spec.optimizer.name
	Steps         int     `json:"steps"`
	FinalLoss     float64 `json:"final_loss"`
	FinalEvalLoss float64 `json:"final_eval_loss"`
	TokensPerS    float64 `json:"tokens_per_s"` // steady state: the first step is left out when there are more
	StepMSMedian  float64 `json:"step_ms_median"`
	PeakRSSBytes  int64   `json:"peak_rss_bytes"`
	Params        int64   `json:"params"`
	WallS         float64 `json:"wall_s"`
	// ModelGFLOPS is achieved training throughput in model FLOPs
	// (model.Config.TrainFLOPsPerToken), recomputation not counted.
	ModelGFLOPS float64 `json:"model_gflop_per_s"`
	Memory      Memory  `json:"memory"`
	// OptimizerStateBytes is Memory.Optimizer, at the top level so that
	// scripts comparing optimizers read it like the other headline numbers.
	OptimizerStateBytes int64 `json:"optimizer_state_bytes"`
	// BytesSentPerStep and BytesRecvPerStep are the largest per-step
	// gradient-exchange traffic of the run (StepReport.BytesSent and
	// BytesRecv), over steps and, for several workers, over workers.
	BytesSentPerStep int64  `json:"bytes_sent_per_step"`
	BytesRecvPerStep int64  `json:"bytes_recv_per_step"`
	Checkpoint       string `json:"checkpoint,omitempty"` // last checkpoint written, if any
	Stopped          bool   `json:"stopped"`              // true if interrupted before the last step
	// WeightsCRC32C is the CRC32C (Castagnoli) of this rank's final
	// parameters' float32 bytes, in parameter order: equal for two runs
	// that trained the same weights bit for bit.
	WeightsCRC32C uint32 `json:"weights_crc32c"`
}

// Observer receives progress from a running loop. Calls come from the loop's
// goroutine, in step order.
type Observer interface {
	Started(info RunInfo)
	Step(r StepReport)
	Log(msg string)
}

// RunInfo describes the run once everything is loaded, before the first step.
type RunInfo struct {
	Job       string
	Optimizer string // spec.optimizer.name
	// OptimizerStateBytes is the optimizer state held (optim.Optimizer.StateBytes).
	OptimizerStateBytes int64
	Params              int64
	StartStep           int // steps already done (non-zero when resuming)
	Steps               int
	TokensPerStep       int
	TrainTokens         int64
	ValTokens           int64
}

// Memory is the exact size of what training keeps resident, by kind, in
// bytes. Peak RSS adds the Go runtime, data and transient buffers.
type Memory struct {
	Weights     int64 `json:"weights_bytes"`
	Grads       int64 `json:"grads_bytes"`
	Optimizer   int64 `json:"optimizer_bytes"`
	Activations int64 `json:"activations_bytes"`
	Data        int64 `json:"data_bytes"` // the tokenised corpus held in memory
}

// PortableSummary is a Summary that encoding/json can always write: a loss
// that is not finite (no evaluation ran: NaN) is null, and a rate or
// duration that is not finite is 0.
type PortableSummary struct {
	Summary
	FinalLoss     *float64 `json:"final_loss"`
	FinalEvalLoss *float64 `json:"final_eval_loss"`
}

// Portable returns s for JSON output (ternctl train -o json, worker).
func (s *Summary) Portable() PortableSummary {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	opt := func(v float64) *float64 {
		if !finite(v) {
			return nil
		}
		return &v
	}
	out := PortableSummary{Summary: *s, FinalLoss: opt(s.FinalLoss), FinalEvalLoss: opt(s.FinalEvalLoss)}
	for _, v := range []*float64{&out.TokensPerS, &out.StepMSMedian, &out.WallS, &out.ModelGFLOPS} {
		if !finite(*v) {
			*v = 0
		}
	}
	return out
}
