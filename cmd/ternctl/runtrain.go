package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ternml/tern/pkg/launch"
	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
)

// runTraining runs the training loop in this process. It is a variable so
// tests can substitute a loop that reports scripted steps.
var runTraining = train.Run

// rankCommand is the hidden command a launched worker process runs.
const rankCommand = "rank"

// runJob trains in this process, or, with several data-parallel replicas,
// in that many worker processes started from this binary.
func runJob(ctx context.Context, e *env, job *spec.TrainingJob, opts train.Options) (*train.Summary, error) {
	if job.Spec.Parallel.Data*job.Spec.Parallel.Pipeline <= 1 {
		return runTraining(ctx, job, opts)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this program to start the workers: %w", err)
	}
	return launch.Run(ctx, job, opts, launch.Options{Exe: exe, Args: []string{rankCommand}, Stderr: e.stderr})
}

// newRankCmd is the worker side of a local multi-process run: it speaks the
// launch protocol on stdin and stdout. Users do not run it.
func newRankCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:    rankCommand,
		Short:  "Run one rank of a multi-process job (started by ternctl train)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := e.stdin
			if in == nil {
				in = io.Reader(os.Stdin)
			}
			if err := launch.Child(cmd.Context(), in, e.stdout, e.stderr); err != nil {
				// Already reported to the launcher, which prints it once.
				return &exitCodeError{exitError}
			}
			return nil
		},
	}
}
