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

// RunRank trains one rank of job (a data-parallel replica, or one pipeline
// stage of one): it listens, connects to every peer (waiting up to the
// job's communication timeout for them to start), and runs the training
// loop with them. Cancelling ctx stops every replica after the current
// step.
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
	r, err := ListenRank(job, rc.Rank, addr, rc.Token)
	if err != nil {
		return nil, err
	}
	return r.Run(ctx, rc.Peers, opts)
}

// Rank is one rank of a job that binds its endpoint before it learns where
// its peers are: a control plane starts every rank, collects the addresses
// they report (Addr), and then hands each the full list (Run). This is
// RunRank split in its two phases, for peers whose ports are chosen at
// start rather than known in advance.
type Rank struct {
	job  *spec.TrainingJob
	rank int
	tr   peerTransport
}

// ListenRank binds the peer endpoint of rank (in [0, data×pipeline)) of
// job at addr, host:port; port 0 picks a free port. Every rank of the
// job must be given the same token. Call Run, or Close to give up.
func ListenRank(job *spec.TrainingJob, rank int, addr, token string) (*Rank, error) {
	n := job.Spec.Parallel.Data * job.Spec.Parallel.Pipeline
	if rank < 0 || rank >= n {
		return nil, fmt.Errorf("rank %d is out of range [0, %d) (data %d × pipeline %d)", rank, n, job.Spec.Parallel.Data, job.Spec.Parallel.Pipeline)
	}
	tr, err := listen(transportConfig{JobID: job.Metadata.Name, Rank: rank, World: n, Token: token, Listen: addr, Timeout: timeoutOf(job)})
	if err != nil {
		return nil, err
	}
	return &Rank{job: job, rank: rank, tr: tr}, nil
}

// Addr is the bound address, host:port, that the peers must be given.
func (r *Rank) Addr() string { return r.tr.Addr() }

// Run connects to every peer (peers holds every rank's address, indexed by
// rank; waiting up to the job's communication timeout for them) and trains
// with them, as RunRank does. The endpoint is closed when Run returns.
func (r *Rank) Run(ctx context.Context, peers []string, opts train.Options) (*train.Summary, error) {
	defer r.tr.Close()
	if _, err := r.Connect(ctx, peers); err != nil {
		return nil, err
	}
	return r.Train(ctx, opts)
}

// Connect is Run's first half: it connects to every peer and returns the
// transport, which the caller may use alongside training (tags of its
// own kind, e.g. comm.KindSnapshot) until Close. Train then trains.
func (r *Rank) Connect(ctx context.Context, peers []string) (comm.Transport, error) {
	if err := r.tr.Connect(ctx, peers); err != nil {
		return nil, fmt.Errorf("rank %d: connect to peers: %w", r.rank, err)
	}
	return r.tr, nil
}

// Train is Run's second half, after Connect. The endpoint stays open
// until Close.
func (r *Rank) Train(ctx context.Context, opts train.Options) (*train.Summary, error) {
	opts.Group = comm.NewGroup(r.tr)
	return train.Run(ctx, r.job, opts)
}

// Close releases the endpoint of a rank that will not Run. It is safe to
// call after Run.
func (r *Rank) Close() error { return r.tr.Close() }
