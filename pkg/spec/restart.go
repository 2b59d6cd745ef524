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
}

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
	if n := s.RestartPolicy.MaxRestarts; n < 0 || n > MaxRestartsLimit {
		v.es.add("spec.restartPolicy.maxRestarts", "%d is out of range: allowed 0 to %d", n, MaxRestartsLimit)
	}
}
