package launch

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/ternml/tern/pkg/comm"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
)

// Child runs one rank under a launcher: it reads its configuration from in,
// reports its address, waits for the peer list, trains, and writes its
// reports to out, one JSON object per line. It returns the training error,
// which it has also reported.
func Child(ctx context.Context, in io.Reader, out, stderr io.Writer) error {
	w := &lineWriter{enc: json.NewEncoder(out)}
	err := child(ctx, in, w, stderr)
	if err != nil {
		w.send(fromChild{Error: err.Error()})
	}
	return err
}

func child(ctx context.Context, in io.Reader, w *lineWriter, stderr io.Writer) error {
	lines := bufio.NewScanner(in)
	lines.Buffer(make([]byte, 64<<10), 64<<20)
	var first toChild
	if err := readLine(lines, &first); err != nil || first.Config == nil {
		return fmt.Errorf("launch: read configuration from the launcher: %v", errOr(err, "no config line"))
	}
	cfg := first.Config
	job, err := spec.Parse(cfg.Job, nil)
	if err != nil {
		return fmt.Errorf("launch: job from the launcher: %w", err)
	}
	tr, err := listen(transportConfig{
		JobID: job.Metadata.Name, Rank: cfg.Rank, World: cfg.World, Token: cfg.Token,
		Listen: "127.0.0.1:0", Timeout: timeoutOf(job),
	})
	if err != nil {
		return err
	}
	defer tr.Close()
	w.send(fromChild{Listening: tr.Addr()})

	var peers toChild
	if err := readLine(lines, &peers); err != nil || len(peers.Peers) != cfg.World {
		return fmt.Errorf("launch: read the peer list from the launcher: %v", errOr(err, fmt.Sprintf("%d addresses for %d ranks", len(peers.Peers), cfg.World)))
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	err = tr.Connect(cctx, peers.Peers)
	cancel()
	if err != nil {
		return fmt.Errorf("rank %d: connect to peers: %w", cfg.Rank, err)
	}

	// A stop line, or the launcher going away (EOF), ends the run after
	// the current step; the replicas agree on which step through the step
	// result they exchange.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		defer stop()
		for {
			var m toChild
			if err := readLine(lines, &m); err != nil || m.Stop {
				return
			}
		}
	}()

	var progress io.Writer = io.Discard
	if cfg.Progress {
		progress = stderr
	}
	sum, err := train.Run(runCtx, job, train.Options{
		CheckpointDir: cfg.CheckpointDir, Resume: cfg.Resume,
		Observer: reporter{w}, Progress: progress, Group: comm.NewGroup(tr),
	})
	if err != nil {
		return err
	}
	sum.PeakRSSBytes = train.PeakRSS()
	w.send(fromChild{Summary: &summaryLine{Summary: *sum, FinalLoss: jsonFloat(sum.FinalLoss), FinalEvalLoss: jsonFloat(sum.FinalEvalLoss)}})
	return nil
}

func errOr(err error, msg string) string {
	if err != nil {
		return err.Error()
	}
	return msg
}

// readLine decodes the next line of in into v.
func readLine(in *bufio.Scanner, v any) error {
	if !in.Scan() {
		if err := in.Err(); err != nil {
			return err
		}
		return io.EOF
	}
	return json.Unmarshal(in.Bytes(), v)
}

// lineWriter serialises reports from the training goroutine and the
// error path onto out.
type lineWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
	err error
}

func (w *lineWriter) send(m fromChild) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	if err := w.enc.Encode(m); err != nil {
		// Say so rather than go quiet: the launcher fails the run.
		w.err = err
		_ = w.enc.Encode(fromChild{Error: fmt.Sprintf("report to the launcher: %v", err)})
	}
}

// reporter forwards a rank's progress to the launcher.
type reporter struct{ w *lineWriter }

func (r reporter) Started(info train.RunInfo) { r.w.send(fromChild{Started: &info}) }
func (r reporter) Log(msg string)             { r.w.send(fromChild{Log: msg}) }
func (r reporter) Step(s train.StepReport) {
	r.w.send(fromChild{Step: &stepLine{StepReport: s, Loss: jsonFloat(s.Loss), GradNorm: jsonFloat(s.GradNorm), Steps: s.Steps, ETA: s.ETASeconds, PeakRSS: train.PeakRSS()}})
}
