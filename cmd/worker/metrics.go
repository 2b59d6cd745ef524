package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ternml/tern/pkg/metrics"
	"github.com/ternml/tern/pkg/worker"
)

// runWithMetrics runs the agent and serves its metrics on addr until ctx
// ends or either fails. tern's collectors go into a registry of their
// own; the default one (Go runtime, process) is served alongside.
func runWithMetrics(ctx context.Context, a *worker.Agent, slots int, ranks *metrics.Ranks, addr string, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewWorker(a, slots, ranks))
	srv, err := metrics.Listen(addr, prometheus.Gatherers{reg, prometheus.DefaultGatherer}, nil)
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
			cancel()
		}
		served <- serr
	}()
	err = a.Run(ctx)
	cancel()
	if serr := <-served; err == nil {
		err = serr
	}
	return err
}
