// Package data turns text into the token windows a training step consumes.
//
// It has three parts:
//
//   - Tokenizers (NewTokenizer): "byte" (256 ids, lossless on any bytes),
//     "gpt2"/"r50k_base" (50257 ids) and "cl100k_base" (100277 ids). The BPE
//     ranks are embedded in the binary, so nothing is fetched at run time.
//   - Corpora (Source, Load): a directory tree of text files (by default the
//     Go source tree, which every machine with Go has), a JSON-lines file, or
//     a pre-tokenised token file. Text corpora are tokenised once into a
//     cache in the token file format and split into training and validation
//     streams by a hash of each document's path, so the split is stable as
//     files come and go.
//   - Sampling (Sampler): the windows of step s for DP rank r are a pure
//     function of (seed, s, r, ...), drawn without replacement within an
//     epoch through a keyed Feistel permutation. The resumable state is just
//     the step, carried in a Cursor that also fingerprints the data so a
//     resume against other data is refused.
//
// Typical use on one rank:
//
//	tok, _ := data.NewTokenizer(spec.Data.Tokenizer)
//	ds, err := data.Load(ctx, spec.Data, tok, os.Stderr)
//	s, err := data.NewSampler(ds.Train, seqLen, seed)
//	err = s.Batch(step, dpRank, dpSize, micro, microBatches, B, inputs, targets)
package data
