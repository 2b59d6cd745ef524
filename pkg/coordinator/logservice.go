package coordinator

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Pacing of GetLogs with follow.
const (
	// logsBatch bounds the lines in one GetLogsResponse.
	logsBatch = 500
	// logsKeepAlive is how often a follower is sent an empty batch while
	// nothing new comes, and how often it checks whether the attempt
	// ended even if nothing else wakes it.
	logsKeepAlive = 5 * time.Second
)

// storeLogs keeps lines a worker shipped. Lines of a job that is gone, or
// of an attempt it has not launched, are dropped; a message out of bounds
// ends the session (the worker is broken).
func (s *service) storeLogs(m *ternv1.RankLogs) error {
	if m == nil || m.Job == "" {
		return fmt.Errorf("%w: logs without a job", ErrInvalid)
	}
	if len(m.Lines) > maxLogLinesPerMsg {
		return fmt.Errorf("%w: %d log lines in one message, at most %d", ErrInvalid, len(m.Lines), maxLogLinesPerMsg)
	}
	if m.Rank < 0 || m.Rank >= maxLogRanks || m.Attempt < 1 {
		return fmt.Errorf("%w: logs of job %s attempt %d rank %d: attempts count from 1, ranks from 0 to %d", ErrInvalid, m.Job, m.Attempt, m.Rank, maxLogRanks-1)
	}
	j, _ := s.c.views.job(m.Job)
	if j == nil || m.Attempt > j.Attempt || m.Rank >= j.DataParallel*j.PipelineParallel {
		return nil
	}
	if err := s.c.logs.append(m.Job, int(m.Attempt), int(m.Rank), m.Lines); err != nil {
		s.c.opts.Logger.Warn("logs not stored", "job", m.Job, "attempt", m.Attempt, "rank", m.Rank, "err", err)
	}
	return nil
}

// live reports whether a job's phase may still produce logs for its
// current attempt.
func live(p ternv1.JobPhase) bool {
	switch p {
	case ternv1.JobPhase_JOB_PHASE_SCHEDULING, ternv1.JobPhase_JOB_PHASE_RUNNING, ternv1.JobPhase_JOB_PHASE_RECOVERING:
		return true
	}
	return false
}

func (s *service) GetLogs(req *ternv1.GetLogsRequest, stream ternv1.CoordinatorService_GetLogsServer) error {
	ctx := stream.Context()
	if _, err := s.leading(ctx); err != nil {
		return statusOf(err)
	}
	if req.Attempt < 0 || req.Tail < 0 {
		return statusOf(fmt.Errorf("%w: attempt %d, tail %d: neither may be negative", ErrInvalid, req.Attempt, req.Tail))
	}
	j, changed := s.c.views.job(req.Name)
	if j == nil {
		return statusOf(notFound(req.Name))
	}
	attempt := req.Attempt
	if attempt > j.Attempt {
		return statusOf(fmt.Errorf("%w: job %q has no attempt %d (the latest is %d)", ErrNotFound, req.Name, attempt, j.Attempt))
	}
	// Following a job that has not launched yet waits for its first
	// attempt, as `kubectl logs -f` waits for a pod's container.
	for attempt == 0 && j.Attempt == 0 {
		if !req.Follow || !live(j.Phase) && j.Phase != ternv1.JobPhase_JOB_PHASE_PENDING {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return statusOf(ctx.Err())
		}
		if j, changed = s.c.views.job(req.Name); j == nil {
			return status.Errorf(codes.NotFound, "job %q was deleted", req.Name)
		}
	}
	if attempt == 0 {
		attempt = j.Attempt
	}
	world := int(j.DataParallel * j.PipelineParallel)
	ranks := make([]int, 0, world)
	if req.Rank != nil {
		if *req.Rank < 0 || int(*req.Rank) >= world {
			return statusOf(fmt.Errorf("%w: job %q has ranks 0 to %d, not %d", ErrInvalid, req.Name, world-1, *req.Rank))
		}
		ranks = append(ranks, int(*req.Rank))
	} else {
		for r := range world {
			ranks = append(ranks, r)
		}
	}
	var since time.Time
	if req.Since != nil {
		since = req.Since.AsTime()
	}
	offsets := make([]int64, len(ranks))
	// read collects what each rank added since the last read.
	read := func(first bool) ([]*ternv1.LogLine, error) {
		per := make([][]*ternv1.LogLine, len(ranks))
		for i, r := range ranks {
			ls, next, err := s.c.logs.read(req.Name, int(attempt), r, offsets[i])
			if err != nil {
				return nil, err
			}
			offsets[i] = next
			if first {
				ls = tailLines(ls, req.Tail, since)
			} else {
				ls = tailLines(ls, 0, since)
			}
			per[i] = ls
		}
		return mergeLines(per), nil
	}
	send := func(lines []*ternv1.LogLine) error {
		for len(lines) > 0 {
			n := min(len(lines), logsBatch)
			if err := stream.Send(&ternv1.GetLogsResponse{Lines: lines[:n]}); err != nil {
				return err
			}
			lines = lines[n:]
		}
		return nil
	}
	lines, err := read(true)
	if err != nil {
		return statusOf(err)
	}
	if err := send(lines); err != nil || !req.Follow {
		return err
	}
	tick := time.NewTicker(logsKeepAlive)
	defer tick.Stop()
	for {
		more := s.c.logs.wait()
		j, changed := s.c.views.job(req.Name)
		over := j == nil || j.Attempt != attempt || !live(j.Phase)
		lines, err := read(false)
		if err != nil {
			return statusOf(err)
		}
		if err := send(lines); err != nil {
			return err
		}
		if over {
			// The attempt ended: its ranks' last lines were shipped with
			// (or just before) the reports that ended it.
			return nil
		}
		select {
		case <-more:
		case <-changed:
		case <-tick.C:
			if len(lines) == 0 {
				if err := stream.Send(&ternv1.GetLogsResponse{}); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return statusOf(ctx.Err())
		}
	}
}

func (s *service) GetJobMetrics(ctx context.Context, req *ternv1.GetJobMetricsRequest) (*ternv1.GetJobMetricsResponse, error) {
	if _, err := s.leading(ctx); err != nil {
		return nil, statusOf(err)
	}
	if j, _ := s.c.views.job(req.Name); j == nil {
		return nil, statusOf(notFound(req.Name))
	}
	ms, err := s.c.logs.metricsAfter(req.Name, req.AfterStep)
	if err != nil {
		return nil, statusOf(err)
	}
	return &ternv1.GetJobMetricsResponse{Points: ms}, nil
}
