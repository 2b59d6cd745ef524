package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ternml/tern/pkg/auth"
	"github.com/ternml/tern/pkg/spec"
	ternv1 "github.com/ternml/tern/proto/tern/v1"
)

// defaultCoordinator is where `coordinator` listens unless told otherwise
// (pkg/coordinator.DefaultListen).
const defaultCoordinator = "127.0.0.1:7070"

// exitConnection ends a cluster command that could not reach, or was
// refused by, the coordinator; `wait` also uses it for usage errors, so that
// 2 can mean "cancelled" there.
const exitConnection = 3

// dialTimeout bounds the probe that tells "nothing listens" apart from a
// slow RPC.
const dialTimeout = 3 * time.Second

// clusterFlags are the flags every command that talks to a coordinator
// shares.
type clusterFlags struct {
	addr string
	// auth holds --tls-ca and --token-file, the credentials connect dials
	// with (pkg/auth); the root command registers them. One per command
	// tree, so that concurrent invocations (tests) share nothing.
	auth auth.ClientFlags
}

// coordinatorDefault is the --coordinator default: $TERN_COORDINATOR, else
// the current context's (contexts.go), else the coordinator's own default.
func coordinatorDefault() string {
	if v := os.Getenv("TERN_COORDINATOR"); v != "" {
		return v
	}
	if v := contextCoordinator(); v != "" {
		return v
	}
	return defaultCoordinator
}

// codedError is an error printed like any other that ends the command
// with its own exit code.
type codedError struct {
	err  error
	code int
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func connectionErr(format string, args ...any) error {
	return &codedError{fmt.Errorf(format, args...), exitConnection}
}

// connect opens a client for the coordinator at addr. gRPC dials lazily
// and would report a missing server as a generic UNAVAILABLE on the first
// call, so connect first checks that something accepts connections there,
// to say plainly what to do when nothing does.
func connect(ctx context.Context, cf *clusterFlags) (ternv1.CoordinatorServiceClient, func(), error) {
	addr := cf.addr
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, nil, connectionErr("--coordinator %q is not host:port: %v", addr, err)
	}
	// Credentials first: a remote coordinator without them is refused
	// before any dial.
	creds, err := cf.auth.Load(addr)
	if err != nil {
		return nil, nil, connectionErr("%v", err)
	}
	d := net.Dialer{Timeout: dialTimeout}
	probe, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, connectionErr("no coordinator at %s: start one with `coordinator` or pass --coordinator (%v)", addr, unwrapOpErr(err))
	}
	probe.Close()
	conn, err := grpc.NewClient(addr, creds.DialOptions()...)
	if err != nil {
		return nil, nil, connectionErr("coordinator at %s: %v", addr, err)
	}
	return ternv1.NewCoordinatorServiceClient(conn), func() { conn.Close() }, nil
}

// unwrapOpErr drops the "dial tcp ADDR:" prefix a net.OpError repeats.
func unwrapOpErr(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// rpcErr turns a failed call into the error ternctl prints: a job spec's
// field problems as spec.Errors (printed one per line), a coordinator that
// is gone or standing by as a connection error (exit 3), anything else as
// its message after what was being done.
func rpcErr(addr, doing string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", doing, err)
	}
	switch st.Code() {
	case codes.InvalidArgument:
		var es spec.Errors
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					es = append(es, &spec.FieldError{Path: v.GetField(), Msg: v.GetDescription()})
				}
			}
		}
		if len(es) > 0 {
			return fmt.Errorf("%s: %w", doing, es)
		}
	case codes.Unavailable:
		return connectionErr("%s: coordinator at %s unavailable: %s", doing, addr, st.Message())
	case codes.Unauthenticated:
		return connectionErr("%s: the coordinator at %s refused the credentials: %s", doing, addr, st.Message())
	case codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%s: %s", doing, st.Message())
	}
	return fmt.Errorf("%s: %s", doing, strings.TrimSpace(st.Message()))
}
