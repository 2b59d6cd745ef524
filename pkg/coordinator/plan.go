package coordinator

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ternml/tern/pkg/coordinator/sched"
	"github.com/ternml/tern/pkg/snapshot"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// PlanJob answers what `ternctl plan -f` computes locally (train.Plan: the
// memory of one worker process and its bytes on the wire per step) and
// whether the registered workers could take the job now. It is a read: the
// placement is the scheduler's answer over the loop's current registry,
// and nothing is kept.
func (s *service) PlanJob(ctx context.Context, req *ternv1.PlanJobRequest) (*ternv1.PlanJobResponse, error) {
	l, err := s.leading(ctx)
	if err != nil {
		return nil, statusOf(err)
	}
	ts, _, err := parseSpec(req.Spec, req.Set)
	if err != nil {
		return nil, statusOf(err)
	}
	p, err := train.Plan(ts)
	if err != nil {
		return nil, statusOf(fmt.Errorf("%w: plan job %q: %w", ErrInvalid, ts.Metadata.Name, err))
	}
	pj, err := json.Marshal(p)
	if err != nil {
		return nil, statusOf(fmt.Errorf("encode plan of job %q: %w", ts.Metadata.Name, err))
	}
	layout := sched.Layout{DP: max(ts.Spec.Parallel.Data, 1), PP: max(ts.Spec.Parallel.Pipeline, 1)}
	reply := make(chan planResult, 1)
	res, err := call(ctx, l, &planReq{layout: layout, reply: reply}, reply)
	if err != nil {
		return nil, statusOf(err)
	}
	resp := res.resp
	resp.PlanJson = pj
	resp.TotalBytes = p.Total
	resp.ExchangeSentBytes, resp.ExchangeRecvBytes = p.ExchangeSent, p.ExchangeRecv
	resp.Ranks = int32(layout.World())
	snapshotCosts(resp, res, ts.Spec.SnapshotSettings(), p.Weights+p.OptimizerState)
	return resp, nil
}

// snapshotCosts fills in the in-memory snapshot lines for a job whose
// largest rank's state is stateBytes, from the placement the scheduler
// would make: k is spec.snapshot.dataShards, or min(8, other workers −
// tolerate + 1) as without failure-domain labels (snapshot.Place may pick
// a smaller k where racks are labelled).
func snapshotCosts(resp *ternv1.PlanJobResponse, res planResult, ss spec.SnapshotSpec, stateBytes int64) {
	if !resp.Placeable || res.workers < 2 || ss.EverySteps == 0 {
		return
	}
	code := snapshot.Code{K: ss.DataShards, M: max(ss.Tolerate, 1)}
	if code.K == 0 {
		code.K = max(min(8, res.workers-1-code.M+1), 1)
	}
	resp.SnapshotCode = code.String()
	resp.SnapshotLocalBytes = int64(res.ranksPerWorker) * code.LocalBytes(stateBytes)
	if ss.PeerEverySteps > 0 {
		resp.SnapshotHeldBytes = code.HeldBytes(stateBytes, res.ranksPerWorker)
		resp.SnapshotSendBytes = code.PeerSendBytes(stateBytes)
	}
}

// planReq asks the loop whether layout could be placed now.
type planReq struct {
	layout sched.Layout
	reply  chan planResult
}

// planResult is the loop's answer: the response's cluster fields, and the
// placement's shape (workers used, most ranks on one of them).
type planResult struct {
	resp                    *ternv1.PlanJobResponse
	workers, ranksPerWorker int
}

// planPlacement runs the scheduler over the current registry without
// placing anything.
func (l *loop) planPlacement(r *planReq) {
	c := l.cluster()
	resp := &ternv1.PlanJobResponse{Workers: int32(len(c.Workers))}
	for _, w := range c.Workers {
		free := int32(max(w.Slots-len(w.Used), 0))
		if w.Spare {
			resp.FreeSpareSlots += free
		} else {
			resp.FreeSlots += free
		}
	}
	res := planResult{resp: resp}
	asg, err := sched.Place(c, r.layout)
	if err != nil {
		resp.Placement = err.Error()
	} else {
		resp.Placeable, resp.Placement = true, asg.String()
		per := map[string]int{}
		for _, p := range asg {
			per[p.Worker]++
		}
		res.workers = len(per)
		for _, n := range per {
			res.ranksPerWorker = max(res.ranksPerWorker, n)
		}
	}
	r.reply <- res
}
