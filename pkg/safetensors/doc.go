// Package safetensors reads and writes the safetensors file format, the tensor
// container that Hugging Face tools load, and the per-rank payload of tern's
// durable checkpoints (pkg/snapshot).
//
// A file is an 8-byte little-endian header length N, N bytes of JSON header
// mapping each tensor name to {dtype, shape, data_offsets: [begin, end]} plus an
// optional "__metadata__" object of string values, then the data buffer. The
// offsets are relative to the start of the buffer. The format is specified at
// https://github.com/huggingface/safetensors.
//
// Writing streams: the header is computed from the tensor list first, then each
// tensor's bytes are copied to the io.Writer, so a file is never assembled in
// memory. WriteFile is atomic (temporary file, fsync, rename, fsync of the
// directory), so a crash leaves either the old file or the new one.
//
// Reading validates the whole header before any tensor is handed out: header
// length bounds, JSON syntax, duplicate names, known dtypes, shape versus byte
// range (with overflow checks), offsets inside the buffer, and a buffer covered
// exactly once with no holes or overlaps, as the reference implementation
// requires. Every rejection wraps ErrInvalid and names the tensor or field at
// fault; malformed input never panics. Open reads through an io.ReaderAt so a
// large file is not loaded whole; Parse works on bytes already in memory.
package safetensors
