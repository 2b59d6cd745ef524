package coordinator

import (
	"fmt"
	"net"

	"google.golang.org/grpc"
)

// checkListen allows any address to a coordinator secured with TLS and
// the join token, and loopback only to one that is not.
func (o *Options) checkListen() error {
	if !o.Auth.Secure() {
		return checkLoopback(o.Listen)
	}
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		return fmt.Errorf("coordinator: listen address %q: %w (want host:port, e.g. %s)", o.Listen, err, DefaultListen)
	}
	return nil
}

// serverOptions are the gRPC server's options: authentication first, so
// that nothing else sees a call without the token.
func (c *Coordinator) serverOptions() []grpc.ServerOption {
	return append(c.opts.Auth.ServerOptions(), c.opts.ServerOptions...)
}
