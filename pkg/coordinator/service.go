package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ternml/tern/pkg/coordinator/sched"
	"github.com/ternml/tern/pkg/coordinator/store"
	"github.com/ternml/tern/pkg/spec"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// Bounds on a worker's registration.
const (
	maxHostLen    = 253
	maxLabels     = 32
	maxLabelKey   = 63
	maxLabelValue = 253
)

// service is the gRPC boundary: it checks requests, hands them to the loop
// (or reads the published views) and turns errors into status codes
// (statusOf). It holds no state of its own.
type service struct {
	ternv1.UnimplementedCoordinatorServiceServer
	c *Coordinator
}

// leading returns the loop, or ErrStandby naming the leader.
func (s *service) leading(ctx context.Context) (*loop, error) {
	if l := s.c.loop.Load(); l != nil {
		return l, nil
	}
	msg := "this coordinator is standing by"
	if st := s.c.st.Load(); st != nil {
		if info, err := st.Leader(ctx); err == nil {
			msg += "; the leader is " + info.Name
		} else {
			msg += "; no leader is elected yet"
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrStandby, msg)
}

func (s *service) ApplyJob(ctx context.Context, req *ternv1.ApplyJobRequest) (*ternv1.ApplyJobResponse, error) {
	l, err := s.leading(ctx)
	if err != nil {
		return nil, statusOf(err)
	}
	ts, js, err := parseSpec(req.Spec, req.Set)
	if err != nil {
		return nil, statusOf(err)
	}
	reply := make(chan applyResult, 1)
	res, err := call(ctx, l, &applyReq{spec: ts, specJSON: js, reply: reply}, reply)
	if err == nil {
		err = res.err
	}
	if err != nil {
		return nil, statusOf(err)
	}
	return &ternv1.ApplyJobResponse{Job: res.job, Created: res.created}, nil
}

// parseSpec reads and checks an applied document and returns it resolved,
// with its canonical encoding.
func parseSpec(doc []byte, sets []string) (*spec.TrainingJob, []byte, error) {
	switch {
	case len(doc) == 0:
		return nil, nil, fmt.Errorf("%w: the request carries no job spec", ErrInvalid)
	case len(doc) > maxSpecBytes:
		return nil, nil, fmt.Errorf("%w: the job spec is %d bytes; at most %d are accepted", ErrInvalid, len(doc), maxSpecBytes)
	}
	ts, err := spec.Parse(doc, sets)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: job spec: %w", ErrInvalid, err)
	}
	// The workers run elsewhere, in other directories: a relative path
	// could only be resolved against the client's, which the client must
	// do (ternctl resolves paths in a job file against the file).
	var errs spec.Errors
	for _, f := range []struct{ path, val string }{
		{"spec.data.path", ts.Spec.Data.Path},
		{"spec.data.cacheDir", ts.Spec.Data.CacheDir},
		{"spec.checkpoint.dir", ts.Spec.Checkpoint.Dir},
	} {
		if f.val != "" && !filepath.IsAbs(f.val) {
			errs = append(errs, &spec.FieldError{Path: f.path, Msg: fmt.Sprintf("%q is a relative path, which workers cannot resolve; give an absolute path", f.val)})
		}
	}
	if len(errs) > 0 {
		return nil, nil, fmt.Errorf("%w: job spec: %w", ErrInvalid, errs)
	}
	js := ts.CanonicalJSON()
	if js == nil {
		return nil, nil, fmt.Errorf("%w: job spec cannot be encoded", ErrInvalid)
	}
	return ts, js, nil
}

func (s *service) GetJob(ctx context.Context, req *ternv1.GetJobRequest) (*ternv1.GetJobResponse, error) {
	if _, err := s.leading(ctx); err != nil {
		return nil, statusOf(err)
	}
	j, _ := s.c.views.job(req.Name)
	if j == nil {
		return nil, statusOf(notFound(req.Name))
	}
	return &ternv1.GetJobResponse{Job: j}, nil
}

func notFound(name string) error {
	if name == "" {
		return fmt.Errorf("%w: no job name given", ErrInvalid)
	}
	return fmt.Errorf("%w: no job named %q", ErrNotFound, name)
}

func (s *service) ListJobs(ctx context.Context, _ *ternv1.ListJobsRequest) (*ternv1.ListJobsResponse, error) {
	if _, err := s.leading(ctx); err != nil {
		return nil, statusOf(err)
	}
	return &ternv1.ListJobsResponse{Jobs: s.c.views.jobList()}, nil
}

func (s *service) CancelJob(ctx context.Context, req *ternv1.CancelJobRequest) (*ternv1.CancelJobResponse, error) {
	l, err := s.leading(ctx)
	if err != nil {
		return nil, statusOf(err)
	}
	if req.Name == "" {
		return nil, statusOf(notFound(""))
	}
	reply := make(chan jobResult, 1)
	res, err := call(ctx, l, &cancelReq{name: req.Name, reply: reply}, reply)
	if err == nil {
		err = res.err
	}
	if err != nil {
		return nil, statusOf(err)
	}
	return &ternv1.CancelJobResponse{Job: res.job}, nil
}

func (s *service) PauseJob(ctx context.Context, req *ternv1.PauseJobRequest) (*ternv1.PauseJobResponse, error) {
	res, err := s.jobVerb(ctx, req.Name, func(reply chan jobResult) input { return &pauseReq{name: req.Name, reply: reply} })
	if err != nil {
		return nil, err
	}
	return &ternv1.PauseJobResponse{Job: res}, nil
}

func (s *service) ResumeJob(ctx context.Context, req *ternv1.ResumeJobRequest) (*ternv1.ResumeJobResponse, error) {
	res, err := s.jobVerb(ctx, req.Name, func(reply chan jobResult) input { return &resumeReq{name: req.Name, reply: reply} })
	if err != nil {
		return nil, err
	}
	return &ternv1.ResumeJobResponse{Job: res}, nil
}

// jobVerb hands a user's verb on a named job to the loop and returns the
// job's status after it, or the error as a status.
func (s *service) jobVerb(ctx context.Context, name string, req func(chan jobResult) input) (*ternv1.Job, error) {
	l, err := s.leading(ctx)
	if err != nil {
		return nil, statusOf(err)
	}
	if name == "" {
		return nil, statusOf(notFound(""))
	}
	reply := make(chan jobResult, 1)
	res, err := call(ctx, l, req(reply), reply)
	if err == nil {
		err = res.err
	}
	if err != nil {
		return nil, statusOf(err)
	}
	return res.job, nil
}

func (s *service) DeleteJob(ctx context.Context, req *ternv1.DeleteJobRequest) (*ternv1.DeleteJobResponse, error) {
	l, err := s.leading(ctx)
	if err != nil {
		return nil, statusOf(err)
	}
	if req.Name == "" {
		return nil, statusOf(notFound(""))
	}
	reply := make(chan jobResult, 1)
	res, err := call(ctx, l, &deleteReq{name: req.Name, reply: reply}, reply)
	if err == nil {
		err = res.err
	}
	if err != nil {
		return nil, statusOf(err)
	}
	return &ternv1.DeleteJobResponse{}, nil
}

func (s *service) WatchJob(req *ternv1.WatchJobRequest, stream ternv1.CoordinatorService_WatchJobServer) error {
	ctx := stream.Context()
	if _, err := s.leading(ctx); err != nil {
		return statusOf(err)
	}
	var last *ternv1.Job
	for {
		j, changed := s.c.views.job(req.Name)
		switch {
		case j == nil && last == nil:
			return statusOf(notFound(req.Name))
		case j == nil:
			return status.Errorf(codes.NotFound, "job %q was deleted", req.Name)
		case j != last:
			if err := stream.Send(&ternv1.WatchJobResponse{Job: j}); err != nil {
				return err
			}
			if Terminal(j.Phase) {
				return nil
			}
			last = j
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return statusOf(ctx.Err())
		}
	}
}

func (s *service) ListWorkers(ctx context.Context, _ *ternv1.ListWorkersRequest) (*ternv1.ListWorkersResponse, error) {
	if _, err := s.leading(ctx); err != nil {
		return nil, statusOf(err)
	}
	return &ternv1.ListWorkersResponse{Workers: s.c.views.workerList()}, nil
}

func (s *service) RegisterWorker(ctx context.Context, req *ternv1.RegisterWorkerRequest) (*ternv1.RegisterWorkerResponse, error) {
	l, err := s.leading(ctx)
	if err != nil {
		return nil, statusOf(err)
	}
	info, err := checkRegistration(req)
	if err != nil {
		return nil, statusOf(err)
	}
	reply := make(chan registerResult, 1)
	res, err := call(ctx, l, &registerReq{name: req.Name, info: info, reply: reply}, reply)
	if err == nil {
		err = res.err
	}
	if err != nil {
		return nil, statusOf(err)
	}
	return &ternv1.RegisterWorkerResponse{
		SessionId:         res.session,
		HeartbeatInterval: durationpb.New(s.c.opts.HeartbeatInterval),
		LeaseTtl:          durationpb.New(s.c.opts.LeaseTTL),
	}, nil
}

// checkRegistration bounds everything a worker declares. The name is
// checked by the store, which knows the key syntax.
func checkRegistration(req *ternv1.RegisterWorkerRequest) (workerInfo, error) {
	bad := func(format string, a ...any) (workerInfo, error) {
		return workerInfo{}, fmt.Errorf("%w: register worker %q: %s", ErrInvalid, req.Name, fmt.Sprintf(format, a...))
	}
	h := req.Host
	if h == "" || len(h) > maxHostLen || strings.ContainsAny(h, " /\t\n[]") {
		return bad("host %q: want a host name or IP address of at most %d characters, without a port", h, maxHostLen)
	}
	if _, _, err := net.SplitHostPort(net.JoinHostPort(h, "0")); err != nil {
		return bad("host %q: %v", h, err)
	}
	if req.Slots < 1 || req.Slots > sched.MaxSlotsPerWorker {
		return bad("%d slots: allowed 1 to %d", req.Slots, sched.MaxSlotsPerWorker)
	}
	if len(req.Labels) > maxLabels {
		return bad("%d labels: at most %d", len(req.Labels), maxLabels)
	}
	for k, v := range req.Labels {
		if k == "" || len(k) > maxLabelKey || len(v) > maxLabelValue {
			return bad("label %q=%q: keys are 1 to %d characters, values at most %d", k, v, maxLabelKey, maxLabelValue)
		}
	}
	if req.Pid < 0 {
		return bad("pid %d is negative", req.Pid)
	}
	return workerInfo{Host: h, Slots: int(req.Slots), Labels: req.Labels, Pid: int(req.Pid)}, nil
}

// Session serves one worker's control stream: it attaches the session to
// the loop, sends the loop's orders from the session's outbox, and passes
// heartbeats (renewing the worker's lease) and rank reports on.
func (s *service) Session(stream ternv1.CoordinatorService_SessionServer) error {
	ctx := stream.Context()
	l, err := s.leading(ctx)
	if err != nil {
		return statusOf(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return statusOf(fmt.Errorf("%w: a session starts with a hello, got %T", ErrInvalid, first.Msg))
	}
	sctx, end := context.WithCancelCause(ctx)
	defer end(nil)
	sess := &session{worker: hello.Worker, out: make(chan *ternv1.SessionResponse, outboxLen), end: end}
	sess.heard(time.Now())
	reply := make(chan attachResult, 1)
	res, err := call(ctx, l, &attachReq{worker: hello.Worker, session: hello.SessionId, s: sess, reply: reply}, reply)
	if err == nil {
		err = res.err
	}
	if err != nil {
		return statusOf(err)
	}
	defer func() {
		// A stream cancelled under the handler (the worker's connection
		// dropped or it reset the stream) is broken, whichever of the
		// handler and the receiver noticed first.
		cause := context.Cause(sctx)
		if ctx.Err() != nil && !errors.As(cause, new(brokenStream)) {
			cause = brokenStream{ctx.Err()}
		}
		l.post(context.WithoutCancel(ctx), detached{worker: hello.Worker, s: sess, cause: cause})
	}()
	accepted := &ternv1.SessionResponse{Msg: &ternv1.SessionResponse_Accepted{Accepted: &ternv1.SessionAccepted{
		HeartbeatInterval: durationpb.New(s.c.opts.HeartbeatInterval),
	}}}
	if err := stream.Send(accepted); err != nil {
		return err
	}
	// Receive on a goroutine of its own, so that ending the session (a
	// newer one replaced it, the outbox overflowed) ends the handler even
	// while the worker is silent. It exits once the handler returns.
	go s.receive(sctx, l, stream, sess, res, end)
	for {
		select {
		case msg := <-sess.out:
			if err := stream.Send(msg); err != nil {
				end(brokenStream{err})
				return err
			}
		case <-sctx.Done():
			cause := context.Cause(sctx)
			if errors.Is(cause, io.EOF) || errors.Is(cause, context.Canceled) || status.Code(cause) == codes.Canceled {
				return nil // the worker closed the stream, or went away
			}
			return statusOf(cause)
		}
	}
}

// receive reads a worker's messages until the stream ends, then ends the
// session with the reason.
func (s *service) receive(ctx context.Context, l *loop, stream ternv1.CoordinatorService_SessionServer, sess *session, att attachResult, end context.CancelCauseFunc) {
	worker := sess.worker
	// Acknowledging a renewal is what tells the worker it is still in
	// contact: a worker that hears nothing for a lease TTL stops its
	// ranks, and while a job runs the coordinator has nothing else to say.
	ack := &ternv1.SessionResponse{Msg: &ternv1.SessionResponse_Accepted{Accepted: &ternv1.SessionAccepted{
		HeartbeatInterval: durationpb.New(s.c.opts.HeartbeatInterval),
	}}}
	for {
		msg, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				err = brokenStream{err}
			}
			end(err)
			return
		}
		sess.heard(time.Now())
		switch m := msg.Msg.(type) {
		case *ternv1.SessionRequest_Heartbeat:
			renewed, err := renew(ctx, att)
			if err != nil {
				end(err)
				return
			}
			if renewed {
				sess.offer(ack)
			}
		case *ternv1.SessionRequest_Report:
			if m.Report == nil || m.Report.Job == "" {
				end(fmt.Errorf("%w: worker %q sent a rank report without a job", ErrInvalid, worker))
				return
			}
			if l.post(ctx, report{worker: worker, r: m.Report}) != nil {
				return
			}
		case *ternv1.SessionRequest_Logs:
			if err := s.storeLogs(m.Logs); err != nil {
				end(fmt.Errorf("worker %q: %w", worker, err))
				return
			}
		default:
			end(fmt.Errorf("%w: worker %q sent %T after its hello", ErrInvalid, worker, msg.Msg))
			return
		}
	}
}

// renew refreshes the worker's lease on a heartbeat and reports whether
// it did. A lease that is gone ends the session (the worker registers
// again); etcd being slow does not.
func renew(ctx context.Context, att attachResult) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	err := att.lease.Refresh(rctx)
	if errors.Is(err, store.ErrLeaseExpired) {
		return false, err
	}
	return err == nil, nil
}
