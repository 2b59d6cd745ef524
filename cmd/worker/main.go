// Command worker runs one rank of a data-parallel training job whose peers
// are given on the command line, for runs across machines:
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
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ternml/tern/pkg/launch"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "worker: %v\n", err)
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
	tokenFile := fs.String("token-file", "", "file holding the job's shared secret (or set TERN_JOB_TOKEN); required unless every peer is on loopback")
	ckpt := fs.String("checkpoint-dir", "", "write checkpoints under DIR (overrides spec.checkpoint.dir)")
	resume := fs.String("resume", "", "resume from a checkpoint directory or one step directory")
	var overrides sets
	fs.Var(&overrides, "set", "override a spec field, e.g. --set optimizer.lr=1e-3 (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || *rank < 0 || *peers == "" {
		fs.Usage()
		return errors.New("-f, --rank and --peers are required")
	}
	if *world > 0 {
		overrides = append(overrides, fmt.Sprintf("parallel.data=%d", *world))
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
	return json.NewEncoder(stdout).Encode(sum)
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
