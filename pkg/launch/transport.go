package launch

import (
	"context"
	"fmt"
	"time"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/spec"
)

// transportConfig is what a rank needs to join its peers.
type transportConfig struct {
	JobID       string
	Rank, World int
	Token       string
	Listen      string // address to bind, host:port (port 0: any)
	Timeout     time.Duration
}

// peerTransport is a transport that is listening and can then connect.
type peerTransport interface {
	comm.Transport
	Addr() string
	Connect(ctx context.Context, peers []string) error
}

func timeoutOf(job *spec.TrainingJob) time.Duration {
	return time.Duration(job.Spec.Communication.TimeoutSeconds * float64(time.Second))
}

// listen binds this rank's gRPC endpoint; Connect then joins the peers.
func listen(c transportConfig) (peerTransport, error) {
	t, err := comm.ListenGRPC(comm.GRPCOptions{
		Addr: c.Listen, JobID: c.JobID, Rank: c.Rank, World: c.World, Token: c.Token, Timeout: c.Timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("rank %d: listen on %s: %w", c.Rank, c.Listen, err)
	}
	return t, nil
}
