package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTP server limits: scrapes are small and quick, and slow clients must
// not hold connections open.
const (
	readHeaderTimeout = 10 * time.Second
	shutdownTimeout   = 5 * time.Second
)

// Handler serves:
//
//	GET /metrics  g in the Prometheus text (or OpenMetrics) format
//	GET /healthz  200 "ok" while the process runs (liveness)
//	GET /readyz   200 "ok" when ready returns nil, else 503 and its error
//	              (readiness; always 200 when ready is nil)
func Handler(g prometheus.Gatherer, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Server serves Handler on a bound address.
type Server struct {
	lis net.Listener
	srv *http.Server
}

// Listen binds addr (host:port; port 0 picks one) for Handler(g, ready).
func Listen(addr string, g prometheus.Gatherer, ready func() error) (*Server, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("metrics address %q: %v (want host:port, e.g. 127.0.0.1:9464)", addr, err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return &Server{lis: lis, srv: &http.Server{Handler: Handler(g, ready), ReadHeaderTimeout: readHeaderTimeout}}, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Serve serves until ctx ends, then shuts down, letting scrapes in
// flight finish for a few seconds. It returns nil after ctx ended.
func (s *Server) Serve(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(s.lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("metrics: serve on %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("metrics: shut down: %w", err)
	}
	return nil
}
