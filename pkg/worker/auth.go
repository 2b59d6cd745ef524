package worker

import (
	"fmt"
	"net"

	"google.golang.org/grpc"
)

// checkCoordinator allows a remote coordinator only with TLS and the join
// token: the session carries job tokens and specs.
func (c *Config) checkCoordinator() error {
	if c.Auth == nil || c.Auth.TLS == nil || c.Auth.Token == "" {
		return checkLoopback(c.Coordinator)
	}
	if _, _, err := net.SplitHostPort(c.Coordinator); err != nil {
		return fmt.Errorf("worker: coordinator address %q: %w (want host:port, e.g. 127.0.0.1:7070)", c.Coordinator, err)
	}
	return nil
}

// dialOptions are the connection's options: its credentials.
func (a *Agent) dialOptions() []grpc.DialOption {
	return a.cfg.Auth.DialOptions()
}
