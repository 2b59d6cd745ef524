package coordinator

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ternml/tern/pkg/coordinator/job"
	"github.com/ternml/tern/pkg/coordinator/store"
	"github.com/ternml/tern/pkg/spec"
)

// Errors the coordinator's operations wrap. The gRPC boundary (statusOf)
// turns each into its status code; nothing else in the package knows about
// codes.
var (
	// ErrInvalid: the request itself is wrong (a job spec with problems, a
	// malformed name, a worker with no slots).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: no job of that name.
	ErrNotFound = errors.New("not found")
	// ErrExists: the job name is taken by a different spec.
	ErrExists = errors.New("already exists")
	// ErrPhase: the verb is not allowed in the job's phase (cancelling a
	// job that is over, deleting one that is not).
	ErrPhase = errors.New("not allowed in the job's phase")
	// ErrUnknownSession: a worker's session id is not its current
	// registration (it expired, or the worker registered again): the
	// worker must register again.
	ErrUnknownSession = errors.New("unknown worker session")
	// ErrStandby: this coordinator does not lead; another one does, or
	// none yet.
	ErrStandby = errors.New("standing by")
)

// statusOf maps an error from the coordinator's operations to the gRPC
// status a client sees. A job spec's field problems travel as a BadRequest
// detail as well as in the message, one per line.
func statusOf(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return st.Err() // already a status, from the transport
	}
	var code codes.Code
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, store.ErrInvalid), errors.Is(err, job.ErrInvalidSpec):
		code = codes.InvalidArgument
	case errors.Is(err, ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, ErrPhase), errors.Is(err, ErrUnknownSession), errors.Is(err, store.ErrLeaseExpired):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrStandby), errors.Is(err, store.ErrNotLeader):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		code = codes.Internal
	}
	st := status.New(code, err.Error())
	var fields spec.Errors
	if errors.As(err, &fields) {
		br := &errdetails.BadRequest{}
		for _, f := range fields {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: f.Path, Description: f.Msg})
		}
		if d, derr := st.WithDetails(br); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// oneLine shortens a message from the wire for logs and events.
func oneLine(s string, limit int) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", "; ")
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}
