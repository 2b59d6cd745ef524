// Package metrics exposes tern's Prometheus metrics: the coordinator's
// jobs and workers, and each worker's ranks.
//
// The figures come from the ranks' reports (proto RankReport): a Ranks
// keeps, per job and rank, the latest step, loss, throughput and step time,
// a histogram of step times and the bytes put on and taken off the wire,
// summed over steps. Reports arrive more than once (a worker replays its
// ranks' latest state to every new session, a new attempt restarts the
// count), so Ranks counts each step of an attempt once.
//
// The coordinator feeds a Ranks from the Session streams through a gRPC
// interceptor (Ranks.ServerOption), and a collector made by NewCoordinator
// reads its jobs and workers at scrape time; a worker feeds its Ranks from
// worker.Config.Observe, and NewWorker reads them. Each process registers
// these into a registry of its own (prometheus.NewRegistry) and serves it,
// together with the default registry, where the Go runtime, the process
// and, in the coordinator, the embedded etcd register theirs, with Serve:
//
//	ranks := metrics.NewRanks()
//	opts.ServerOptions = append(opts.ServerOptions, ranks.ServerOption())
//	c, err := coordinator.New(opts)
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(metrics.NewCoordinator(c, ranks))
//	srv, err := metrics.Listen("127.0.0.1:9464", prometheus.Gatherers{reg, prometheus.DefaultGatherer}, ready)
//	go srv.Serve(ctx) // GET /metrics, /healthz, /readyz (ready() == nil)
//
// Every tern metric is named tern_*; NewCoordinator and NewWorker list
// theirs.
package metrics
