// Package train runs one rank's training loop: it builds the model from the
// job spec, draws microbatches from the data sampler, runs forward and
// backward, clips, steps the optimizer, evaluates and checkpoints, reporting
// progress to an Observer.
package train
