// Package train runs one rank's training loop: it builds the model from the
// job spec, draws microbatches from the data sampler, runs forward and
// backward, clips, steps the optimizer, evaluates and checkpoints, reporting
// progress to an Observer.
//
// Resuming (Options.Resume) continues a checkpoint bit for bit on the
// layout that wrote it. On another data-parallel × pipeline layout with the
// same global batch (parallel.data × batch.microBatches), each rank reshards
// the checkpoint for itself: weights exactly, per-element and per-row
// optimizer state by rows, DeMo's per-replica residuals averaged when the
// replica count changes, the data cursor and step carried over. Optimizer
// state tied to the rows of a differently split vocabulary tensor (low-rank
// projections, block moments) is refused at resume with an error naming the
// optimizer and both layouts. reshard.go gives the rules and their reasons.
package train
