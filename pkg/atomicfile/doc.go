// Package atomicfile writes files so that a reader sees either the old content
// or the new, never a mix, and a crash leaves no half-written file under the
// final name: the bytes go to a temporary file in the same directory, which is
// fsynced, renamed over the target, and the directory fsynced. Checkpoints,
// token caches and exported weights all go through it.
package atomicfile
