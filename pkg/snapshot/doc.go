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
//	DIR/step-00000120/rank-00001.safetensors   Face names, optimizer state as
//	...                                        optim.<param>.<slot> (prefixed by
//	                                           the caller where ranks differ)
//	DIR/step-00000120/manifest.json            written last
//
// The manifest names the format version, step, creation time, job name, the
// job spec, data cursor and RNG state (opaque JSON the caller owns), every
// file with its size and CRC32C (Castagnoli), and every tensor with its file,
// dtype, local shape, global shape, the row range [lo, hi) of the first
// dimension it holds, and the CRC32C of its bytes. The row ranges let a job
// resume on a different sharding layout, and let an exporter merge the
// shards of one tensor.
//
// A single process writes one file with Save. A job of several ranks writes
// one file per rank: each rank calls WriteShard, which writes its file and
// returns its entries (a Shard); the shards travel to one rank, which calls
// Commit to write the manifest. The same tensor name may then appear in
// several files, each entry holding other rows of the same global tensor
// (manifest version 2); ranges of one name never overlap. Load returns every
// entry with its row range; LoadSelected reads only the files holding the
// tensors a rank asks for.
//
// Atomicity follows the "metadata written last" rule of PyTorch DCP: tensor
// files are fsynced and renamed into place, then the manifest is written to a
// temporary file, fsynced and renamed, and the directory fsynced. A step
// directory without manifest.json is incomplete and ignored (for a
// multi-rank step: until Commit has seen every rank's shard); one with a
// manifest is complete by construction, so later damage to it is reported
// loudly by Load rather than skipped. Load verifies every file and tensor
// checksum and every shape against the manifest before returning anything:
// nothing is restored unverified.
package snapshot
