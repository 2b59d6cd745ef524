// Command worker runs ranks of training jobs, in one of two modes.
//
// Agent mode, with a coordinator placing the ranks:
//
//	worker --coordinator 127.0.0.1:7070 [--name NAME] [--slots N] [--host HOST] [--label node=a]...
//	       [--tls-ca FILE --token-file FILE] [--metrics-listen HOST:PORT]
//
// registers with the coordinator as NAME (default: the host name) with N
// slots, runs the ranks the coordinator assigns (each listening on HOST,
// default 127.0.0.1, at a port of its choosing) and reports their
// progress. It reconnects when the coordinator restarts. SIGINT or SIGTERM
// stops its ranks after their current step, reports them and exits. A
// coordinator on another machine needs TLS and the cluster's join token:
// --tls-ca names the CA that signed its certificate and --token-file the
// token (both made by `ternctl certs create`). With --metrics-listen the
// worker serves Prometheus metrics of its ranks on /metrics, and /healthz.
//
// Explicit-peers mode, one rank of a job whose peers are given on the
// command line, for runs across machines without a coordinator:
//
//	worker -f job.yaml --rank 0 --peers hostA:7070,hostB:7070 --token-file token
//
// Every rank gets the same spec, peer list and token; rank i listens on the
// i-th address. On one machine, `ternctl train` starts and connects the
// ranks itself. Progress goes to stderr, the summary as JSON to stdout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ternml/tern/pkg/auth"
	"github.com/ternml/tern/pkg/launch"
	"github.com/ternml/tern/pkg/metrics"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
	"github.com/ternml/tern/pkg/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "worker: ") {
			msg = "worker: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type sets []string

func (s *sets) String() string     { return strings.Join(*s, ",") }
func (s *sets) Set(v string) error { *s = append(*s, v); return nil }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "job spec file (YAML or JSON)")
	rank := fs.Int("rank", -1, "this worker's rank, in [0, world)")
	world := fs.Int("world", 0, "number of ranks (sets spec.parallel.data; default: the spec's)")
	peers := fs.String("peers", "", "every rank's address host:port, comma-separated, in rank order")
	listenAddr := fs.String("listen", "", "address to bind (default: this rank's entry in --peers)")
	tokenFile := fs.String(auth.FlagTokenFile, os.Getenv(auth.EnvTokenFile), "agent mode: file holding the cluster's join token, required unless the coordinator is on loopback; with --peers: file holding the job's shared secret (or set TERN_JOB_TOKEN), required unless every peer is on loopback (env "+auth.EnvTokenFile+")")
	ckpt := fs.String("checkpoint-dir", "", "write checkpoints under DIR (overrides spec.checkpoint.dir)")
	resume := fs.String("resume", "", "resume from a checkpoint directory or one step directory")
	var overrides sets
	fs.Var(&overrides, "set", "override a spec field, e.g. --set optimizer.lr=1e-3 (repeatable)")
	device := fs.String("device", "", "compute on cpu or cuda (sets spec.device.kind; default: the spec's)")
	gpu := fs.Int("gpu", -1, "with --device cuda: the GPU ordinal to use (sets spec.device.gpu; default: the spec's)")
	coord := fs.String("coordinator", "", "agent mode: the coordinator's address host:port; the coordinator assigns the ranks")
	name := fs.String("name", "", "agent mode: this worker's name, unique among the coordinator's workers (default: the host name)")
	slots := fs.Int("slots", 1, "agent mode: how many ranks this worker runs at once")
	host := fs.String("host", worker.DefaultHost, "agent mode: host at which this worker's ranks accept their peers")
	var labels sets
	fs.Var(&labels, "label", "agent mode: a failure-domain label KEY=VALUE for placement, e.g. --label node=a (repeatable)")
	spare := fs.Bool("spare", false, "agent mode: a spare: placement leaves it idle until a rank has to move to it (the label spare=true)")
	caFile := fs.String(auth.FlagTLSCA, os.Getenv(auth.EnvTLSCA), "agent mode: PEM CA certificate to verify the coordinator's TLS certificate with, e.g. DIR/"+auth.CACertFile+" written by ternctl certs create (env "+auth.EnvTLSCA+"); required unless the coordinator is on loopback")
	metricsListen := fs.String("metrics-listen", "", "agent mode: serve Prometheus /metrics and /healthz on this HTTP address, e.g. 127.0.0.1:9465 (default off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *spare {
		labels = append(labels, "spare=true")
	}
	if *coord != "" {
		if *device != "" || *gpu >= 0 {
			return errors.New("--device and --gpu apply to -f/--rank/--peers mode; in agent mode the job's spec.device says where ranks compute")
		}
		if *file != "" || *rank >= 0 || *peers != "" {
			fs.Usage()
			return errors.New("--coordinator (agent mode) and -f/--rank/--peers (explicit peers) exclude each other: the coordinator assigns jobs and ranks")
		}
		creds, err := (&auth.ClientFlags{CAFile: *caFile, TokenFile: *tokenFile}).Load(*coord)
		if err != nil {
			return err
		}
		return runAgent(ctx, agentConfig{coord: *coord, name: *name, slots: *slots, host: *host, labels: labels, auth: creds, metricsListen: *metricsListen}, stderr)
	}
	if *file == "" || *rank < 0 || *peers == "" {
		fs.Usage()
		return errors.New("-f, --rank and --peers are required (or --coordinator, for agent mode)")
	}
	if *world > 0 {
		overrides = append(overrides, fmt.Sprintf("parallel.data=%d", *world))
	}
	if *device != "" {
		overrides = append(overrides, "device.kind="+*device)
	}
	if *gpu >= 0 {
		overrides = append(overrides, fmt.Sprintf("device.gpu=%d", *gpu))
	}
	job, err := spec.Load(*file, overrides)
	if err != nil {
		return err
	}
	token := os.Getenv("TERN_JOB_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	peerList := strings.Split(*peers, ",")
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }
	obs := &stepLogger{logf: logf, rank: *rank}
	sum, err := launch.RunRank(ctx, job, launch.RankConfig{Rank: *rank, Peers: peerList, Listen: *listenAddr, Token: token},
		train.Options{CheckpointDir: *ckpt, Resume: *resume, Observer: obs})
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(sum.Portable())
}

// agentConfig is agent mode's command line.
type agentConfig struct {
	coord, name, host string
	slots             int
	labels            []string
	auth              *auth.Client
	metricsListen     string
}

// runAgent registers with the coordinator and runs what it assigns until
// ctx ends.
func runAgent(ctx context.Context, ac agentConfig, stderr io.Writer) error {
	coord, name, slots, host, labels := ac.coord, ac.name, ac.slots, ac.host, ac.labels
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --name given and no host name to default to (%v): pass --name", err)
		}
		name = h
	}
	lm := map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("--label %q: want KEY=VALUE, e.g. node=a", l)
		}
		lm[k] = v
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ranks := metrics.NewRanks()
	cfg := worker.Config{Coordinator: coord, Name: name, Host: host, Slots: slots, Labels: lm, Logger: log, Auth: ac.auth}
	if ac.metricsListen != "" {
		cfg.Observe = ranks.Observe
	}
	a, err := worker.New(cfg)
	if err != nil {
		return err
	}
	log.Info("worker starting", "coordinator", coord, "name", name, "slots", slots, "host", host,
		"tls", ac.auth != nil && ac.auth.TLS != nil, "token", ac.auth != nil && ac.auth.Token != "")
	if ac.metricsListen == "" {
		return a.Run(ctx)
	}
	return runWithMetrics(ctx, a, slots, ranks, ac.metricsListen, log)
}

// stepLogger writes one line per step.
type stepLogger struct {
	logf func(string, ...any)
	rank int
}

func (l *stepLogger) Started(info train.RunInfo) {
	l.logf("rank %d: job %s, %d params, steps %d..%d", l.rank, info.Job, info.Params, info.StartStep+1, info.Steps)
}

func (l *stepLogger) Step(r train.StepReport) {
	line := fmt.Sprintf("rank %d: step %d/%d loss %.4f lr %.2e %.0f ms sent %d B recv %d B", l.rank, r.Step, r.Steps, r.Loss, r.LR, r.StepMS, r.BytesSent, r.BytesRecv)
	if r.EvalLoss != nil {
		line += fmt.Sprintf(" eval %.4f", *r.EvalLoss)
	}
	l.logf("%s", line)
}

func (l *stepLogger) Log(msg string) { l.logf("rank %d: %s", l.rank, msg) }
