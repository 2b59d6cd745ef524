package spec

// MaxRestartsLimit bounds spec.restartPolicy.maxRestarts (the coordinator's
// job state machine accepts no more).
const MaxRestartsLimit = 10000

// DefaultMaxRestarts is restartPolicy.maxRestarts when the section is
// absent: enough to ride out a worker or two dying during a run, few
// enough that a job failing for a reason a restart cannot fix (a corpus
// that is missing on one worker) fails within minutes rather than looping.
const DefaultMaxRestarts = 3

// RestartPolicySpec is spec.restartPolicy: what the coordinator does when
// a rank fails (its worker dies, is shut down, or the rank reports an
// error). A job that leaves the section out gets the defaults
// (RestartSettings returns them).
type RestartPolicySpec struct {
	MaxRestarts int `json:"maxRestarts" default:"3" desc:"How many times the job is relaunched after a rank fails, over the job's whole life (pauses do not reset it). Each relaunch is a new attempt of every rank, resuming from the latest complete checkpoint in spec.checkpoint.dir, or from step 0 when there is none. When none are left the job fails with the last failure as its reason. 0 fails the job at the first failure."`
	// Shrink, ShrinkTimeoutSeconds and MinData describe elastic data
	// parallelism: a job that loses ranks and gets no replacement in time
	// drops the replicas that lost them and continues at a smaller
	// data-parallel size, growing back when slots return. The global
	// batch stays as the spec says (parallel.data × batch.microBatches
	// microbatches per step): the remaining replicas share it, each
	// training more microbatches, so the learning rate and its schedule
	// keep their meaning and every step trains on the same samples (the
	// sampler numbers them by step). A job therefore shrinks only to a
	// size that divides parallel.data × batch.microBatches. A run is
	// reproducible given the same sequence of layouts; across layouts a
	// step agrees up to float32 summation order.
	// The coordinator's state machine and scheduler decide it
	// (pkg/coordinator/job, sched.Shrink and sched.Grow); every rank of
	// an attempt on a new layout resumes from the durable checkpoint,
	// resharded (pkg/train), so shrink needs spec.checkpoint.dir.
	Shrink               bool `json:"shrink,omitempty" default:"false" desc:"Continue at a smaller data-parallel size when failed ranks cannot be replaced within shrinkTimeoutSeconds, dropping every replica that lost a rank, and grow back to parallel.data when slots return. The global batch is kept: the remaining replicas train more microbatches each, so the job shrinks only to a size that divides parallel.data × batch.microBatches. Every rank of a shrunk or grown job resumes from the durable checkpoint, so it needs spec.checkpoint.dir."`
	ShrinkTimeoutSeconds int  `json:"shrinkTimeoutSeconds,omitempty" default:"derived" desc:"With shrink, how long a recovery waits for replacement ranks before the job shrinks. Default: 60."`
	MinData              int  `json:"minData,omitempty" default:"derived" desc:"With shrink, the smallest number of data-parallel replicas the job may shrink to; below it the job waits for replacements. Default: 1."`
}

// DefaultShrinkTimeoutSeconds is restartPolicy.shrinkTimeoutSeconds when
// it is left out; MaxShrinkTimeoutSeconds bounds it.
const (
	DefaultShrinkTimeoutSeconds = 60
	MaxShrinkTimeoutSeconds     = 3600
)

// RestartSettings returns the job's restart policy, the defaults when the
// section is absent.
func (s *JobSpec) RestartSettings() RestartPolicySpec {
	if s.RestartPolicy != nil {
		return *s.RestartPolicy
	}
	return RestartPolicySpec{MaxRestarts: DefaultMaxRestarts}
}

// restartPolicy validates spec.restartPolicy.
func (v validator) restartPolicy(s *JobSpec) {
	if s.RestartPolicy == nil {
		return
	}
	rp := s.RestartPolicy
	if n := rp.MaxRestarts; n < 0 || n > MaxRestartsLimit {
		v.es.add("spec.restartPolicy.maxRestarts", "%d is out of range: allowed 0 to %d", n, MaxRestartsLimit)
	}
	if n := rp.ShrinkTimeoutSeconds; n < 0 || n > MaxShrinkTimeoutSeconds {
		v.es.add("spec.restartPolicy.shrinkTimeoutSeconds", "%d is out of range: allowed 1 to %d (0 or left out: %d)",
			n, MaxShrinkTimeoutSeconds, DefaultShrinkTimeoutSeconds)
	}
	if n := rp.MinData; n < 0 || (s.Parallel.Data >= 1 && n > s.Parallel.Data) {
		v.es.add("spec.restartPolicy.minData", "%d is out of range: allowed 1 to spec.parallel.data (%d)", n, max(s.Parallel.Data, 1))
	}
	if !rp.Shrink {
		if rp.ShrinkTimeoutSeconds != 0 {
			v.es.add("spec.restartPolicy.shrinkTimeoutSeconds", "applies only with spec.restartPolicy.shrink: true")
		}
		if rp.MinData != 0 {
			v.es.add("spec.restartPolicy.minData", "applies only with spec.restartPolicy.shrink: true")
		}
		return
	}
	if s.Checkpoint.Dir == "" {
		v.es.add("spec.restartPolicy.shrink", "needs spec.checkpoint.dir: a job that shrinks or grows resumes on its new "+
			"data-parallel size from the durable checkpoint (in-memory snapshots restore only on the layout that took them)")
	}
}
