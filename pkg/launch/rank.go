package launch

import (
	"context"
	"fmt"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
)

// RankConfig places one rank of a job whose peers are known in advance.
type RankConfig struct {
	Rank  int
	Peers []string // every rank's address, host:port, indexed by rank
	// Listen is the address to bind; empty means Peers[Rank].
	Listen string
	// Token is the job's shared secret; every rank must be given the same.
	Token string
}

// RunRank trains one data-parallel replica of job: it listens, connects to
// every peer (waiting up to the job's communication timeout for them to
// start), and runs the training loop with them. Cancelling ctx stops every
// replica after the current step.
func RunRank(ctx context.Context, job *spec.TrainingJob, rc RankConfig, opts train.Options) (*train.Summary, error) {
	n := job.Spec.Parallel.Data * job.Spec.Parallel.Pipeline
	if len(rc.Peers) != n {
		return nil, fmt.Errorf("--peers lists %d addresses but spec.parallel asks for %d ranks (data %d × pipeline %d)", len(rc.Peers), n, job.Spec.Parallel.Data, job.Spec.Parallel.Pipeline)
	}
	if rc.Rank < 0 || rc.Rank >= n {
		return nil, fmt.Errorf("--rank %d is out of range [0, %d)", rc.Rank, n)
	}
	addr := rc.Listen
	if addr == "" {
		addr = rc.Peers[rc.Rank]
	}
	tr, err := listen(transportConfig{JobID: job.Metadata.Name, Rank: rc.Rank, World: n, Token: rc.Token, Listen: addr, Timeout: timeoutOf(job)})
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	if err := tr.Connect(ctx, rc.Peers); err != nil {
		return nil, fmt.Errorf("rank %d: connect to peers: %w", rc.Rank, err)
	}
	opts.Group = comm.NewGroup(tr)
	return train.Run(ctx, job, opts)
}
