//go:build race

package optim

// raceEnabled reports that the race detector is on: the training-threshold
// tests, which exercise no concurrency the other tests do not, run only in
// the plain pass of make test, where they take seconds instead of minutes.
const raceEnabled = true
