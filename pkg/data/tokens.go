package data

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Tokens is a read-only array of token ids stored little-endian in the
// narrowest width that holds the vocabulary: 1 byte when vocab <= 256, 2 when
// <= 65536, else 4. The Go source tree is ~105 M byte tokens; one byte each
// keeps it at 105 MB in memory instead of 420 MB as []int32.
type Tokens struct {
	data  []byte // len = n*width, little-endian
	width int    // bytes per token: 1, 2 or 4
	vocab int
}

// TokenWidth is the number of bytes per token the token file and Tokens use
// for a vocabulary of the given size.
func TokenWidth(vocab int) int {
	switch {
	case vocab <= 1<<8:
		return 1
	case vocab <= 1<<16:
		return 2
	default:
		return 4
	}
}

// NewTokens packs ids into a Tokens array; every id must lie in [0, vocab).
func NewTokens(ids []int32, vocab int) (Tokens, error) {
	if vocab < 1 || int64(vocab) > maxVocab {
		return Tokens{}, fmt.Errorf("vocab size %d out of range [1, %d]", vocab, int64(maxVocab))
	}
	b := newTokenBuilder(vocab)
	if err := b.append(ids); err != nil {
		return Tokens{}, err
	}
	return b.tokens(), nil
}

// Len is the number of tokens.
func (t Tokens) Len() int {
	if t.width == 0 {
		return 0
	}
	return len(t.data) / t.width
}

// Vocab is the vocabulary size the ids were checked against.
func (t Tokens) Vocab() int { return t.vocab }

// At returns token i; i must be in [0, Len()).
func (t Tokens) At(i int) int32 {
	switch t.width {
	case 1:
		return int32(t.data[i])
	case 2:
		return int32(binary.LittleEndian.Uint16(t.data[2*i:]))
	default:
		return int32(binary.LittleEndian.Uint32(t.data[4*i:]))
	}
}

// Window copies tokens [start, start+len(dst)) into dst.
func (t Tokens) Window(start int, dst []int32) {
	switch t.width {
	case 1:
		src := t.data[start : start+len(dst)]
		for i, v := range src {
			dst[i] = int32(v)
		}
	case 2:
		src := t.data[2*start : 2*(start+len(dst))]
		for i := range dst {
			dst[i] = int32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	default:
		src := t.data[4*start : 4*(start+len(dst))]
		for i := range dst {
			dst[i] = int32(binary.LittleEndian.Uint32(src[4*i:]))
		}
	}
}

// Slice returns tokens [lo, hi) sharing storage with t.
func (t Tokens) Slice(lo, hi int) Tokens {
	return Tokens{data: t.data[lo*t.width : hi*t.width], width: t.width, vocab: t.vocab}
}

// Ints returns a copy of all ids; meant for tests and small arrays.
func (t Tokens) Ints() []int32 {
	out := make([]int32, t.Len())
	t.Window(0, out)
	return out
}

// Checksum is the CRC32C (Castagnoli) of the little-endian token bytes; it is
// what the token file header records and what fingerprints a dataset.
func (t Tokens) Checksum() uint32 { return crc32.Checksum(t.data, castagnoli) }

// tokenBuilder appends ids in the packed form of Tokens, checking each id
// against the vocabulary as it goes.
type tokenBuilder struct {
	buf   []byte
	width int
	vocab int
}

func newTokenBuilder(vocab int) *tokenBuilder {
	return &tokenBuilder{width: TokenWidth(vocab), vocab: vocab}
}

func (b *tokenBuilder) len() int { return len(b.buf) / b.width }

func (b *tokenBuilder) append(ids []int32) error {
	for i, id := range ids {
		if id < 0 || int(id) >= b.vocab {
			return fmt.Errorf("token %d (id %d) out of range: ids must be in [0, %d)", b.len()+i, id, b.vocab)
		}
	}
	switch b.width {
	case 1:
		for _, id := range ids {
			b.buf = append(b.buf, byte(id))
		}
	case 2:
		for _, id := range ids {
			b.buf = binary.LittleEndian.AppendUint16(b.buf, uint16(id))
		}
	default:
		for _, id := range ids {
			b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(id))
		}
	}
	return nil
}

// appendBytes is the byte tokenizer's fast path: bytes are their own ids.
func (b *tokenBuilder) appendBytes(p []byte) {
	if b.width == 1 {
		b.buf = append(b.buf, p...)
		return
	}
	for _, c := range p {
		switch b.width {
		case 2:
			b.buf = binary.LittleEndian.AppendUint16(b.buf, uint16(c))
		default:
			b.buf = binary.LittleEndian.AppendUint32(b.buf, uint32(c))
		}
	}
}

func (b *tokenBuilder) tokens() Tokens {
	return Tokens{data: b.buf, width: b.width, vocab: b.vocab}
}
