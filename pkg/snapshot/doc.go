// Package snapshot serialises a rank's training state and keeps it safe,
// in three layers (research/fault-tolerance.md §8.1):
//
//   - L0, a local in-memory copy of each rank's whole state, staged
//     between steps (Stager), for a crashed trainer;
//   - L1, Reed-Solomon fragments of that copy held in peers' memory on
//     other workers (Encode, Decode, Holder, PeerService), for lost
//     workers, committed by the coordinator (Tracker, PeerManifest);
//   - L3, durable checkpoints on disk (Save, WriteShard, Commit, Load),
//     for losing more than the peers tolerate.
//
// # In-memory snapshots
//
// A rank's state (RankState: named float32 tensors plus the trainer's
// scalars as JSON) is serialised by MarshalState into one byte shard S
// with a CRC32C (Castagnoli) per tensor and on the header. S is the
// local copy. For the peer layer it is cut into k data fragments plus
// m−1 parity fragments (klauspost/reedsolomon, one reused encoder per
// code), each with a header (job, step, rank, index, k, m, sizes, CRCs),
// and sent to k+m−1 other workers: any m lost workers leave every rank
// its local copy or at least k fragments, and each snapshot sends
// (k+m−1)/k·S. Place chooses the holders (pure: never the rank's own
// worker, distinct failure domains from the labels where possible, least
// loaded), and derives k when the job does not set it.
//
// The commit protocol (commit.go) is a pure state machine in the style of
// etcd's raft, tested by scripts under testdata/commit: ranks report a
// staged step with its fragment CRCs; the coordinator commits the step,
// with the PeerManifest (placement and CRCs, about 100 bytes per rank),
// only once every rank of the current epoch reported it; every rank and
// holder keeps two generations, the committed one and one newer, until
// the newer commits; a lost rank abandons every uncommitted step and all
// roll back to the committed one. Restore pulls k fragments at once from
// the holders over the job's transport, replaces any missing or corrupt
// one by another holder's, and decodes; with more than tolerated lost it
// returns ErrUnrecoverable and the caller falls back to L3.
//
// Memory per rank of state S: the local generations, up to 2·(k+m−1)/k·S
// (the parity lives in the staged buffer), plus what its worker holds
// for others, about 2·(k+m−1)/k·S̄ under the balanced placement: 4.5·S
// for k=8, m=2 and equal states (research §10 targets 4.25·S, which
// keeping the parity out of the local copy's allocation would reach).
// Encoding and sending run on the Stager's own goroutines; with
// StageAsync the copy does too, overlapping the next step's forward and
// backward passes, and the trainer waits for it only before its next
// optimizer update.
//
// # Durable checkpoints
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
// tensors a rank asks for. A reader on another layout takes any row range
// of a tensor, whatever shards hold it, with AssembleRows; pkg/train resumes
// a job on another data-parallel × pipeline layout this way, and pkg/hf
// gathers whole tensors for export with it.
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
