// Command coordinator is tern's control-plane server: it keeps jobs and the
// worker registry in etcd, places the ranks of each job on registered
// workers and follows them until the job ends.
//
//	coordinator [--listen 127.0.0.1:7070] [--data-dir DIR] [--etcd-endpoints URL,...]
//	            [--tls-cert FILE --tls-key FILE --token-file FILE] [--metrics-listen HOST:PORT]
//
// By default it runs a single-member etcd inside itself, with its data in
// --data-dir (default ~/.tern/coordinator; the directory is created, and a
// coordinator started again on it picks up its jobs). With
// --etcd-endpoints it uses an external etcd cluster instead and keeps
// nothing on local disk; several coordinators may share one cluster, one
// leading and the others standing by. It serves ternctl and the workers
// (`worker --coordinator ADDR`) on --listen. A loopback address needs
// nothing more; any other needs TLS and the cluster's join token
// (--tls-cert, --tls-key, --token-file, made by `ternctl certs create`),
// and the token is then checked on every call. With --metrics-listen it
// serves Prometheus metrics on /metrics, and /healthz and /readyz (ready
// while it leads) for probes; off by default. It runs until SIGINT or
// SIGTERM; the jobs' ranks keep running on the workers meanwhile. Logs go
// to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ternml/tern/pkg/auth"
	"github.com/ternml/tern/pkg/coordinator"
	"github.com/ternml/tern/pkg/metrics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "coordinator: ") {
			msg = "coordinator: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", coordinator.DefaultListen, "gRPC address for ternctl and workers; other than loopback, it needs --tls-cert, --tls-key and --token-file")
	dataDir := fs.String("data-dir", "", "directory of the embedded etcd's data (default ~/.tern/coordinator); unused with --etcd-endpoints")
	endpoints := fs.String("etcd-endpoints", "", "client URLs of an external etcd cluster, comma-separated, instead of the embedded one")
	name := fs.String("name", "", "name this coordinator campaigns for leadership under (default: the listen address)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	var sec auth.ServerFlags
	sec.Register(fs)
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus /metrics, /healthz and /readyz on this HTTP address, e.g. 127.0.0.1:9464 (default off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected arguments %q: the coordinator takes only flags", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	srvAuth, err := sec.Load(*listen)
	if err != nil {
		return err
	}
	opts := coordinator.Options{
		Listen: *listen,
		Name:   *name,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		Auth:   srvAuth,
	}
	ranks := metrics.NewRanks()
	if *metricsListen != "" {
		opts.ServerOptions = append(opts.ServerOptions, ranks.ServerOption())
	}
	if *endpoints != "" {
		for _, e := range strings.Split(*endpoints, ",") {
			if e = strings.TrimSpace(e); e != "" {
				opts.EtcdEndpoints = append(opts.EtcdEndpoints, e)
			}
		}
	} else {
		dir := *dataDir
		if dir == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return fmt.Errorf("no --data-dir given and no home directory for the default ~/.tern/coordinator (%v): pass --data-dir", err)
			}
			dir = filepath.Join(home, ".tern", "coordinator")
		}
		opts.DataDir = dir
	}
	c, err := coordinator.New(opts)
	if err != nil {
		return err
	}
	opts.Logger.Info("coordinator starting", "listen", c.Addr(), "data-dir", opts.DataDir, "etcd-endpoints", opts.EtcdEndpoints,
		"tls", srvAuth != nil && srvAuth.TLS != nil, "token", srvAuth != nil && srvAuth.Token != "")
	if *metricsListen == "" {
		return c.Run(ctx)
	}
	return runWithMetrics(ctx, c, ranks, *metricsListen, opts.Logger)
}
