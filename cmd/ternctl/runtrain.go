package main

import (
	"context"
	"errors"
	"io"

	"github.com/ternml/tern/pkg/spec"
	"github.com/ternml/tern/pkg/train"
)

// trainOptions has train.Options' fields in the same order, so the loop is
// linked with a plain conversion: train.Run(ctx, job, train.Options(o)).
type trainOptions struct {
	CheckpointDir string
	Resume        string
	Observer      train.Observer
	Progress      io.Writer
}

// runTraining runs the training loop. It is a variable so tests can
// substitute a loop that reports scripted steps.
var runTraining = func(ctx context.Context, job *spec.TrainingJob, o trainOptions) (*train.Summary, error) {
	return nil, errors.New("this ternctl was built without the training loop")
}
