// Package snapshot serialises a rank's training state and keeps it safe.
//
// This file set implements the durable layer (L3 in
// research/fault-tolerance.md §8.1): checkpoints on disk in tern's single
// checkpoint format, which later layers (in-memory copies, erasure-coded
// fragments on peers) and a multi-rank job reuse.
//
// Layout of a checkpoint root DIR:
//
//	DIR/step-00000120/rank-00000.safetensors   tensors: weights under their Hugging
//	                                           Face names, optimizer state as
//	                                           optim.<param>.<slot>
//	DIR/step-00000120/manifest.json            written last
//
// The manifest names the format version, step, creation time, job name, the
// job spec, data cursor and RNG state (opaque JSON the caller owns), every
// file with its size and CRC32C (Castagnoli), and every tensor with its file,
// dtype, local shape, global shape, the row range [lo, hi) of the first
// dimension it holds, and the CRC32C of its bytes. The row ranges let a job
// resume on a different sharding layout.
//
// Atomicity follows the "metadata written last" rule of PyTorch DCP: tensor
// files are fsynced and renamed into place, then the manifest is written to a
// temporary file, fsynced and renamed, and the directory fsynced. A step
// directory without manifest.json is incomplete and ignored; one with a
// manifest is complete by construction, so later damage to it is reported
// loudly by Load rather than skipped. Load verifies every file and tensor
// checksum and every shape against the manifest before returning anything:
// nothing is restored unverified.
package snapshot
