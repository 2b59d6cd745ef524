// Package optim holds tern's optimizers, learning-rate schedules and gradient
// clipping. Optimizers see parameters as model.Param values (weights, gradients
// and a role) and route by role, never by name matching. Every optimizer
// reports its exact state size and exports/imports its state as named tensors
// so checkpoints can store it.
package optim
