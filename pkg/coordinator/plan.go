package coordinator

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/ternml/tern/pkg/coordinator/sched"
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
	reply := make(chan *ternv1.PlanJobResponse, 1)
	resp, err := call(ctx, l, &planReq{layout: layout, reply: reply}, reply)
	if err != nil {
		return nil, statusOf(err)
	}
	resp.PlanJson = pj
	resp.TotalBytes = p.Total
	resp.ExchangeSentBytes, resp.ExchangeRecvBytes = p.ExchangeSent, p.ExchangeRecv
	resp.Ranks = int32(layout.World())
	return resp, nil
}

// planReq asks the loop whether layout could be placed now.
type planReq struct {
	layout sched.Layout
	reply  chan *ternv1.PlanJobResponse
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
	asg, err := sched.Place(c, r.layout)
	if err != nil {
		resp.Placement = err.Error()
	} else {
		resp.Placeable, resp.Placement = true, asg.String()
	}
	r.reply <- resp
}
