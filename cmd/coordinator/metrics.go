package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ternml/tern/pkg/coordinator"
	"github.com/ternml/tern/pkg/metrics"
)

// errStandby is /readyz's answer while the coordinator does not lead, so
// that a load balancer sends clients to the leader.
var errStandby = errors.New("standing by: another coordinator leads")

// runWithMetrics runs c and serves its metrics on addr until ctx ends or
// either fails. tern's collectors go into a registry of their own; the
// default registry, where the Go runtime, the process and the embedded
// etcd register theirs, is served alongside.
func runWithMetrics(ctx context.Context, c *coordinator.Coordinator, ranks *metrics.Ranks, addr string, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCoordinator(c, ranks))
	srv, err := metrics.Listen(addr, prometheus.Gatherers{reg, prometheus.DefaultGatherer}, func() error {
		if !c.Leading() {
			return errStandby
		}
		return nil
	})
	if err != nil {
		return err
	}
	log.Info("serving metrics", "addr", "http://"+srv.Addr()+"/metrics")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		serr := srv.Serve(ctx)
		if serr != nil {
			cancel() // a coordinator nobody can scrape stops rather than run unobserved
		}
		served <- serr
	}()
	err = c.Run(ctx)
	cancel()
	if serr := <-served; err == nil {
		err = serr
	}
	return err
}
