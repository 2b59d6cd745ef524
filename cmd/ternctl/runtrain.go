package main

import "github.com/ternml/tern/pkg/train"

// runTraining runs the training loop. It is a variable so tests can
// substitute a loop that reports scripted steps.
var runTraining = train.Run
