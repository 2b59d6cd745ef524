package data

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/ternml/tern/pkg/atomicfile"
)

// Token file format (version 1), all integers little-endian:
//
//	offset size field
//	0      8    magic "TERNTOKS"
//	8      2    version = 1
//	10     2    bytes per token: 1 (uint8), 2 (uint16) or 4 (uint32)
//	12     4    vocab size; every token id is < vocab
//	16     8    token count n
//	24     4    flags; bit 0: the CRC field is valid
//	28     4    CRC32C (Castagnoli) of the n*width token bytes
//	32     n*w  tokens
//
// The header is fixed-size so a reader can check the file length against the
// count before reading tokens. The CRC is optional (flag bit 0) so that other
// tools can write the format without a CRC32C implementation; tern always
// writes it, which lets the loader detect a damaged cache and rebuild it.
const (
	tokenFileMagic      = "TERNTOKS"
	tokenFileVersion    = 1
	tokenFileHeaderSize = 32
	tokenFileFlagCRC    = 1
	maxVocab            = math.MaxInt32 // ids are int32
)

// ErrCorruptTokenFile marks a token file whose header or contents are
// invalid (as opposed to one that could not be read at all).
var ErrCorruptTokenFile = errors.New("corrupt token file")

// EncodeTokenFile writes t in the token file format.
func EncodeTokenFile(w io.Writer, t Tokens) error {
	var h [tokenFileHeaderSize]byte
	copy(h[0:8], tokenFileMagic)
	binary.LittleEndian.PutUint16(h[8:], tokenFileVersion)
	width := t.width
	if width == 0 {
		width = TokenWidth(t.vocab)
	}
	binary.LittleEndian.PutUint16(h[10:], uint16(width))
	binary.LittleEndian.PutUint32(h[12:], uint32(t.vocab))
	binary.LittleEndian.PutUint64(h[16:], uint64(t.Len()))
	binary.LittleEndian.PutUint32(h[24:], tokenFileFlagCRC)
	binary.LittleEndian.PutUint32(h[28:], t.Checksum())
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(t.data)
	return err
}

// WriteTokenFile writes t to path atomically: a reader sees either the old
// file or the complete new one, never a partial write.
func WriteTokenFile(path string, t Tokens) error {
	if t.vocab < 1 {
		return fmt.Errorf("write token file %s: vocab size %d must be >= 1", path, t.vocab)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create directory for %s: %w", path, err)
	}
	return atomicfile.Write(path, 0o644, func(w io.Writer) error { return EncodeTokenFile(w, t) })
}

// ReadTokenFile reads and fully validates a token file: header, length
// against the count, CRC when recorded, and every id against the vocabulary.
func ReadTokenFile(path string) (Tokens, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Tokens{}, fmt.Errorf("read token file: %w", err)
	}
	t, err := DecodeTokenFile(b)
	if err != nil {
		return Tokens{}, fmt.Errorf("token file %s: %w", path, err)
	}
	return t, nil
}

// DecodeTokenFile parses a token file held in memory. The returned Tokens
// share storage with b.
func DecodeTokenFile(b []byte) (Tokens, error) {
	corrupt := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrCorruptTokenFile, fmt.Sprintf(format, args...))
	}
	if len(b) < tokenFileHeaderSize {
		return Tokens{}, corrupt("truncated header: %d bytes, need %d", len(b), tokenFileHeaderSize)
	}
	if string(b[0:8]) != tokenFileMagic {
		return Tokens{}, corrupt("bad magic %q, want %q", b[0:8], tokenFileMagic)
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != tokenFileVersion {
		return Tokens{}, corrupt("unsupported version %d (supported: %d)", v, tokenFileVersion)
	}
	width := int(binary.LittleEndian.Uint16(b[10:]))
	if width != 1 && width != 2 && width != 4 {
		return Tokens{}, corrupt("bytes per token %d (allowed: 1, 2, 4)", width)
	}
	vocab := int64(binary.LittleEndian.Uint32(b[12:]))
	if vocab < 1 || vocab > maxVocab {
		return Tokens{}, corrupt("vocab size %d out of range [1, %d]", vocab, int64(maxVocab))
	}
	if width < 4 && vocab > int64(1)<<(8*width) {
		return Tokens{}, corrupt("vocab size %d does not fit in %d-byte tokens", vocab, width)
	}
	count := binary.LittleEndian.Uint64(b[16:])
	flags := binary.LittleEndian.Uint32(b[24:])
	payload := b[tokenFileHeaderSize:]
	if count > uint64(len(payload))/uint64(width) {
		return Tokens{}, corrupt("truncated: header says %d tokens (%d bytes) but only %d bytes follow the header",
			count, count*uint64(width), len(payload))
	}
	if uint64(len(payload)) != count*uint64(width) {
		return Tokens{}, corrupt("count mismatch: header says %d tokens (%d bytes) but %d bytes follow the header",
			count, count*uint64(width), len(payload))
	}
	if flags&^tokenFileFlagCRC != 0 {
		return Tokens{}, corrupt("unknown flags %#x", flags)
	}
	if flags&tokenFileFlagCRC != 0 {
		want := binary.LittleEndian.Uint32(b[28:])
		if got := crc32.Checksum(payload, castagnoli); got != want {
			return Tokens{}, corrupt("checksum mismatch: header CRC32C %08x, tokens %08x", want, got)
		}
	}
	t := Tokens{data: payload, width: width, vocab: int(vocab)}
	if i, id, ok := firstOutOfVocab(t); !ok {
		return Tokens{}, corrupt("token %d has id %d >= vocab size %d", i, id, vocab)
	}
	return t, nil
}

// firstOutOfVocab scans for an id >= vocab; widths 1 and 2 cannot hold a
// negative id, and a 4-byte id above MaxInt32 counts as out of range.
func firstOutOfVocab(t Tokens) (int, int64, bool) {
	n := t.Len()
	switch t.width {
	case 1:
		if t.vocab >= 256 {
			return 0, 0, true
		}
		for i, v := range t.data {
			if int(v) >= t.vocab {
				return i, int64(v), false
			}
		}
	case 2:
		if t.vocab >= 1<<16 {
			return 0, 0, true
		}
		for i := 0; i < n; i++ {
			if v := binary.LittleEndian.Uint16(t.data[2*i:]); int(v) >= t.vocab {
				return i, int64(v), false
			}
		}
	default:
		for i := 0; i < n; i++ {
			if v := binary.LittleEndian.Uint32(t.data[4*i:]); int64(v) >= int64(t.vocab) {
				return i, int64(v), false
			}
		}
	}
	return 0, 0, true
}
